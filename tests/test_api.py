"""The HTTP service tested for real: the aiohttp app on a loopback port, a real Dask cluster, a real database.

- One Dask ``LocalCluster`` per module (`cluster.dask.start_cluster`), shared by every app the
  tests start (``create_app(settings, cluster=handle)``), closed at the end of the module.
  Worker processes by default (chunks are pickled to a worker, as in production);
  ``GPU_BACKTEST_TEST_DASK_PROCESSES=0`` runs the worker in-process instead.
- Every test runs twice: on SQLite (the default, in the data directory) and on PostgreSQL
  (``TEST_DATABASE_URL`` or ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``) in a fresh
  schema per module (``?options=-csearch_path=<schema>``), dropped afterwards. When the server is
  unreachable the PostgreSQL variant fails, unless ``GPU_BACKTEST_SKIP_POSTGRES=1``. The jobs
  table is emptied before each test.
- Every response of every test goes through `CheckedClient`: no 5xx, and every 4xx is the JSON
  error envelope with a request id and no traceback text.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete

from gpu_backtest.cluster.dask import ClusterHandle, start_cluster
from gpu_backtest.core.config import Settings
from gpu_backtest.core.jobs import sign
from gpu_backtest.core.jobstore import JobStore, jobs_table
from gpu_backtest.core.strategy import Param, SignalContext, Signals, Strategy
from gpu_backtest.plugins.hookspecs import hookimpl
from gpu_backtest.web import keys as K
from gpu_backtest.web.app import create_app

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_schema import fresh_pg_schema

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("error::aiohttp.web_exceptions.NotAppKeyWarning"),
]

DASK_PROCESSES = os.environ.get("GPU_BACKTEST_TEST_DASK_PROCESSES", "1") != "0"
POLL_TIMEOUT_S = 60.0  # the first job of a fresh worker may compile the numba kernel
FINAL = ("succeeded", "failed", "cancelled")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
API_KEY = "secret"

SINGLE = {"strategy": "sma_crossover", "symbols": ["SYN001"], "params": {"fast": 10, "slow": 50}}
SWEEP = {"strategy": "sma_crossover", "symbols": ["SYN002", "SYN003", "SYN004", "SYN005"],
         "params": {"fast": [5, 10, 20], "slow": {"start": 50, "stop": 100, "step": 50}},
         "output": {"top_k": 3}}
# 4,680 columns; with GPU_BACKTEST_CPU_MEMORY_LIMIT=64KiB each is its own chunk (Dask task): ~40 s to run
SLOW = {"strategy": "sma_crossover", "symbols": [f"SYN{i:03d}" for i in range(20)],
        "params": {"fast": {"start": 2, "stop": 40}, "slow": [50, 60, 80, 100, 150, 200]}, "output": {"top_k": 1}}


# --------------------------------------------------------------------------- the checked client


class CheckedClient(TestClient):  # type: ignore[type-arg]
    """A TestClient that checks every answer: never a 5xx; every 4xx the JSON error envelope,
    with the request id of its X-Request-ID header and no traceback text."""

    async def _request(self, method: str, path: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        resp = await super()._request(method, path, **kwargs)
        if resp.status >= 400:
            text = await resp.text()  # cached: the test can still read the body
            check_error_body(resp.status, dict(resp.headers), text, f"{method} {path}")
        return resp


def check_error_body(status: int, headers: dict[str, str], text: str, what: str) -> dict[str, Any]:
    """The envelope of an error answer (asserting its shape); returns the parsed body."""
    assert status < 500, f"{what}: {status} {text}"
    assert "Traceback" not in text and 'File "' not in text, f"{what}: traceback in the body: {text}"
    assert headers.get("Content-Type", "").startswith("application/json"), f"{what}: {headers} {text}"
    body = json.loads(text)
    assert set(body) == {"error", "request_id"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert isinstance(body["request_id"], str) and body["request_id"], body
    assert headers.get("X-Request-ID") == body["request_id"], (headers, body)
    return body


async def error_of(resp: aiohttp.ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert ``resp`` is an error with ``status`` (and ``code``); returns its ``error`` object."""
    text = await resp.text()
    assert resp.status == status, f"expected {status}, got {resp.status}: {text}"
    err = json.loads(text)["error"]
    if code is not None:
        assert err["code"] == code, err
    return err


async def ok_json(resp: aiohttp.ClientResponse, status: int = 200) -> Any:
    text = await resp.text()
    assert resp.status == status, f"expected {status}, got {resp.status}: {text}"
    return json.loads(text)


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Database:
    kind: str  # "sqlite" | "postgresql"
    url: str | None  # None: the default SQLite file in the data directory
    data_dir: Path

    def env(self) -> dict[str, str]:
        env = {"GPU_BACKTEST_DATA_DIR": str(self.data_dir), "GPU_BACKTEST_BACKEND": "cpu",
               "GPU_SERVER_HOST": "127.0.0.1"}
        if self.url is not None:
            env["DATABASE_URL"] = self.url
        return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """One Dask LocalCluster for the module; its workers build their engine from the environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPU_BACKTEST_BACKEND", "cpu")  # what the (spawned) workers read
        mp.setenv("GPU_BACKTEST_DATA_DIR", str(tmp_path_factory.mktemp("dask-worker")))
        settings = Settings.from_env({"GPU_BACKTEST_BACKEND": "cpu"})
        handle = start_cluster(settings, processes=DASK_PROCESSES, dashboard_address=":0")
        try:
            yield handle
        finally:
            handle.close()


def _pg_database(tmp: Path) -> Iterator[Database]:
    with fresh_pg_schema("gbt_api") as pg:
        yield Database("postgresql", pg.url, tmp)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """The job database (and a data directory) shared by the module's tests of one variant."""
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "sqlite":
        yield Database("sqlite", None, tmp)
    else:
        yield from _pg_database(tmp)


def _empty_jobs(settings: Settings) -> None:
    store = JobStore.from_settings(settings)
    try:
        store.create_all()
        with store.engine.begin() as conn:
            conn.execute(delete(jobs_table))
    finally:
        store.close()


def _job_row(settings: Settings, job_id: str) -> Any:
    store = JobStore.from_settings(settings)
    try:
        return store.get(job_id)
    finally:
        store.close()


@pytest.fixture
def aiohttp_client_cls() -> type[TestClient]:  # type: ignore[type-arg]
    return CheckedClient


MakeClient = Callable[..., Awaitable[CheckedClient]]


@pytest_asyncio.fixture
async def make_client(aiohttp_client: Any, cluster: ClusterHandle, database: Database) -> AsyncIterator[MakeClient]:
    """``await make_client(VAR=value, ...)``: the real app on 127.0.0.1 with those settings
    (``grace``: seconds the app's shutdown waits for running jobs)."""
    await asyncio.to_thread(_empty_jobs, Settings.from_env(database.env()))

    async def make(grace: float = 10.0, **env: str) -> CheckedClient:
        settings = Settings.from_env({**database.env(), **env})
        app = create_app(settings, cluster=cluster, shutdown_grace_s=grace)
        return await aiohttp_client(app)

    yield make


@pytest_asyncio.fixture
async def client(make_client: MakeClient) -> CheckedClient:
    return await make_client()


# --------------------------------------------------------------------------- helpers


async def submit(client: TestClient, spec: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:  # type: ignore[type-arg]
    resp = await client.post("/backtest", json=spec, headers=headers)
    doc = await ok_json(resp, 202)
    assert JOB_ID.match(doc["job_id"]), doc
    assert resp.headers["Location"] == f"/backtest/{doc['job_id']}"
    base = f"/backtest/{doc['job_id']}"
    assert doc["links"] == {"self": base, "results": f"{base}/results", "details": f"{base}/details",
                            "columns": f"{base}/columns/{{n}}", "report": f"{base}/report"}
    return doc


async def job(client: TestClient, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:  # type: ignore[type-arg]
    return await ok_json(await client.get(f"/backtest/{job_id}", headers=headers))


async def wait_job(client: TestClient, job_id: str, until: Callable[[dict[str, Any]], bool] | None = None,  # type: ignore[type-arg]
                   timeout: float = POLL_TIMEOUT_S, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Poll GET /backtest/{id} until ``until(doc)`` (default: a final status); fail after ``timeout``."""
    until = until or (lambda d: d["status"] in FINAL)
    deadline = time.monotonic() + timeout
    while True:
        doc = await job(client, job_id, headers)
        if until(doc):
            return doc
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} did not get there in {timeout:.0f}s: status {doc['status']}, "
                        f"progress {doc['progress']}, error {doc['error']}")
        await asyncio.sleep(0.05)


async def run_job(client: TestClient, spec: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:  # type: ignore[type-arg]
    doc = await wait_job(client, (await submit(client, spec, headers))["job_id"], headers=headers)
    assert doc["status"] == "succeeded", doc["error"]
    return doc


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """JSON result rows as a frame comparable with the CSV/Parquet downloads (null → NaN)."""
    df = pd.DataFrame(rows, columns=columns)
    for c in df.columns:
        if df[c].dtype == object and c != "symbol":
            df[c] = pd.to_numeric(df[c].where(df[c].notna(), np.nan))
    return df


def upload_form(content: bytes | None, filename: str = "bars.csv", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for k, v in fields.items():
        form.add_field(k, v)
    if content is not None:
        form.add_field("file", content, filename=filename, content_type="text/csv")
    return form


def bars_csv(n: int, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * 1.005
    low = np.minimum(open_, close) * 0.995
    dates = pd.bdate_range("2020-01-01", periods=n)
    lines = ["Date,Open,High,Low,Close,Volume"]
    lines += [f"{d.date()},{o:.4f},{h:.4f},{lo:.4f},{c:.4f},1000"
              for d, o, h, lo, c in zip(dates, open_, high, low, close, strict=True)]
    return ("\n".join(lines) + "\n").encode()


async def raw_request(port: int, head: bytes) -> tuple[int, dict[str, str], str]:
    """Send a hand-written HTTP/1.1 request (for headers aiohttp's client won't send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body.decode()


# --------------------------------------------------------------------------- backtests


async def test_single_backtest_submit_poll_results(client: CheckedClient) -> None:
    accepted = await submit(client, SINGLE)
    assert accepted["status"] == "queued" and accepted["timings"]["started_at"] is None
    jid = accepted["job_id"]
    doc = await wait_job(client, jid)
    assert doc["status"] == "succeeded", doc["error"]
    assert doc["progress"] == 1.0 and doc["error"] is None and doc["attempts"] == 1 and doc["eta_s"] is None
    timings = doc["timings"]
    assert timings["created_at"] <= timings["started_at"] <= timings["finished_at"]
    assert timings["queued_s"] >= 0 and timings["run_s"] > 0
    (run,) = doc["attempts_history"]  # one run, by this server, under lease generation 1
    assert run["generation"] == 1 and run["outcome"] == "succeeded" and run["owner"] == client.app[K.JOBS].owner
    assert timings["started_at"] == run["started_at"] and run["ended_at"] >= run["started_at"]
    full = await ok_json(await client.get(f"/backtest/{jid}?view=full"))
    assert full["spec"]["strategy"] == "sma_crossover" and full["spec"]["symbols"] == ["SYN001"]
    assert full["summary"]["top"] == doc["top"] and full["summary"]["info"] == doc["info"]

    info = doc["info"]
    assert (info["n_symbols"], info["n_combinations"], info["n_columns"]) == (1, 1, 1)
    assert info["backend"] == "cpu" and info["n_bars"] > 2000
    assert len(doc["top"]) == 1 and doc["top"][0]["params"] == {"fast": 10, "slow": 50}
    assert "details" not in doc and "summary" not in doc and "spec" not in doc  # compact
    (detail,) = (await ok_json(await client.get(f"/backtest/{jid}/details")))["details"]
    assert detail["symbol"] == "SYN001" and detail["params"] == {"fast": 10, "slow": 50}
    equity = detail["equity"]
    assert len(equity["time"]) == len(equity["value"]) == info["n_bars"]
    assert equity["value"][0] == pytest.approx(100_000, rel=0.05)
    assert equity["value"][-1] == pytest.approx(detail["metrics"]["final_equity"])
    trades = detail["trades"]
    assert trades and len(trades) == detail["metrics"]["num_trades"] + detail["metrics"]["num_open_trades"]
    assert {"entry_time", "exit_time", "pnl", "return", "status"} <= set(trades[0])

    results = await ok_json(await client.get(f"/backtest/{jid}/results"))
    assert results["total"] == 1 and results["job_id"] == jid
    (row,) = results["rows"]
    assert row["symbol"] == "SYN001" and (row["fast"], row["slow"]) == (10, 50) and row["rank"] == 1
    assert row["final_equity"] == pytest.approx(doc["top"][0]["metrics"]["final_equity"])

    listing = await ok_json(await client.get("/backtest"))
    assert [j["job_id"] for j in listing["jobs"]] == [jid] and listing["total"] == 1
    assert listing["jobs"][0]["status"] == "succeeded" and "summary" not in listing["jobs"][0]
    assert (await ok_json(await client.get("/backtest?status=succeeded&limit=1")))["total"] == 1
    assert (await ok_json(await client.get("/backtest?status=queued")))["jobs"] == []


async def test_sweep_results_pages_sort_and_downloads(client: CheckedClient) -> None:
    doc = await run_job(client, SWEEP)
    jid = doc["job_id"]
    info = doc["info"]
    assert (info["n_symbols"], info["n_combinations"], info["n_columns"]) == (4, 6, 24)
    details = (await ok_json(await client.get(f"/backtest/{jid}/details")))["details"]
    assert len(details) == 3  # output.top_k
    assert all("equity" in d and "trades" in d for d in details)

    full = await ok_json(await client.get(f"/backtest/{jid}/results?limit=100"))
    assert full["total"] == 24 and len(full["rows"]) == 24
    columns = full["columns"]
    assert columns[:5] == ["rank", "column", "symbol", "fast", "slow"] and "sharpe" in columns
    assert [r["rank"] for r in full["rows"]] == list(range(1, 25))
    assert sorted(r["column"] for r in full["rows"]) == list(range(24))
    assert {(r["symbol"], r["fast"], r["slow"]) for r in full["rows"]} == {
        (s, f, sl) for s in SWEEP["symbols"] for f in (5, 10, 20) for sl in (50, 100)}
    sharpe = [r["sharpe"] for r in full["rows"] if r["sharpe"] is not None]
    assert sharpe == sorted(sharpe, reverse=True)  # ranked by output.rank_by (sharpe)

    pages = []
    for offset in (0, 10, 20):
        page = await ok_json(await client.get(f"/backtest/{jid}/results?limit=10&offset={offset}"))
        assert (page["limit"], page["offset"], page["total"]) == (10, offset, 24)
        pages += page["rows"]
    assert pages == full["rows"]
    assert (await ok_json(await client.get(f"/backtest/{jid}/results?offset=30")))["rows"] == []

    desc = (await ok_json(await client.get(f"/backtest/{jid}/results?sort=-total_return&limit=100")))["rows"]
    values = [r["total_return"] for r in desc]
    assert values == sorted(values, reverse=True)
    asc = (await ok_json(await client.get(f"/backtest/{jid}/results?sort=fast&limit=100")))["rows"]
    assert [r["fast"] for r in asc] == sorted(r["fast"] for r in asc)
    assert [r["rank"] for r in asc if r["fast"] == 5] == sorted(r["rank"] for r in asc if r["fast"] == 5)  # stable

    expected = frame(full["rows"], columns)
    resp = await client.get(f"/backtest/{jid}/results?format=csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert f'filename="{jid}.csv"' in resp.headers["Content-Disposition"]
    csv = pd.read_csv(io.StringIO(await resp.text()))
    assert list(csv.columns) == columns
    pd.testing.assert_frame_equal(csv, expected, check_dtype=False, check_exact=True)

    resp = await client.get(f"/backtest/{jid}/results?format=parquet")
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/vnd.apache.parquet"
    parquet = pd.read_parquet(io.BytesIO(await resp.read()))
    pd.testing.assert_frame_equal(parquet, expected, check_dtype=False, check_exact=True)

    resp = await client.get(f"/backtest/{jid}/results?format=csv&sort=-total_return")
    csv_sorted = pd.read_csv(io.StringIO(await resp.text()))
    assert list(csv_sorted["column"]) == [r["column"] for r in desc]

    # bad query parameters of the results endpoint
    for query, parameter in [("format=xml", "format"), ("sort=nope", "sort"), ("sort=-", "sort"),
                             ("limit=0", "limit"), ("limit=abc", "limit"), ("limit=10001", "limit"),
                             ("offset=-1", "offset"), ("offset=1.5", "offset")]:
        err = await error_of(await client.get(f"/backtest/{jid}/results?{query}"), 400, "bad_request")
        assert err["details"] == {"parameter": parameter}, (query, err)


async def test_cancel_queued_job_never_runs_and_running_job_stops(make_client: MakeClient) -> None:
    # one job at a time; a tiny chunk budget makes every column its own Dask task, so the
    # first job runs for many seconds unless cancelled
    client = await make_client(MAX_CONCURRENT_JOBS="1", GPU_BACKTEST_CPU_MEMORY_LIMIT="64KiB")
    slow = (await submit(client, SLOW))["job_id"]
    running = await wait_job(client, slow, lambda d: d["status"] != "queued" and d["progress"] > 0)
    assert running["status"] == "running", running
    assert running["timings"]["started_at"] is not None and running["progress"] < 0.5

    queued = (await submit(client, SINGLE))["job_id"]
    doc = await job(client, queued)
    assert doc["status"] == "queued" and doc["timings"]["started_at"] is None
    listing = await ok_json(await client.get("/backtest?status=queued"))
    assert [j["job_id"] for j in listing["jobs"]] == [queued]
    for jid, status in ((queued, "queued"), (slow, "running")):
        err = await error_of(await client.get(f"/backtest/{jid}/results"), 409, "conflict")
        assert err["details"] == {"status": status}

    cancelled = await ok_json(await client.delete(f"/backtest/{queued}"))
    assert cancelled["job_id"] == queued and cancelled["status"] == "cancelled"
    assert cancelled["timings"]["started_at"] is None and cancelled["timings"]["finished_at"] is not None

    resp = await ok_json(await client.delete(f"/backtest/{slow}"))
    assert resp["status"] in ("running", "cancelled")
    t0 = time.monotonic()
    stopped = await wait_job(client, slow, timeout=20)
    assert stopped["status"] == "cancelled", stopped
    assert stopped["progress"] < 1.0 and stopped["info"] is None and stopped["top"] is None
    assert stopped["error"] is None
    assert stopped["timings"]["started_at"] is not None and stopped["timings"]["finished_at"] is not None
    assert time.monotonic() - t0 < 10  # stopped at its next chunk, not at the end of the sweep

    # the queue moves on, past the cancelled job: a new job runs, the cancelled one never did
    after = await run_job(client, SINGLE)
    doc = await job(client, queued)
    assert doc["status"] == "cancelled" and doc["timings"]["started_at"] is None and doc["attempts"] == 0
    err = await error_of(await client.get(f"/backtest/{queued}/results"), 409, "conflict")
    assert err["details"] == {"status": "cancelled"}
    # a finished job cannot be cancelled: 409 naming its status, and it stays as it was
    for jid, status in ((queued, "cancelled"), (after["job_id"], "succeeded"), (slow, "cancelled")):
        err = await error_of(await client.delete(f"/backtest/{jid}"), 409, "conflict")
        assert err["details"] == {"status": status} and status in err["message"]
        assert (await job(client, jid))["status"] == status
    counts = {s: (await ok_json(await client.get(f"/backtest?status={s}")))["total"] for s in FINAL}
    assert counts == {"succeeded": 1, "failed": 0, "cancelled": 2}


async def test_idempotent_resubmission(client: CheckedClient) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    first = await submit(client, SINGLE, key)
    again = await submit(client, dict(reversed(list(SINGLE.items()))), key)  # same body, other key order
    assert again["job_id"] == first["job_id"]
    other = await submit(client, SINGLE)  # no key: a new job
    assert other["job_id"] != first["job_id"]

    err = await error_of(await client.post("/backtest", json={**SINGLE, "params": {"fast": 11, "slow": 50}},
                                           headers=key), 422, "idempotency_conflict")
    assert err["details"]["job_id"] == first["job_id"]
    err = await error_of(await client.post("/backtest", json=SINGLE, headers={"Idempotency-Key": "k" * 201}),
                         400, "bad_request")
    assert "Idempotency-Key" in err["message"]

    for jid in (first["job_id"], other["job_id"]):
        assert (await wait_job(client, jid))["status"] == "succeeded"
    assert (await submit(client, SINGLE, key))["job_id"] == first["job_id"]  # also once it has finished
    assert (await ok_json(await client.get("/backtest")))["total"] == 2


async def test_failed_jobs_report_their_error(client: CheckedClient) -> None:
    # what the catalog and the source can tell is refused at submit (tests/test_data_honesty.py) ...
    err = await error_of(await client.post("/backtest", json={**SINGLE, "source": "upload",
                                                              "symbols": ["NOSUCHSYMBOL"]}), 422, "invalid_spec")
    assert err["details"]["field"] == "symbols[0]" and "NOSUCHSYMBOL" in err["message"]
    err = await error_of(await client.post("/backtest", json={**SINGLE, "start": "1990-01-01", "end": "1995-06-30"}),
                         422, "invalid_spec")
    assert err["details"]["field"] == "end"
    # ... what only the run finds fails the job: the stored file of a series is gone from the root
    await ok_json(await client.post("/data/upload", data=upload_form(bars_csv(80), symbol="GONE")), 201)
    store = client.app[K.DATA].store
    store.path("upload", "GONE", "1d").unlink()
    missing = await wait_job(client, (await submit(client, {**SINGLE, "source": "upload",
                                                           "symbols": ["GONE"]}))["job_id"])
    for doc, code, text in ((missing, "invalid_data", "GONE"),):
        assert doc["status"] == "failed" and doc["info"] is None and doc["top"] is None, doc
        assert set(doc["error"]) == {"code", "message", "details"} and doc["error"]["code"] == code, doc
        assert text in doc["error"]["message"] and "Traceback" not in json.dumps(doc)
        assert doc["timings"]["started_at"] is not None and doc["timings"]["finished_at"] is not None
        err = await error_of(await client.get(f"/backtest/{doc['job_id']}/results"), 409, "conflict")
        assert err["details"] == {"status": "failed"}
    assert (await ok_json(await client.get("/backtest?status=failed")))["total"] == 1


async def test_compact_document_views_and_bad_query_values(client: CheckedClient) -> None:
    sweep = {**SWEEP, "output": {"top_k": 24}}  # every column has an equity curve and trades stored
    doc = await run_job(client, sweep)
    jid = doc["job_id"]
    compact = await client.get(f"/backtest/{jid}")
    text = await compact.text()
    assert len(text.encode()) < 16 * 1024, len(text)  # a sweep's compact document: a few KB
    assert '"equity"' not in text and '"trades"' not in text
    assert set(doc) >= {"job_id", "status", "progress", "stage", "eta_s", "timings", "info", "error", "top",
                        "attempts", "attempts_history", "links"}
    assert len(doc["top"]) == 10 and [r["rank"] for r in doc["top"]] == list(range(1, 11))
    assert set(doc["top"][0]) == {"rank", "column", "symbol", "params", "metrics"}
    full = await client.get(f"/backtest/{jid}?view=full")
    assert len(await full.read()) > 10 * len(text.encode())  # what polling used to cost
    three = await ok_json(await client.get(f"/backtest/{jid}?top=3"))
    assert three["top"] == doc["top"][:3]
    assert (await ok_json(await client.get(f"/backtest/{jid}?top=0")))["top"] == []
    status = await ok_json(await client.get(f"/backtest/{jid}?view=status"))
    assert set(status) == {"job_id", "status", "progress", "stage", "eta_s", "error", "links"}
    assert status["status"] == "succeeded" and status["links"] == doc["links"]

    for query, parameter in [("view=everything", "view"), ("view=", "view"), ("wait=0", "wait"),
                             ("wait=-1", "wait"), ("wait=61", "wait"), ("wait=soon", "wait"), ("wait=nan", "wait"),
                             ("wait=inf", "wait"), ("top=-1", "top"), ("top=1001", "top"), ("top=x", "top")]:
        err = await error_of(await client.get(f"/backtest/{jid}?{query}"), 400, "bad_request")
        assert err["details"] == {"parameter": parameter}, (query, err)

    listing = (await ok_json(await client.get("/backtest")))["jobs"]
    assert set(listing[0]) >= {"strategy", "n_symbols", "n_columns", "timings", "status", "progress"}
    assert "info" not in listing[0] and "top" not in listing[0]


async def test_long_poll_returns_when_the_job_is_final(make_client: MakeClient) -> None:
    client = await make_client(MAX_CONCURRENT_JOBS="1", GPU_BACKTEST_CPU_MEMORY_LIMIT="64KiB")
    # one request, held until the job ends: the answer is final (a plain GET would say queued)
    jid = (await submit(client, SINGLE))["job_id"]
    doc = await ok_json(await client.get(f"/backtest/{jid}?wait=55"))
    assert doc["status"] == "succeeded" and doc["info"]["n_columns"] == 1
    assert (await ok_json(await client.get(f"/backtest/{jid}?wait=0.2")))["status"] == "succeeded"  # final: at once

    slow = (await submit(client, SLOW))["job_id"]
    await wait_job(client, slow, lambda d: d["status"] == "running" and d["progress"] > 0)
    queued = (await submit(client, SINGLE))["job_id"]
    # not final within the wait: the answer says so (queued), after the wait
    assert (await ok_json(await client.get(f"/backtest/{queued}?wait=0.3&view=status")))["status"] == "queued"
    running = await ok_json(await client.get(f"/backtest/{slow}?view=status"))
    assert running["status"] == "running" and (running["eta_s"] is None or running["eta_s"] >= 0)
    # cancelling wakes the waiting requests (the queued job at once, the running one by its finish event)
    polls = [asyncio.ensure_future(client.get(f"/backtest/{j}?wait=55&view=status")) for j in (queued, slow)]
    await asyncio.sleep(0.3)
    await ok_json(await client.delete(f"/backtest/{queued}"))
    await ok_json(await client.delete(f"/backtest/{slow}"))
    answers = await asyncio.wait_for(asyncio.gather(*polls), timeout=30)
    assert [(await ok_json(r))["status"] for r in answers] == ["cancelled", "cancelled"]


async def test_details_and_any_column_on_demand(client: CheckedClient) -> None:
    doc = await run_job(client, SWEEP)  # 24 columns, top_k 3
    jid = doc["job_id"]
    details = (await ok_json(await client.get(f"/backtest/{jid}/details")))["details"]
    full = await ok_json(await client.get(f"/backtest/{jid}?view=full"))
    assert details == full["summary"]["details"] and len(details) == 3
    assert [d["column"] for d in details] == [r["column"] for r in doc["top"][:3]]
    # a top column computed on demand equals the stored top-k details exactly (same code path)
    for rank, stored in enumerate(details, start=1):
        column = await ok_json(await client.get(f"/backtest/{jid}/columns/{stored['column']}"))
        assert column["job_id"] == jid and column["rank"] == rank
        for key in ("column", "symbol", "params", "metrics", "equity", "trades"):
            assert column[key] == stored[key], key
    # any other column: its curve and trades, metrics agreeing with its row of the table
    rows = (await ok_json(await client.get(f"/backtest/{jid}/results?limit=100")))["rows"]
    last = rows[-1]
    other = await ok_json(await client.get(f"/backtest/{jid}/columns/{last['column']}"))
    assert other["rank"] is None or other["rank"] == last["rank"]
    assert (other["symbol"], other["params"]) == (last["symbol"], {"fast": last["fast"], "slow": last["slow"]})
    assert len(other["equity"]["time"]) == len(other["equity"]["value"]) == doc["info"]["n_bars"]
    assert other["equity"]["value"][-1] == pytest.approx(last["final_equity"], rel=1e-9)
    assert other["metrics"]["num_trades"] == last["num_trades"]
    assert len(other["trades"]) == last["num_trades"] + last["num_open_trades"]
    # columns that do not exist: 404 naming n
    for n in ("24", "1000000", "-1", "x", "1.5"):
        err = await error_of(await client.get(f"/backtest/{jid}/columns/{n}"), 404, "not_found")
        assert err["details"]["column"] == n and err["details"]["n_columns"] == 24, err
    # not succeeded: 409 naming the status; unknown job: 404
    await ok_json(await client.post("/data/upload", data=upload_form(bars_csv(80), symbol="LOST")), 201)
    client.app[K.DATA].store.path("upload", "LOST", "1d").unlink()  # what only the run finds: it fails
    failed = await wait_job(client, (await submit(client, {**SINGLE, "source": "upload",
                                                           "symbols": ["LOST"]}))["job_id"])
    assert failed["status"] == "failed", failed
    for path in ("details", "columns/0"):
        err = await error_of(await client.get(f"/backtest/{failed['job_id']}/{path}"), 409, "conflict")
        assert err["details"] == {"status": "failed"}
        await error_of(await client.get(f"/backtest/{uuid.uuid4().hex}/{path}"), 404, "not_found")


def _raising_signals(ctx: SignalContext) -> Signals:
    raise ValueError("lookback 3 needs more bars; " + "x" * 2000)


def _long_signals(ctx: SignalContext) -> Signals:
    xp = ctx.xp
    return Signals(xp.ones((ctx.n_bars, ctx.n_columns), dtype=bool), xp.zeros((ctx.n_bars, ctx.n_columns), dtype=bool))


def _raising_constraint(grid: Any) -> Any:
    raise ZeroDivisionError("division by zero")


@dataclass(frozen=True)
class _PickyParam(Param):
    def check(self, value: Any) -> Any:
        if value == 13:
            raise LookupError("13 is unlucky")
        return super().check(value)


class _FaultyStrategies:
    """A plugin whose strategies fail in their own code (registered on a running server)."""

    @hookimpl
    def register_strategies(self) -> list[Strategy]:
        return [Strategy("test_raises", "signals raises", (Param("lookback", int, 3, min=1),), _raising_signals,
                         shorts=False),
                Strategy("test_picky", "a parameter check that raises", (_PickyParam("window", int, 5, min=1),),
                         _long_signals, shorts=False),
                Strategy("test_bad_constraint", "a constraint that raises", (Param("window", int, 5, min=1),),
                         _long_signals, constraint=_raising_constraint, shorts=False)]


@pytest_asyncio.fixture
async def local_client(aiohttp_client: Any, database: Database) -> CheckedClient:
    """The app running jobs in its own process (no cluster), with `_FaultyStrategies` registered."""
    settings = Settings.from_env(database.env())
    await asyncio.to_thread(_empty_jobs, settings)
    client = await aiohttp_client(create_app(settings, cluster=False, shutdown_grace_s=5))
    client.app[K.PM].register(_FaultyStrategies(), name="test_faulty")
    return client


async def test_strategy_errors_reach_the_client(local_client: CheckedClient) -> None:
    client = local_client
    doc = await wait_job(client, (await submit(client, {"strategy": "test_raises", "symbols": ["SYN001"]}))["job_id"])
    assert doc["status"] == "failed", doc
    err = doc["error"]
    assert err["code"] == "strategy_error", err
    assert err["message"].startswith("strategy 'test_raises' raised ValueError: lookback 3 needs more bars")
    assert len(err["message"]) <= 600 and err["details"] == {"strategy": "test_raises", "exception": "ValueError"}
    assert "Traceback" not in json.dumps(doc) and 'File "' not in json.dumps(doc)

    err = await error_of(await client.post("/backtest", json={"strategy": "test_picky", "symbols": ["SYN001"],
                                                              "params": {"window": [5, 13]}}), 422, "invalid_spec")
    assert err["details"]["field"] == "params.window[1]" and "LookupError: 13 is unlucky" in err["details"]["reason"]
    err = await error_of(await client.post("/backtest", json={"strategy": "test_bad_constraint",
                                                              "symbols": ["SYN001"]}), 422, "invalid_spec")
    assert err["details"]["field"] == "params" and "ZeroDivisionError" in err["message"]


async def test_concurrent_submissions(make_client: MakeClient) -> None:
    client = await make_client(MAX_CONCURRENT_JOBS="2")
    specs = [{**SINGLE, "symbols": [f"SYN{i:03d}"]} for i in range(6)]
    accepted = await asyncio.gather(*(submit(client, spec) for spec in specs))
    ids = [a["job_id"] for a in accepted]
    assert len(set(ids)) == 6
    key = {"Idempotency-Key": uuid.uuid4().hex}
    racing = await asyncio.gather(*(submit(client, SINGLE, key) for _ in range(5)))
    assert len({r["job_id"] for r in racing}) == 1  # one job for one key, however the requests race
    ids.append(racing[0]["job_id"])
    docs = await asyncio.gather(*(wait_job(client, jid) for jid in ids))
    assert [(d["status"], d["attempts"]) for d in docs] == [("succeeded", 1)] * 7  # each run exactly once
    assert [d["top"][0]["symbol"] for d in docs[:6]] == [s["symbols"][0] for s in specs]
    assert (await ok_json(await client.get("/backtest?limit=500")))["total"] == 7


async def test_restart_hands_running_job_back(make_client: MakeClient) -> None:
    """A job still running when its server stops (past the shutdown grace) is handed back to the
    queue at once; the next start runs it, and the handed-back run does not count as an attempt."""
    env = {"MAX_CONCURRENT_JOBS": "1", "GPU_BACKTEST_CPU_MEMORY_LIMIT": "64KiB"}
    first = await make_client(grace=0.2, **env)
    first_owner = first.app[K.JOBS].owner
    jid = (await submit(first, SLOW))["job_id"]
    await wait_job(first, jid, lambda d: d["status"] == "running" and d["progress"] > 0)
    await first.close()  # shutdown, 0.2 s grace: the job is interrupted and handed back
    left = await asyncio.to_thread(_job_row, first.app[K.SETTINGS], jid)
    assert (left.status, left.attempts, left.owner, left.lease_expires_at) == ("queued", 0, None, None)
    second = await make_client(**env)
    doc = await wait_job(second, jid, lambda d: d["status"] == "running" and d["progress"] > 0)
    assert doc["attempts"] == 1
    assert [(a["generation"], a["owner"], a["outcome"]) for a in doc["attempts_history"]] == [
        (1, first_owner, "handed_back"), (2, second.app[K.JOBS].owner, "running")]
    await ok_json(await second.delete(f"/backtest/{jid}"))
    doc = await wait_job(second, jid, timeout=20)
    assert (doc["status"], doc["attempts"]) == ("cancelled", 1)
    assert [a["outcome"] for a in doc["attempts_history"]] == ["handed_back", "cancelled"]


async def test_callback_is_signed(make_client: MakeClient, aiohttp_server: Any) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        got.set()
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    server = await aiohttp_server(hook_app)
    client = await make_client(API_KEY_REQUIRED="true", GPU_SERVER_API_KEY=API_KEY,
                               GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.1",  # the receiver is on loopback
                               GPU_BACKTEST_PUBLIC_URL="https://backtest.example.com")
    key = {"X-API-Key": API_KEY}
    doc = await run_job(client, {**SINGLE, "callback_url": str(server.make_url("/hook"))}, key)
    await asyncio.wait_for(got.wait(), 10)
    (body, headers), = received
    base = f"https://backtest.example.com/backtest/{doc['job_id']}"
    assert json.loads(body) == {"job_id": doc["job_id"], "status": "succeeded", "error": None,
                                "links": {"self": base, "results": f"{base}/results"}}
    assert headers["X-Signature"] == sign(body, API_KEY)
    assert headers["Content-Type"] == "application/json"
    doc = await wait_job(client, doc["job_id"], lambda d: d["callback"]["status"] == "delivered", headers=key)
    assert doc["callback"]["url"] == str(server.make_url("/hook")) and doc["callback"]["attempts"] == 1


# --------------------------------------------------------------------------- auth


async def test_auth_required(make_client: MakeClient) -> None:
    client = await make_client(API_KEY_REQUIRED="true", GPU_SERVER_API_KEY=API_KEY)
    good = {"X-API-Key": API_KEY}
    for method, path in [("GET", "/strategies"), ("POST", "/backtest"), ("GET", "/backtest"),
                         ("GET", f"/backtest/{uuid.uuid4().hex}"), ("DELETE", f"/backtest/{uuid.uuid4().hex}"),
                         ("GET", "/gpu/status"), ("GET", "/data/sources"), ("POST", "/data/upload"),
                         ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/nope")]:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}, {"X-API-Key": ""}):
            resp = await client.request(method, path, headers=headers)
            await error_of(resp, 401, "unauthorized")

    for value in ("sécret".encode(), b"s\xe9cret", "秘密".encode(), b"secret\xff"):
        status, headers, body = await raw_request(
            client.port, b"GET /strategies HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-API-Key: "
            + value + b"\r\n\r\n")
        check_error_body(status, headers, body, f"non-ASCII key {value!r}")
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"

    assert (await ok_json(await client.get("/health"))) == {"status": "ok"}
    strategies = await ok_json(await client.get("/strategies", headers=good))
    assert "sma_crossover" in {s["name"] for s in strategies["strategies"]}
    assert (await client.get("/metrics", headers=good)).status == 200
    doc = await run_job(client, SINGLE, good)
    assert (await client.get(f"/backtest/{doc['job_id']}/results", headers=good)).status == 200
    await error_of(await client.get(f"/backtest/{doc['job_id']}/results"), 401, "unauthorized")


async def test_auth_off_needs_no_key(client: CheckedClient) -> None:
    for headers in ({}, {"X-API-Key": "anything"}):
        assert (await client.get("/strategies", headers=headers)).status == 200
        assert (await client.get("/backtest", headers=headers)).status == 200
    assert (await ok_json(await client.get("/health"))) == {"status": "ok"}


# --------------------------------------------------------------------------- 4xx paths


async def test_submit_rejects_bad_requests(client: CheckedClient) -> None:
    err = await error_of(await client.post("/backtest", data=b"{not json",
                                           headers={"Content-Type": "application/json"}), 400, "bad_request")
    assert "malformed JSON" in err["message"]
    await error_of(await client.post("/backtest", data=b"\xff\xfe", headers={"Content-Type": "application/json"}),
                   400, "bad_request")
    await error_of(await client.post("/backtest", data=json.dumps(SINGLE), headers={"Content-Type": "text/plain"}),
                   415, "unsupported_media_type")
    await error_of(await client.post("/backtest", data={"strategy": "sma_crossover"}), 415)  # a form
    await error_of(await client.post("/backtest"), 415)  # no body, no content type
    await error_of(await client.post("/backtest", data=b"[" + b"1," * (1024 * 1024) + b"1]",
                                     headers={"Content-Type": "application/json"}), 413, "payload_too_large")
    # not JSON (RFC 8259): NaN/Infinity, numbers beyond the double range, absurd nesting
    for value in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" + b"0" * 400,
                  b'{"start": 1, "stop": NaN}'):
        body = b'{"strategy": "sma_crossover", "params": {"fast": ' + value + b"}}"
        err = await error_of(await client.post("/backtest", data=body, headers={"Content-Type": "application/json"}),
                             400, "bad_request")
        assert err["message"].startswith("malformed JSON"), (value, err)
    await error_of(await client.post("/backtest", data=b"[" * 100_000, headers={"Content-Type": "application/json"}),
                   400, "bad_request")

    cases: list[tuple[Any, str]] = [
        ({"strategy": "no_such_strategy"}, "strategy"),
        ({"params": {"fast": 5}}, "strategy"),
        ([SINGLE], ""),
        ("sma_crossover", ""),
        ({**SINGLE, "bogus": 1}, "bogus"),
        ({**SINGLE, "params": {"fast": -1, "slow": 50}}, "params.fast"),
        ({**SINGLE, "params": {"fast": [5, "x"], "slow": 50}}, "params.fast[1]"),
        ({**SINGLE, "params": {"fast": [], "slow": 50}}, "params.fast"),
        ({**SINGLE, "params": {"fast": 5.5}}, "params.fast"),
        ({**SINGLE, "params": {"nope": 3}}, "params.nope"),
        ({**SINGLE, "params": {"fast": {"start": 10, "stop": 5}}}, "params.fast.stop"),
        ({**SINGLE, "params": {"fast": 60, "slow": 50}}, "params"),  # empty grid: fast < slow
        ({**SINGLE, "params": {"fast": {"start": 1, "stop": 1000}, "slow": {"start": 2, "stop": 1000}}}, "params"),
        ({**SINGLE, "execution": {"fill": "whenever"}}, "execution.fill"),
        ({**SINGLE, "symbols": []}, "symbols"),
        ({**SINGLE, "start": "2020-01-01", "end": "2019-01-01"}, "end"),
        ({**SINGLE, "output": {"rank_by": "luck"}}, "output.rank_by"),
        ({**SINGLE, "callback_url": "ftp://example.com"}, "callback_url"),
        # nested fields are named by their whole path
        ({**SINGLE, "costs": {"fees": 1.5}}, "costs.fees"),
        ({**SINGLE, "costs": {"nope": 1}}, "costs.nope"),
        ({**SINGLE, "params": {"fast": [5, 10, "x"], "slow": 50}}, "params.fast[2]"),
        ({**SINGLE, "execution": {"size_type": "lots"}}, "execution.size_type"),
        ({**SINGLE, "execution": {"size": 2.0}}, "execution.size"),
        ({**SINGLE, "metrics": {"periods_per_year": 0}}, "metrics.periods_per_year"),
        ({**SINGLE, "output": {"top_k": -1}}, "output.top_k"),
        ({**SINGLE, "output": {"metrics": ["sharpe", "luck"]}}, "output.metrics[1]"),
        ({**SINGLE, "symbols": ["SYN001", "bad/name"]}, "symbols[1]"),
        ({**SINGLE, "adjusted": "yes"}, "adjusted"),
    ]
    for spec, field in cases:
        err = await error_of(await client.post("/backtest", json=spec), 422, "invalid_spec")
        assert err["details"]["field"] == field, (spec, err)
        assert err["details"]["reason"], err
    assert (await ok_json(await client.get("/backtest")))["total"] == 0  # nothing was stored


async def test_overflowing_range_is_422(client: CheckedClient) -> None:
    for fast in ({"start": 1, "stop": 1e308, "step": 1e-10}, {"start": -1e308, "stop": 1e308}):
        err = await error_of(await client.post("/backtest", json={**SINGLE, "params": {"fast": fast}}),
                             422, "invalid_spec")
        assert err["details"]["field"].startswith("params.fast"), err


async def test_unknown_jobs_are_404(client: CheckedClient) -> None:
    for jid in (uuid.uuid4().hex, "nope", uuid.uuid4().hex.upper(), "0" * 33, "x" * 32, "%20"):
        for method, path in (("GET", f"/backtest/{jid}"), ("DELETE", f"/backtest/{jid}"),
                             ("GET", f"/backtest/{jid}/results"), ("GET", f"/backtest/{jid}/results?format=csv")):
            err = await error_of(await client.request(method, path), 404, "not_found")
            assert err["details"]["job_id"] == jid.replace("%20", " "), (method, path, err)


async def test_bad_query_params_are_400(client: CheckedClient) -> None:
    for query, parameter in [("status=bogus", "status"), ("status=", "status"), ("limit=0", "limit"),
                             ("limit=501", "limit"), ("limit=abc", "limit"), ("offset=-1", "offset"),
                             ("offset=", "offset")]:
        err = await error_of(await client.get(f"/backtest?{query}"), 400, "bad_request")
        assert err["details"] == {"parameter": parameter}, (query, err)
    for query, parameter in [("limit=abc", "limit"), ("limit=0", "limit"), ("offset=-5", "offset")]:
        err = await error_of(await client.get(f"/data/symbols?{query}"), 400, "bad_request")
        assert err["details"] == {"parameter": parameter}, (query, err)
    page = await ok_json(await client.get("/backtest?limit=500&offset=0"))
    assert (page["limit"], page["offset"]) == (500, 0)


async def test_routing_errors_use_the_envelope(client: CheckedClient) -> None:
    await error_of(await client.get("/nope"), 404, "not_found")
    resp = await client.put("/backtest")
    await error_of(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}
    await error_of(await client.post("/health"), 405)
    # the client's X-Request-ID is echoed when sane, replaced when not
    resp = await client.get("/nope", headers={"X-Request-ID": "abc-123"})
    assert (await resp.json())["request_id"] == "abc-123" == resp.headers["X-Request-ID"]
    resp = await client.get("/health", headers={"X-Request-ID": "not sane!" * 20})
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])


# --------------------------------------------------------------------------- data


async def test_upload_and_data_endpoints(make_client: MakeClient) -> None:
    client = await make_client(GPU_BACKTEST_MAX_UPLOAD_BYTES="20000")
    symbol = f"UP{uuid.uuid4().hex[:6].upper()}"

    err = await error_of(await client.post("/data/upload", data=upload_form(b"x" * 30_000, symbol=symbol)),
                         413, "payload_too_large")
    assert err["details"]["limit"] == 20_000

    bad = (b"Date,Open,High,Low,Close\n2020-01-01,1,2,0.5,1.5\n2020-01-02,abc,2,0.5,1.5\n"
           b"2020-01-03,1,0.1,0.5,1.5\n2020-01-04,1,2,0.5,1.5\n")
    err = await error_of(await client.post("/data/upload", data=upload_form(bad, symbol=symbol)), 422, "invalid_data")
    problems = err["details"]["problems"]
    assert [(p["row"], p["column"]) for p in problems] == [(2, "Open"), (3, "High")], problems
    assert all(p["message"] for p in problems)
    err = await error_of(await client.post("/data/upload", data=upload_form(b"a,b\n1,2\n", symbol=symbol)),
                         422, "invalid_data")
    assert {p["column"] for p in err["details"]["problems"]} >= {"timestamp", "close"}

    err = await error_of(await client.post("/data/upload", data=upload_form(None, symbol=symbol)), 400, "bad_request")
    assert "file" in err["message"]
    await error_of(await client.post("/data/upload", json={"symbol": symbol}), 415, "unsupported_media_type")
    form = upload_form(bars_csv(5), symbol=symbol)
    form.add_field("file", bars_csv(5), filename="second.csv")
    err = await error_of(await client.post("/data/upload", data=form), 400, "bad_request")
    assert "more than one" in err["message"]
    err = await error_of(await client.post("/data/upload", data=upload_form(bars_csv(5), symbol="S" * 1000)),
                         400, "bad_request")
    assert "symbol" in err["message"]
    await error_of(await client.post("/data/upload", data=upload_form(bars_csv(5), symbol="bad/symbol")), 422)

    listed = await ok_json(await client.get(f"/data/symbols?source=upload&prefix={symbol}"))
    assert listed["symbols"] == []  # nothing stored by the rejected uploads

    csv = bars_csv(300)
    assert len(csv) < 20_000
    stored = await ok_json(await client.post("/data/upload", data=upload_form(csv, symbol=symbol)), 201)
    (entry,) = stored["stored"]
    assert (entry["source"], entry["symbol"], entry["frequency"], entry["rows"]) == ("upload", symbol, "1d", 300)
    listed = await ok_json(await client.get(f"/data/symbols?source=upload&prefix={symbol}"))
    assert [e["symbol"] for e in listed["symbols"]] == [symbol] and listed["total"] == 1
    listed = await ok_json(await client.get("/data/symbols?source=upload&prefix=ZZNOPE"))
    assert listed["symbols"] == [] and listed["total"] == 0  # the total counts what the filters match
    await error_of(await client.get("/data/symbols?frequency=fortnightly"), 422, "invalid_data")

    err = await error_of(await client.get("/data/symbols?source=nope"), 404, "not_found")
    assert err["details"] == {"source": "nope"}

    sources = await ok_json(await client.get("/data/sources"))
    by_name = {s["name"]: s for s in sources["sources"]}
    assert {"synthetic", "upload", "tiingo"} <= set(by_name)
    assert by_name["upload"]["stored_series"] >= 1

    # a backtest on the uploaded bars
    doc = await run_job(client, {"strategy": "sma_crossover", "source": "upload", "symbols": [symbol],
                                 "params": {"fast": [5, 10], "slow": 30}})
    assert doc["info"]["n_bars"] == 300 and doc["info"]["n_columns"] == 2


# --------------------------------------------------------------------------- observability and docs


async def test_metrics_after_traffic(client: CheckedClient) -> None:
    await run_job(client, SINGLE)
    await client.get("/nope")
    await client.get(f"/backtest/{uuid.uuid4().hex}")
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("gpu_backtest_http_requests_total", method="POST", route="/backtest", status="202") == 1
    assert value("gpu_backtest_http_requests_total", method="GET", route="/backtest/{job_id}", status="200") >= 1
    assert value("gpu_backtest_http_requests_total", method="GET", route="/backtest/{job_id}", status="404") == 1
    assert value("gpu_backtest_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value("gpu_backtest_http_request_duration_seconds_count", route="/backtest") == 1
    assert value("gpu_backtest_jobs_submitted_total") == 1
    assert value("gpu_backtest_jobs", state="succeeded") == 1
    assert value("gpu_backtest_jobs", state="queued") == 0
    assert value("gpu_backtest_queue_depth") == 0
    assert value("gpu_backtest_jobs_running_here") == 0
    assert value("gpu_backtest_job_duration_seconds_count", state="succeeded") == 1
    assert value("gpu_backtest_job_duration_seconds_sum", state="succeeded") > 0


async def test_openapi_lists_every_route_and_docs(client: CheckedClient) -> None:
    doc = await ok_json(await client.get("/openapi.json"))
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] and doc["info"]["version"]
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {(route.resource.canonical, route.method) for route in client.app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    assert documented == served
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op.get("summary") and op.get("responses"), (path, method)
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in op.get("parameters", [])), (path, name)
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"])

    resp = await client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert page.lstrip().lower().startswith("<!doctype html") and "swagger-ui" in page


async def test_gpu_status_and_catalogue(client: CheckedClient) -> None:
    status = await ok_json(await client.get("/gpu/status"))
    assert status["available"] is False and status["reason"] and status["backend"] == "cpu"
    assert status["engine_backend"] == "cpu"
    cluster = status["cluster"]
    assert cluster["kind"] == "local" and cluster["scheduler"]
    assert cluster["workers"] and all(w["address"] and w["nthreads"] >= 1 for w in cluster["workers"])

    strategies = (await ok_json(await client.get("/strategies")))["strategies"]
    sma = next(s for s in strategies if s["name"] == "sma_crossover")
    assert {"fast", "slow"} <= {p["name"] for p in sma["params"]}
    assert (await ok_json(await client.get("/health"))) == {"status": "ok"}


async def test_text_no_database_stores_is_422_not_500(client: CheckedClient) -> None:
    """Regression (500s on PostgreSQL found while hunting one on POST /strategies): a spec string
    kept as given that holds U+0000 (PostgreSQL refuses it in JSONB and text) — a date — or a
    callback URL with a lone surrogate (not UTF-8: no database stores it) is 422 naming the field;
    a symbol prefix no symbol can start with lists nothing instead of reaching the database."""
    for field, value in (("start", "2015-01-01\x00"), ("end", "2016-01-01 \x00"),
                         ("callback_url", "https://example.com/\ud800")):
        err = await error_of(await client.post("/backtest", json={**SINGLE, field: value}), 422, "invalid_spec")
        assert err["details"]["field"] == field, err
    for prefix in ("\x00", "SYN\x00", "é"):
        listed = await ok_json(await client.get("/data/symbols", params={"prefix": prefix}))
        assert listed["symbols"] == [] and listed["total"] == 0
