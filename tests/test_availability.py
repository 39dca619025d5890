"""The service stays available under real use (issue 13, "Availability and resources").

Each test reproduces one finding on a real app on loopback (SQLite job store, jobs run in the
server process — ``cluster=False`` — unless a cluster is the point):

- requests never wait behind running jobs (the jobs compute on threads of their own, the
  requests' database and file work on a pool of its own);
- a grid's size is checked by arithmetic before any value is built;
- every limit (symbols, grid, columns) is checked at submit, before any data is touched;
- a job listing never reads a job's spec or summary; a job's details are not in its row;
- a CSV export streams off the event loop;
- finished jobs can be deleted with their results, and retention prunes old ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiohttp.test_utils import TestClient

from gpu_backtest.core import artifacts
from gpu_backtest.core.config import Settings
from gpu_backtest.core.errors import SpecError
from gpu_backtest.core.jobstore import JobBrief, JobStore
from gpu_backtest.core.spec import expand_grid, grid_bound
from gpu_backtest.plugins.manager import get_strategy
from gpu_backtest.web import keys as K
from gpu_backtest.web.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_tiingo import FakeTiingo

pytestmark = pytest.mark.asyncio

FINAL = ("succeeded", "failed", "cancelled")
SWEEP = {"strategy": "sma_crossover", "symbols": ["SYN002", "SYN003"],
         "params": {"fast": [5, 10, 20], "slow": [50, 100]}, "output": {"top_k": 2}}


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {"GPU_BACKTEST_DATA_DIR": str(tmp), "GPU_BACKTEST_BACKEND": "cpu", "GPU_SERVER_HOST": "127.0.0.1",
            "GPU_SERVER_DEBUG": "false", **extra}


async def _client(aiohttp_client: Any, tmp: Path, **extra: str) -> TestClient:  # type: ignore[type-arg]
    app = create_app(Settings.from_env(_env(tmp, **extra)), cluster=False, shutdown_grace_s=1.0)
    return await aiohttp_client(app)


async def _wait(client: TestClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:  # type: ignore[type-arg]
    async with asyncio.timeout(timeout):
        while True:
            resp = await client.get(f"/backtest/{job_id}")
            doc = await resp.json()
            if doc["status"] in FINAL:
                return doc
            await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- finding 1


async def test_requests_never_wait_behind_running_jobs(aiohttp_client: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten jobs (MAX_CONCURRENT_JOBS) all stalled on a slow data source: listing, polling,
    submitting and /health still answer while every one of them is running. (The jobs got
    threads of their own in commit 4ef4842; the requests' work now has its own pool too.)"""
    with FakeTiingo() as fake:
        fake.delay = 8.0
        monkeypatch.setenv("TIINGO_API_KEY", fake.token)  # what the Tiingo plugin reads
        monkeypatch.setenv("TIINGO_API_URL", fake.url)
        client = await _client(aiohttp_client, tmp_path, MAX_CONCURRENT_JOBS="10", TIINGO_API_KEY=fake.token,
                               TIINGO_API_URL=fake.url)
        ids = []
        for i in range(10):
            resp = await client.post("/backtest", json={"strategy": "sma_crossover", "source": "tiingo",
                                                        "symbols": [f"T{i:02d}"], "start": "2015-01-02",
                                                        "end": "2015-06-30", "params": {"fast": 5, "slow": 20}})
            assert resp.status == 202, await resp.text()
            ids.append((await resp.json())["job_id"])
        async with asyncio.timeout(30):  # all ten running (each waits on the fake source)
            while client.app[K.JOBS].running_count() < 10:
                await asyncio.sleep(0.05)
        async with asyncio.timeout(5):  # a guard: these never queue behind the jobs
            assert (await client.get("/health")).status == 200
            assert (await client.get("/backtest?limit=20")).status == 200
            assert (await client.get(f"/backtest/{ids[0]}")).status == 200
            resp = await client.post("/backtest", json=SWEEP)
            assert resp.status == 202
        assert client.app[K.JOBS].running_count() == 10  # the answers came while all ten still ran
        for job_id in ids:
            await client.delete(f"/backtest/{job_id}")


# --------------------------------------------------------------------------- finding 2


async def test_grid_size_is_checked_by_arithmetic_before_building() -> None:
    """Two parameters of a million values each: refused without building either list."""
    strategy = get_strategy("sma_crossover")
    params = {"fast": {"start": 1, "stop": 1_000_000}, "slow": {"start": 2, "stop": 999_999}}
    assert grid_bound(strategy, params) == 1_000_000 * 999_998
    tracemalloc.start()
    try:
        with pytest.raises(SpecError) as err:
            expand_grid(strategy, params, 100_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.path == "params" and "limit is 100000" in err.value.reason
    assert peak < 1_000_000, f"{peak} bytes allocated: the grid was built before its size was checked"


async def test_huge_grid_is_a_422_and_health_answers(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    big = {"strategy": "sma_crossover", "symbols": ["SYN001"],
           "params": {"fast": {"start": 1, "stop": 1_000_000}, "slow": {"start": 1, "stop": 1_000_000}}}
    resp = await client.post("/backtest", json=big)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"]["field"] == "params"
    assert (await client.get("/health")).status == 200


# --------------------------------------------------------------------------- finding 3


async def test_limits_are_checked_at_submit_before_any_data(aiohttp_client: Any, tmp_path: Path) -> None:
    """Over the column or symbol limit: a 422 at submit, nothing queued, no market data written."""
    client = await _client(aiohttp_client, tmp_path, GPU_BACKTEST_MAX_COLUMNS="100", GPU_BACKTEST_MAX_SYMBOLS="5")
    data = client.app[K.DATA]
    before = await asyncio.to_thread(data.store.count, None)
    cols = {"strategy": "sma_crossover", "symbols": [f"SYN{i:03d}" for i in range(5)],
            "params": {"fast": {"start": 2, "stop": 22}, "slow": [50, 60]}}  # 5 × 42 = 210 columns
    resp = await client.post("/backtest", json=cols)
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["details"]["field"] == "params" and "210 columns" in err["message"]
    syms = {"strategy": "sma_crossover", "symbols": [f"SYN{i:03d}" for i in range(6)],
            "params": {"fast": 5, "slow": 20}}
    resp = await client.post("/backtest", json=syms)
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert err["details"]["field"] == "symbols" and "GPU_BACKTEST_MAX_SYMBOLS" in err["message"]
    listed = await (await client.get("/backtest")).json()
    assert listed["total"] == 0
    assert await asyncio.to_thread(data.store.count, None) == before  # nothing fetched or written


# --------------------------------------------------------------------------- findings 4 and 20


async def test_listing_reads_no_summary_and_details_live_beside_the_table(aiohttp_client: Any,
                                                                          tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    resp = await client.post("/backtest", json=SWEEP)
    job_id = (await resp.json())["job_id"]
    assert (await _wait(client, job_id))["status"] == "succeeded"
    store: JobStore = client.app[K.STORE]
    jobs, total = await asyncio.to_thread(store.list)
    assert total == 1 and isinstance(jobs[0], JobBrief)
    assert (jobs[0].strategy, jobs[0].n_symbols, jobs[0].n_columns) == ("sma_crossover", 2, 12)
    assert not hasattr(jobs[0], "summary") and not hasattr(jobs[0], "spec")
    row = await asyncio.to_thread(store.get, job_id)
    assert "details" not in row.summary and len(row.summary["details_columns"]) == 2  # the row stays small
    details = await asyncio.to_thread(artifacts.read_details, row.artifact_path)
    assert [d["column"] for d in details] == [r["column"] for r in row.summary["top"][:2]]
    assert len(details[0]["equity"]["value"]) > 100


async def test_delete_a_finished_job_and_its_results_then_retention(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    jobs = client.app[K.JOBS]
    ids = []
    for _ in range(2):
        ids.append((await (await client.post("/backtest", json=SWEEP)).json())["job_id"])
    for job_id in ids:
        assert (await _wait(client, job_id))["status"] == "succeeded"
    store: JobStore = client.app[K.STORE]
    first = await asyncio.to_thread(store.get, ids[0])
    assert Path(first.artifact_path).is_dir()
    gone = await jobs.delete(ids[0])
    assert gone is not None and gone.id == ids[0]
    assert await asyncio.to_thread(store.get, ids[0]) is None
    assert not Path(artifacts.job_dir(client.app[K.SETTINGS].artifact_uri, ids[0])).exists()
    assert await jobs.delete(ids[0]) is None
    # retention: with GPU_BACKTEST_RETENTION_DAYS, a job that ended long enough ago goes, with its files
    second = await asyncio.to_thread(store.get, ids[1])
    jobs.settings = Settings.from_env(_env(tmp_path, GPU_BACKTEST_RETENTION_DAYS="0.00001"))  # ~0.9 s
    await asyncio.sleep(1.0)
    assert await jobs.prune() == 1
    assert await asyncio.to_thread(store.get, ids[1]) is None
    assert not Path(second.artifact_path).exists()
    jobs.settings = Settings.from_env(_env(tmp_path, GPU_BACKTEST_RETENTION_DAYS="0"))
    assert await jobs.prune() == 0


async def test_a_queued_or_running_job_cannot_be_deleted(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    store.migrate()
    job = store.create({"strategy": "sma_crossover"}, "h")
    from gpu_backtest.core.jobstore import JobNotFinal

    with pytest.raises(JobNotFinal):
        store.delete(job.id)
    store.claim_next("me")
    with pytest.raises(JobNotFinal):
        store.delete(job.id)
    store.finish(job.id, "failed", error={"code": "x", "message": "y"})
    assert store.delete(job.id).id == job.id
    assert store.delete_older_than(dt.timedelta(0)) == []
    store.close()


# --------------------------------------------------------------------------- finding 5 (export)


async def test_csv_export_streams_while_the_server_answers(aiohttp_client: Any, tmp_path: Path) -> None:
    """A ~17,000-row table exported as CSV: /health answers while it streams (the export's
    reading and formatting run off the event loop, one batch at a time)."""
    client = await _client(aiohttp_client, tmp_path)
    spec = {"strategy": "sma_crossover", "symbols": ["SYN001", "SYN002"],
            "params": {"fast": {"start": 2, "stop": 101}, "slow": {"start": 50, "stop": 149}}}
    job_id = (await (await client.post("/backtest", json=spec)).json())["job_id"]
    assert (await _wait(client, job_id, timeout=300))["status"] == "succeeded"
    healthy = 0
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal healthy
        while not done.is_set():
            if (await client.get("/health")).status == 200:
                healthy += 1
            await asyncio.sleep(0)

    poller = asyncio.create_task(poll())
    resp = await client.get(f"/backtest/{job_id}/results?format=csv")
    chunks = []
    async for chunk in resp.content.iter_chunked(1 << 16):
        chunks.append(chunk)
        await asyncio.sleep(0)
    done.set()
    await poller
    table = pd.read_csv(io.BytesIO(b"".join(chunks)))
    listed = (await (await client.get("/backtest")).json())["jobs"][0]
    assert len(table) == listed.get("n_columns", len(table)) > 10_000
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert healthy > 0


async def test_delete_over_http_a_finished_job_and_a_stored_series(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    job_id = (await (await client.post("/backtest", json=SWEEP)).json())["job_id"]
    assert (await _wait(client, job_id))["status"] == "succeeded"
    resp = await client.delete(f"/backtest/{job_id}")  # a finished job cannot be cancelled ...
    assert resp.status == 409 and "purge=true" in (await resp.json())["error"]["message"]
    resp = await client.delete(f"/backtest/{job_id}?purge=maybe")
    assert resp.status == 400
    resp = await client.delete(f"/backtest/{job_id}?purge=true")  # ... but deleted with its results
    assert resp.status == 200 and (await resp.json())["job_id"] == job_id
    assert (await client.get(f"/backtest/{job_id}")).status == 404
    assert not Path(artifacts.job_dir(client.app[K.SETTINGS].artifact_uri, job_id)).exists()
    # a stored series: gone from the catalog and the store
    form = {"symbol": "DELME", "source": "mine"}
    csv = pd.DataFrame({"date": pd.bdate_range("2020-01-01", periods=60).strftime("%Y-%m-%d"),
                        "open": 1.0, "high": 2.0, "low": 0.5, "close": [1 + i / 100 for i in range(60)],
                        "volume": 10}).to_csv(index=False)
    import aiohttp

    data = aiohttp.FormData()
    for k, v in form.items():
        data.add_field(k, v)
    data.add_field("file", csv.encode(), filename="delme.csv", content_type="text/csv")
    resp = await client.post("/data/upload", data=data)
    assert resp.status == 201, await resp.text()
    resp = await client.delete("/data/symbols/mine/1d/DELME")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["deleted"]["symbol"] == "DELME"
    resp = await client.get("/data/symbols?source=mine")  # its last series: the collection is gone too
    assert resp.status == 404
    assert (await client.delete("/data/symbols/mine/1d/DELME")).status == 404
    assert (await client.delete("/data/symbols/mine/1d/BAD%0A")).status == 422
