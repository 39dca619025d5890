"""Jobs on a real external cluster: `dask scheduler` + two `dask worker` processes started from
their commands on loopback, and a `gpu-backtest serve` process pointed at it through
DASK_SCHEDULER_ADDRESS. The workers read their partitions from the store; the server only
plans, waits and ranks candidates.

- A sweep over 200 stored symbols (some with gaps, so the run's calendar matters) equals
  `run_backtest` in-process on the same store (1e-12 relative), and `run_backtest(client=…)`.
- Worker loss: a worker process holding partition tasks of a job is SIGKILLed; those tasks
  rerun on a worker and the job's table equals the undisturbed run's.
- A task that keeps failing fails the job with its own error code and message.
- A frozen worker (SIGSTOP): a cancel still takes effect at once, and a job whose tasks stop
  finishing fails with ``task_timeout`` after GPU_BACKTEST_TASK_TIMEOUT_S.
- The market-data and artifact roots in a bucket of a local S3-compatible server (moto).
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gpu_backtest import run_backtest
from gpu_backtest.core.config import Settings
from gpu_backtest.core.marketdata import MarketDataStore
from gpu_backtest.core.synthetic import gbm_panel_frame

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_procs import ExternalCluster, Server, external_cluster, server
from s3_server import S3Server, s3_endpoint, s3_server  # noqa: F401 - pytest fixtures

N_SYMBOLS = 200
N_BARS = 1260
SYMBOLS_PER_PARTITION = 25
SPEC: dict[str, Any] = {
    "strategy": "sma_crossover", "source": "upload",
    "params": {"fast": {"start": 5, "stop": 50, "step": 5}, "slow": {"start": 20, "stop": 200, "step": 20}},
    "costs": {"fees": 0.0005}, "execution": {"fill": "next_open", "sl_stop": 0.1},
    "output": {"top_k": 3},
}


def _store(root: Path) -> None:
    frame = gbm_panel_frame(N_SYMBOLS, N_BARS, seed=7)
    rng = np.random.default_rng(11)
    store = MarketDataStore(root, f"sqlite:///{root.parent / 'jobs.sqlite'}")
    for i, (sym, g) in enumerate(frame.groupby("symbol", sort=True)):
        g = g.drop(columns="symbol")
        if i % 7 == 3:  # some symbols miss bars: the run's calendar is the union
            g = g.drop(index=g.index[rng.choice(len(g), 40, replace=False)])
        if i % 11 == 5:  # some start late
            g = g.iloc[200:]
        store.write("upload", str(sym), "1d", g)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("cluster-data")
    _store(data / "market")
    return {**os.environ, "GPU_BACKTEST_DATA_DIR": str(data), "GPU_BACKTEST_BACKEND": "cpu",
            "GPU_BACKTEST_PARTITION_CELLS": str(SYMBOLS_PER_PARTITION * N_BARS * 90),
            "GPU_SERVER_DEBUG": "false", "API_KEY_REQUIRED": "false"}


@pytest.fixture(scope="module")
def cluster(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalCluster]:
    with external_cluster(env, tmp_path_factory.mktemp("cluster-logs")) as c:
        yield c


@pytest.fixture(scope="module")
def srv(env: dict[str, str], cluster: ExternalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server-logs") / "server.log"
    with server({**env, "DASK_SCHEDULER_ADDRESS": cluster.address}, log) as s:
        yield s


@pytest.fixture(scope="module")
def local_table(env: dict[str, str]) -> pd.DataFrame:
    res = run_backtest(SPEC, settings=Settings.from_env(env), backend="cpu")
    assert res.info["partitions"] == N_SYMBOLS // SYMBOLS_PER_PARTITION
    return res.table


def _results(srv: Server, job_id: str) -> pd.DataFrame:
    status, raw = srv.request("GET", f"/backtest/{job_id}/results?format=parquet")
    assert status == 200
    return pd.read_parquet(io.BytesIO(raw))


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b) == N_SYMBOLS * 90
    assert a["column"].tolist() == b["column"].tolist()  # the same ranking
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False,
                                  rtol=1e-12, atol=0)


def test_sweep_on_external_cluster_equals_in_process(srv: Server, local_table: pd.DataFrame,
                                                     cluster: ExternalCluster, env: dict[str, str]) -> None:
    status, doc = srv.request("POST", "/backtest", SPEC)
    assert status == 202, doc
    job = srv.wait_final(doc["job_id"])
    assert job["status"] == "succeeded", job
    info = job["info"]
    assert info["n_columns"] == N_SYMBOLS * 90 and info["partitions"] == 8
    ran = [r for r in info["ran_on"] if r["stage"] == "partition"]
    assert sum(r["tasks"] for r in ran) == 8
    assert all(r["worker"].startswith("tcp://127.0.0.1:") and r["backend"] == "cpu" for r in ran)
    assert info["strategy_source"]["distribution"] == "gpu-backtest"
    assert_same_table(_results(srv, doc["job_id"]), local_table)
    top = job["top"]
    assert [r["column"] for r in top[:3]] == local_table["column"].head(3).tolist()
    status, details = srv.request("GET", f"/backtest/{doc['job_id']}/details")
    assert status == 200, details
    assert [d["column"] for d in details["details"]] == local_table["column"].head(3).tolist()

    from distributed import Client

    with Client(cluster.address, timeout="30s") as client:
        remote = run_backtest(SPEC, settings=Settings.from_env(env), backend="cpu", client=client)
    assert_same_table(remote.table, local_table)


PORTFOLIO_SPEC: dict[str, Any] = {
    "strategy": "xs_momentum", "source": "upload",
    "params": {"lookback": [63, 126, 252], "skip": [0, 21], "top_n": [10, 20]},
    # daily rebalancing: a combination's weights are 1,260 rows × 200 symbols, so 11 combinations fill a partition
    "portfolio": {"rebalance": "1d", "max_weight": 0.08}, "costs": {"fees": 0.001}, "output": {"top_k": 2},
}


def test_portfolio_job_partitions_by_combinations_and_equals_in_process(srv: Server, env: dict[str, str]) -> None:
    local = run_backtest(PORTFOLIO_SPEC, settings=Settings.from_env(env), backend="cpu")
    assert local.info["partitions"] == 2 and local.info["n_columns"] == 12  # 11 combinations per partition
    status, doc = srv.request("POST", "/backtest", PORTFOLIO_SPEC)
    assert status == 202, doc
    job = srv.wait_final(doc["job_id"])
    assert job["status"] == "succeeded", job
    info = job["info"]
    assert info["mode"] == "portfolio" and info["n_symbols"] == N_SYMBOLS and info["partitions"] == 2
    assert sum(r["tasks"] for r in info["ran_on"] if r["stage"] == "partition") == 2
    remote = _results(srv, doc["job_id"])
    assert remote["column"].tolist() == local.table["column"].tolist()
    pd.testing.assert_frame_equal(remote.drop(columns="symbol").reset_index(drop=True),
                                  local.table.drop(columns="symbol").reset_index(drop=True),
                                  check_dtype=False, rtol=1e-12, atol=0)
    status, details = srv.request("GET", f"/backtest/{doc['job_id']}/details")
    assert status == 200, details
    assert [d["column"] for d in details["details"]] == [d["column"] for d in local.details]
    assert details["details"][0]["holdings"] == local.details[0]["holdings"]


def test_worker_killed_mid_job_tasks_rerun_and_results_equal(srv: Server, local_table: pd.DataFrame,
                                                             cluster: ExternalCluster) -> None:
    from distributed import Client

    with Client(cluster.address, timeout="30s") as client:
        status, doc = srv.request("POST", "/backtest", SPEC)
        assert status == 202
        victim, keys = None, []
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            for addr, held in client.processing().items():
                mine = [k for k in held if str(k).startswith("partition_stage-")]
                if mine:
                    victim, keys = addr, mine
                    break
            else:
                time.sleep(0.02)
        assert victim is not None, "no partition task was seen running"
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        job = srv.wait_final(doc["job_id"])
        assert job["status"] == "succeeded", job

        def story(dask_scheduler: Any, keys: list[str] = keys) -> list[Any]:
            return [list(t) for t in dask_scheduler.story(*keys)]

        transitions = client.run_on_scheduler(story)
    for key in keys:  # each task the killed worker held was scheduled again
        went = [t for t in transitions if t[0] == key and t[2] == "processing"]
        assert len(went) >= 2, (key, transitions)
    assert_same_table(_results(srv, doc["job_id"]), local_table)


def test_a_task_that_keeps_failing_fails_the_job_with_its_own_error(srv: Server, env: dict[str, str]) -> None:
    """A symbol whose file vanished after it was catalogued: the partition task's DataError
    (code and message naming the symbol) is the job's error, after the task's retries."""
    data = Path(env["GPU_BACKTEST_DATA_DIR"])
    store = MarketDataStore(data / "market", f"sqlite:///{data / 'jobs.sqlite'}")
    frame = gbm_panel_frame(1, 300, seed=5)
    store.write("upload", "GONE", "1d", frame.drop(columns="symbol"))
    store.path("upload", "GONE", "1d").unlink()
    try:
        status, doc = srv.request("POST", "/backtest", {**SPEC, "symbols": ["GONE"]})
        assert status == 202
        job = srv.wait_final(doc["job_id"])
    finally:
        store.delete("upload", "GONE", "1d")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_data" and "GONE" in job["error"]["message"], job["error"]


def _frozen_worker_pid(cluster: ExternalCluster, srv: Server, job_id: str) -> int:
    """Wait until a partition task of ``job_id`` runs, then SIGSTOP its (only) worker; its pid."""
    from distributed import Client

    with Client(cluster.address, timeout="30s") as client:
        deadline = time.monotonic() + 120
        while not any(str(k).startswith("partition_stage-") for held in client.processing().values()
                      for k in held):
            assert time.monotonic() < deadline, "no partition task was seen running"
            time.sleep(0.02)
        (pid,) = client.run(os.getpid).values()
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_a_frozen_worker_cancel_works_and_stuck_tasks_time_out(env: dict[str, str],
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    logs = tmp_path_factory.mktemp("frozen")
    with external_cluster(env, logs, n_workers=1) as cluster, \
            server({**env, "DASK_SCHEDULER_ADDRESS": cluster.address, "GPU_BACKTEST_TASK_TIMEOUT_S": "10"},
                   logs / "server.log") as srv:
        # 1. cancel a job whose only worker is frozen: it is cancelled without waiting for the worker
        status, doc = srv.request("POST", "/backtest", SPEC)
        assert status == 202
        pid = _frozen_worker_pid(cluster, srv, doc["job_id"])
        try:
            assert srv.request("DELETE", f"/backtest/{doc['job_id']}")[0] == 200
            job = srv.wait_final(doc["job_id"], timeout=8)  # well inside the task timeout
            assert job["status"] == "cancelled", job
        finally:
            os.kill(pid, signal.SIGCONT)
        # 2. a job whose tasks stop finishing fails with task_timeout instead of hanging for good
        status, doc = srv.request("POST", "/backtest", {**SPEC, "output": {"top_k": 2}})
        assert status == 202
        pid = _frozen_worker_pid(cluster, srv, doc["job_id"])
        try:
            job = srv.wait_final(doc["job_id"], timeout=60)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert job["status"] == "failed" and job["error"]["code"] == "task_timeout", job
        assert "GPU_BACKTEST_TASK_TIMEOUT_S" in job["error"]["message"]


def _multipart(fields: dict[str, str], filename: str, payload: bytes) -> tuple[bytes, str]:
    boundary = "gbt" + os.urandom(8).hex()
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def test_market_data_in_a_bucket_upload_then_workers_read_it(s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    """Market root and artifact root in a bucket of a local S3-compatible server (moto): an upload
    over HTTP lands in the bucket; a job's workers read their partitions from it and write the
    table's pieces to it; the result equals the in-process run on the same bucket."""
    import urllib.request

    data = tmp_path / "data"
    env = {**os.environ, **s3_server.env, "GPU_BACKTEST_DATA_DIR": str(data), "GPU_BACKTEST_BACKEND": "cpu",
           "GPU_BACKTEST_MARKET_ROOT": s3_server.uri, "GPU_BACKTEST_ARTIFACT_ROOT": f"s3://{s3_server.bucket}/artifacts",
           "GPU_BACKTEST_PARTITION_CELLS": str(10 * 500 * 90), "GPU_SERVER_DEBUG": "false"}
    frame = gbm_panel_frame(30, 500, seed=21)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    spec = {**SPEC, "symbols": sorted(frame["symbol"].unique().tolist())}
    with external_cluster(env, tmp_path / "logs") as c, \
            server({**env, "DASK_SCHEDULER_ADDRESS": c.address}, tmp_path / "server.log") as srv:
        body, ctype = _multipart({"source": "upload", "frequency": "1d"}, "universe.parquet", buf.getvalue())
        req = urllib.request.Request(srv.url + "/data/upload", data=body, method="POST",
                                     headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=120) as resp:
            assert resp.status in (200, 201)
        keys = s3_server.keys()
        assert {f"market/upload/1d/symbol={s}" for s in spec["symbols"]} <= {k.rsplit("/", 1)[0] for k in keys}
        status, doc = srv.request("POST", "/backtest", spec)
        assert status == 202, doc
        job = srv.wait_final(doc["job_id"])
        assert job["status"] == "succeeded", job
        assert job["info"]["partitions"] == 3
        run_dir = f"artifacts/{doc['job_id']}/g1"  # this run's location (lease generation 1)
        pieces = [k for k in s3_server.keys() if k.startswith(f"artifacts/{doc['job_id']}/")]
        assert sorted(pieces) == [f"{run_dir}/{n}" for n in
                                  ("details.json", "manifest.json", "part-00000.parquet", "part-00001.parquet",
                                   "part-00002.parquet")]
        remote = _results(srv, doc["job_id"])
    local = run_backtest(spec, settings=Settings.from_env(env), backend="cpu").table
    assert len(remote) == len(local) == 30 * 90
    pd.testing.assert_frame_equal(remote, local, check_dtype=False, rtol=1e-12, atol=0)
