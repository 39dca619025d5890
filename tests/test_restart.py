"""A server killed mid-job (SIGKILL to its whole process group, Dask workers included) and
started again on the same data directory and job database loses no job and writes no result
twice: once the dead server's lease has expired, the interrupted job is re-run (attempts == 2),
the queued ones run once, and every succeeded job has exactly one artifact (the location of
the run that finished it) whose content matches its summary.

Both job stores: SQLite (the default, in the data directory) and PostgreSQL
(``TEST_DATABASE_URL`` or ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``, in a fresh
schema selected with ``search_path``, dropped afterwards). As in tests/test_jobstore.py, an
unreachable PostgreSQL fails the test unless ``GPU_BACKTEST_SKIP_POSTGRES=1``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gpu_backtest.web.client import BacktestClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_schema import fresh_pg_schema
from test_client import ServerProcess

# one column per chunk (2,608 bars × 48 B > 64 KiB): a 270-column sweep is 270 Dask tasks, a few seconds
ENV = {"MAX_CONCURRENT_JOBS": "1", "GPU_BACKTEST_CPU_MEMORY_LIMIT": "64KiB",
       "GPU_BACKTEST_LEASE_S": "4", "GPU_BACKTEST_HEARTBEAT_S": "0.5"}  # the dead server's lease: 4 s
SWEEP = {"fast": {"start": 5, "stop": 50, "step": 5}, "slow": {"start": 20, "stop": 200, "step": 20}}  # 90 combos
SPECS = [
    {"strategy": "sma_crossover", "source": "synthetic", "symbols": ["SYN000", "SYN001", "SYN002"], "params": SWEEP},
    {"strategy": "ema_crossover", "source": "synthetic", "symbols": ["SYN003", "SYN004"],
     "params": {"fast": [5, 10, 20], "slow": [50, 100]}},
    {"strategy": "sma_crossover", "source": "synthetic", "symbols": ["SYN005"], "params": {"fast": 10, "slow": 50}},
    {"strategy": "rsi_reversion", "source": "synthetic", "symbols": ["SYN006", "SYN007"], "params": {}},
    {"strategy": "sma_crossover", "source": "synthetic", "symbols": ["SYN008"], "params": SWEEP},
]
DEADLINE_S = 90  # per database: everything (two starts, the runs, the checks) within this


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """DATABASE_URL of a fresh schema on the test PostgreSQL server (dropped afterwards)."""
    with fresh_pg_schema("gbt_restart") as pg:
        yield pg.url


def _wait_final(client: BacktestClient, ids: list[str], deadline: float) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(ids):
        assert time.monotonic() < deadline, f"jobs not final in time: {set(ids) - set(done)}"
        for job_id in ids:
            if job_id not in done:
                doc = client.status(job_id)
                if doc["status"] in ("succeeded", "failed", "cancelled"):
                    done[job_id] = doc
        time.sleep(0.1)
    return done


def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == pytest.approx(b, rel=1e-9, abs=1e-12)


def _check_artifact(job: dict[str, Any], artifacts: Path) -> None:
    """The artifact is the pieces + manifest of the job's last run (nothing of an earlier run is
    left) and agrees with its summary (size, ranking, metrics)."""
    from gpu_backtest.core.artifacts import Artifact

    runs = sorted(p.name for p in (artifacts / job["job_id"]).iterdir())
    assert runs == [f"g{job['attempts_history'][-1]['generation']}"], runs
    path = artifacts / job["job_id"] / runs[0]
    assert (path / "manifest.json").is_file()
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith("part-")) == ["details.json", "manifest.json"]
    table = Artifact.open(str(path)).read_all()
    info = job["info"]
    assert len(table) == info["n_columns"] == info["n_symbols"] * info["n_combinations"]
    top = job["top"]  # the compact document's best rows (10 by default)
    assert top and len(top) == min(len(table), 10)
    params = [c for c in top[0]["params"]]
    for row in top:
        r = table[table["rank"] == row["rank"]]
        assert len(r) == 1, f"rank {row['rank']} appears {len(r)} times in {path.name}"
        r = r.iloc[0]
        assert r["symbol"] == row["symbol"] and int(r["column"]) == row["column"]
        for p in params:
            assert _same(row["params"][p], r[p].item())
        for name, value in row["metrics"].items():
            assert _same(value, r[name].item()), (job["job_id"], row["rank"], name)


def _restart_scenario(tmp_path: Path, env: dict[str, str]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    data = tmp_path / "data"
    first = ServerProcess(data, env).start()
    try:
        client = first.client(timeout=10)
        ids = [client.submit(spec)["job_id"] for spec in SPECS]
        victim = ids[0]
        while True:  # the first job is running and has done some chunks
            assert time.monotonic() < deadline - 60, f"job never got going:\n{first.log_tail()}"
            doc = client.status(victim)
            assert doc["status"] in ("queued", "running"), doc
            if doc["status"] == "running" and doc["progress"] > 0:
                break
            time.sleep(0.05)
        assert [client.status(i)["status"] for i in ids[1:]] == ["queued"] * (len(ids) - 1)
    finally:
        first.kill()  # SIGKILL: no shutdown of any kind, Dask worker processes too
    assert first.proc is not None and first.proc.returncode == -9

    killed_at = time.time()
    second = ServerProcess(data, env, log_name="server2.log").start()
    try:
        client = second.client(timeout=10)
        final = _wait_final(client, ids, deadline)
        listed = client.jobs(limit=100)
        assert listed["total"] == len(ids) and {j["job_id"] for j in listed["jobs"]} == set(ids)  # none lost/added
        assert {i: final[i]["status"] for i in ids} == dict.fromkeys(ids, "succeeded"), second.log_tail()
        assert final[victim]["attempts"] == 2
        assert pd.Timestamp(final[victim]["timings"]["started_at"]).timestamp() >= killed_at  # its second run
        assert [final[i]["attempts"] for i in ids[1:]] == [1] * (len(ids) - 1)
        history = [(a["generation"], a["owner"].split(":")[1], a["outcome"]) for a in final[victim]["attempts_history"]]
        assert history == [(1, str(first.proc.pid), "lease_expired"), (2, str(second.proc.pid), "succeeded")]
        artifacts = data / "artifacts"
        files = sorted(p.name for p in artifacts.iterdir())
        assert files == sorted(ids), files  # one result each, no leftovers
        for i in ids:
            _check_artifact(final[i], artifacts)
            page = client.results(i, limit=1)
            assert page["total"] == final[i]["info"]["n_columns"]
    finally:
        second.stop()


def test_restart_after_sigkill_sqlite(tmp_path: Path) -> None:
    _restart_scenario(tmp_path, dict(ENV))
    assert (tmp_path / "data" / "jobs.sqlite").exists()


@pytest.mark.postgres
def test_restart_after_sigkill_postgresql(tmp_path: Path, pg_database_url: str) -> None:
    _restart_scenario(tmp_path, {**ENV, "DATABASE_URL": pg_database_url})
    assert not (tmp_path / "data" / "jobs.sqlite").exists()  # the jobs really were in PostgreSQL
