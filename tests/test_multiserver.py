"""Two real servers (``gpu-backtest serve`` processes, each with its own Dask cluster) on one job
database and one data directory (artifacts, market data):

- SIGKILL one mid-run: every job reaches one final state; the survivor takes over the dead
  server's running jobs once their leases expire; each job's history names its runs' owners.
  PostgreSQL, and one SQLite file (servers on one machine).
- Fencing: SIGSTOP a server while it runs a job until its lease has expired and the other
  server has taken the job over, then SIGCONT it: it stops that job's work, its run writes
  nothing, and the job has one result, one artifact, the survivor's. PostgreSQL (the same
  code on SQLite: tests/test_leases.py fences a JobManager on both databases).
- Rolling restart: each of the two servers restarted in turn, three times, while jobs run
  (SIGTERM: a clean shutdown drains its jobs), on a shared external Dask cluster: no job
  fails or runs twice. PostgreSQL.

Every wait is bounded; every process group is killed at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpu_backtest.web.client import BacktestClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_procs import external_cluster
from pg_schema import fresh_pg_schema
from test_client import ServerProcess

LEASE_S, HEARTBEAT_S = 6.0, 0.5
ENV = {"MAX_CONCURRENT_JOBS": "3", "GPU_BACKTEST_CPU_MEMORY_LIMIT": "64KiB",  # one column per Dask task
       "GPU_BACKTEST_LEASE_S": str(LEASE_S), "GPU_BACKTEST_HEARTBEAT_S": str(HEARTBEAT_S)}
SWEEP = {"fast": {"start": 5, "stop": 50, "step": 5}, "slow": [200]}  # 10 combinations: 10 Dask tasks a symbol
FINAL = ("succeeded", "failed", "cancelled")


def spec(i: int, n_symbols: int = 1) -> dict[str, Any]:
    return {"strategy": "sma_crossover", "source": "synthetic",
            "symbols": [f"SYN{(i + k) % 50:03d}" for k in range(n_symbols)], "params": SWEEP}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Environment naming the shared job database (SQLite: the data directory's file)."""
    if request.param == "sqlite":
        yield {}
    else:
        with fresh_pg_schema("gbt_multi") as pg:
            yield {"DATABASE_URL": pg.url}


@pytest.fixture
def pg_env() -> Iterator[dict[str, str]]:
    with fresh_pg_schema("gbt_multi") as pg:
        yield {"DATABASE_URL": pg.url}


def start_all(servers: list[ServerProcess]) -> None:
    """Start servers at once (their migrations meet at the lock); each waits for /health."""
    errors: list[BaseException] = []

    def go(s: ServerProcess) -> None:
        try:
            s.start(timeout=120)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors


def pid_of(owner: str) -> int:
    """The process id in an owner name ``<host>:<pid>:<random>``."""
    return int(owner.rsplit(":", 2)[1])


def runs(doc: dict[str, Any]) -> list[tuple[int, int, str]]:
    """A job's history as (generation, owner pid, outcome)."""
    return [(a["generation"], pid_of(a["owner"]), a["outcome"]) for a in doc["attempts_history"]]


def wait_until(what: Any, deadline: float, message: Any) -> Any:
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.1)


def wait_final(client: BacktestClient, ids: list[str], deadline: float, why: Any = "") -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(ids):
        assert time.monotonic() < deadline, f"jobs not final in time: {set(ids) - set(done)}\n" + (
            why() if callable(why) else why)
        for job_id in ids:
            if job_id not in done:
                doc = client.status(job_id)
                if doc["status"] in FINAL:
                    done[job_id] = doc
        time.sleep(0.2)
    return done


def running_on(client: BacktestClient, pid: int) -> list[str]:
    """Jobs running now whose current run belongs to the server with ``pid`` and has made progress."""
    out = []
    for job in client.jobs(status="running", limit=100)["jobs"]:
        doc = client.status(job["job_id"])
        hist = runs(doc)
        if doc["status"] == "running" and doc["progress"] > 0 and hist and hist[-1][1:] == (pid, "running"):
            out.append(doc["job_id"])
    return out


def artifact_runs(data: Path, job_id: str) -> list[str]:
    return sorted(p.name for p in (data / "artifacts" / job_id).iterdir())


def check_one_artifact(client: BacktestClient, data: Path, doc: dict[str, Any]) -> None:
    """One result: the last run's location, complete, holding every column of the job."""
    last = doc["attempts_history"][-1]["generation"]
    assert artifact_runs(data, doc["job_id"]) == [f"g{last}"]
    assert (data / "artifacts" / doc["job_id"] / f"g{last}" / "manifest.json").is_file()
    assert client.results(doc["job_id"], limit=1)["total"] == doc["info"]["n_columns"]


def logs(*servers: ServerProcess) -> str:
    return "\n".join(f"--- {s.log_path.name}\n{s.log_tail(40)}" for s in servers)


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_one_of_two_servers(tmp_path: Path, db_env: dict[str, str]) -> None:
    deadline = time.monotonic() + 150
    data = tmp_path / "data"
    a = ServerProcess(data, {**ENV, **db_env}, log_name="a.log")
    b = ServerProcess(data, {**ENV, **db_env}, log_name="b.log")
    try:
        start_all([a, b])
        assert a.proc and b.proc
        ca, cb = a.client(timeout=10), b.client(timeout=10)
        ids = [(ca if i % 2 else cb).submit(spec(i))["job_id"] for i in range(20)]
        victims = wait_until(lambda: running_on(cb, a.proc.pid), deadline - 90,  # type: ignore[union-attr]
                             lambda: "server A never ran a job\n" + logs(a, b))
        a.kill()  # SIGKILL the server and its Dask processes: no shutdown of any kind
        killed_at = time.monotonic()
        killed_wall = time.time()
        assert a.proc.returncode == -9
        final = wait_final(cb, ids, deadline, lambda: logs(a, b))
        took_over_after = time.monotonic() - killed_at

        listed = cb.jobs(limit=100)
        assert listed["total"] == 20 and {j["job_id"] for j in listed["jobs"]} == set(ids)
        assert {i: final[i]["status"] for i in ids} == dict.fromkeys(ids, "succeeded"), logs(a, b)
        pa, pb = a.proc.pid, b.proc.pid
        taken_over = []
        for i in ids:
            doc = final[i]
            if runs(doc)[0][1:] == (pa, "lease_expired"):  # running on A when it died: B took it over
                taken_over.append(i)
                assert runs(doc) == [(1, pa, "lease_expired"), (2, pb, "succeeded")], runs(doc)
                assert doc["attempts"] == 2
                started = dt.datetime.fromisoformat(doc["attempts_history"][1]["started_at"]).timestamp()
                assert started >= killed_wall + LEASE_S / 2, (started, killed_wall)  # not before A's lease ran out
            else:  # one run, by either server, never twice
                assert [(g, o) for g, _, o in runs(doc)] == [(1, "succeeded")], runs(doc)
                assert runs(doc)[0][1] in (pa, pb) and doc["attempts"] == 1
                if runs(doc)[0][1] == pa:  # A finished it before it died
                    assert dt.datetime.fromisoformat(doc["attempts_history"][0]["ended_at"]).timestamp() <= killed_wall
            check_one_artifact(cb, data, doc)
        assert set(victims) <= set(taken_over), (victims, taken_over)
        assert {runs(final[i])[-1][1] for i in ids} >= {pb}
        assert took_over_after < 140
    finally:
        a.kill()
        b.kill()


# --------------------------------------------------------------------------- fencing (SIGSTOP)


@pytest.mark.postgres
def test_a_paused_server_is_fenced_off(tmp_path: Path, pg_env: dict[str, str]) -> None:
    deadline = time.monotonic() + 150
    data = tmp_path / "data"
    env = {**ENV, **pg_env, "MAX_CONCURRENT_JOBS": "1"}
    one = ServerProcess(data, env, log_name="a.log")
    two = ServerProcess(data, env, log_name="b.log")
    try:
        start_all([one, two])
        by_pid = {s.proc.pid: s for s in (one, two) if s.proc}
        job_id = one.client(timeout=10).submit(spec(0, n_symbols=5))["job_id"]  # 50 tasks: time to pause in
        # whichever server took the job is paused; the other survives
        first = wait_until(lambda: (h := runs(one.client(timeout=10).status(job_id))) and h[0][1], deadline - 100,
                           lambda: "nobody ran the job\n" + logs(one, two))
        paused, survivor = by_pid[first], by_pid[next(p for p in by_pid if p != first)]
        assert paused.proc and survivor.proc
        cp, cs = paused.client(timeout=10), survivor.client(timeout=10)
        wait_until(lambda: job_id in running_on(cs, paused.proc.pid), deadline - 100,  # type: ignore[union-attr]
                   lambda: "the job never got going\n" + logs(paused, survivor))
        paused._signal_group(signal.SIGSTOP)  # the server and its Dask processes freeze mid-run
        try:
            wait_until(lambda: runs(doc := cs.status(job_id))[-1][1:] == (survivor.proc.pid, "running")  # type: ignore[union-attr]
                       and doc["progress"] > 0, deadline - 60,
                       lambda: "the job was never taken over\n" + logs(paused, survivor))
            doc = cs.status(job_id)
            assert runs(doc) == [(1, paused.proc.pid, "lease_expired"), (2, survivor.proc.pid, "running")]
        finally:
            paused._signal_group(signal.SIGCONT)  # it wakes up believing it runs the job
        wait_until(lambda: f"lost the lease of job {job_id}" in paused.log_path.read_text(errors="replace"),
                   deadline - 40, lambda: "the paused server did not notice\n" + logs(paused, survivor))
        final = wait_final(cs, [job_id], deadline, lambda: logs(paused, survivor))[job_id]
        assert final["status"] == "succeeded" and final["attempts"] == 2, final["error"]
        assert runs(final) == [(1, paused.proc.pid, "lease_expired"), (2, survivor.proc.pid, "succeeded")]
        wait_until(lambda: artifact_runs(data, job_id) == ["g2"], deadline - 5,  # its run's files are gone
                   lambda: f"{artifact_runs(data, job_id)}\n" + logs(paused, survivor))
        check_one_artifact(cs, data, final)
        assert cp.status(job_id) == final  # nothing of the paused run was written
        # the paused server is healthy again and runs new jobs
        small = cp.submit({**spec(9), "params": {"fast": 10, "slow": 50}})["job_id"]
        assert wait_final(cp, [small], deadline, lambda: logs(paused, survivor))[small]["status"] == "succeeded"
        assert "Traceback" not in paused.log_path.read_text(errors="replace")
    finally:
        for s in (one, two):
            s._signal_group(signal.SIGCONT)
            s.kill()


# --------------------------------------------------------------------------- rolling restart


def _rolling_step(old: ServerProcess, new: ServerProcess, timeout: float = 120) -> threading.Thread:
    """SIGTERM ``old`` (the server process only: it drains — finishes its running jobs — closes
    its Dask client and exits) while ``new`` starts; returns once ``new`` answers, with a thread
    that waits for ``old`` to exit."""
    assert old.proc is not None
    os.kill(old.proc.pid, signal.SIGTERM)
    drain = threading.Thread(target=old.proc.wait, args=(timeout,))
    drain.start()
    new.start(timeout=timeout)
    return drain


@pytest.mark.postgres
def test_rolling_restarts_never_fail_or_repeat_a_job(tmp_path: Path, pg_env: dict[str, str]) -> None:
    """Two servers on one Dask cluster (a scheduler and a worker process, as deployed): each is
    restarted in turn, three times; the replacement starts while the old one drains."""
    deadline = time.monotonic() + 150
    data = tmp_path / "data"
    worker_env = {**os.environ, "GPU_BACKTEST_DATA_DIR": str(data), "GPU_BACKTEST_BACKEND": "cpu",
                  "GPU_BACKTEST_CPU_MEMORY_LIMIT": "64KiB"}
    with external_cluster(worker_env, tmp_path / "cluster", n_workers=1, nthreads=2) as cluster:
        env = {**ENV, **pg_env, "DASK_SCHEDULER_ADDRESS": cluster.address, "GPU_BACKTEST_LEASE_S": "15",
               "GPU_BACKTEST_HEARTBEAT_S": "1", "GPU_BACKTEST_SHUTDOWN_GRACE_S": "90"}  # drains finish their jobs
        servers = {"a": ServerProcess(data, env, log_name="a0.log"),
                   "b": ServerProcess(data, env, log_name="b0.log")}
        every = list(servers.values())
        ids: list[str] = []
        drains: list[threading.Thread] = []
        try:
            start_all(every)

            def submit(k: int) -> None:
                live = [s for s in servers.values() if s.proc and s.proc.poll() is None]
                for _ in range(k):
                    n = len(ids)
                    ids.append(live[n % len(live)].client(timeout=10).submit(spec(n))["job_id"])

            submit(4)
            for round_ in range(1, 4):
                for name in ("a", "b"):
                    submit(3)
                    wait_until(lambda: servers["a"].client(timeout=10).jobs(status="running")["total"] > 0,
                               deadline - 60, lambda: "no job running\n" + logs(*every))
                    new = ServerProcess(data, env, log_name=f"{name}{round_}.log")
                    every.append(new)
                    drains.append(_rolling_step(servers[name], new))
                    servers[name] = new
            final = wait_final(servers["a"].client(timeout=10), ids, deadline, lambda: logs(*every))
            for d in drains:
                d.join(60)
            assert [s.proc.returncode for s in every[:6] if s.proc] == [0] * 6, logs(*every)  # clean exits
            pids = {s.proc.pid for s in every if s.proc}
            assert len(pids) == 8
            for i in ids:
                doc = final[i]
                assert doc["status"] == "succeeded" and doc["attempts"] == 1, (doc["error"], runs(doc))
                (only,) = runs(doc)  # ran once: no hand-back, no lost lease
                assert only[0] == 1 and only[2] == "succeeded" and only[1] in pids
            ran_by = {runs(final[i])[0][1] for i in ids}
            assert len(ran_by) >= 4, ran_by  # the jobs really were spread over the restarted servers
        finally:
            for s in every:
                s.kill()
