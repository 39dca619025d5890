"""Job leases on SQLite and PostgreSQL: the store's conditional statements, and the JobManager's
heartbeat, fencing and hand-back with a stand-in engine (no cluster), in seconds.

Several `JobStore` objects on one database stand for several servers. A lease of 0 seconds
has expired as soon as it is taken (what a dead or paused server's lease becomes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update

from gpu_backtest.core import artifacts
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import Cancelled
from gpu_backtest.core.jobs import JobManager
from gpu_backtest.core.jobstore import Job, JobStore, jobs_table, request_hash

sys.path.insert(0, str(Path(__file__).resolve().parent))

SPEC = {"strategy": "sma_crossover", "symbols": ["SYN001"], "params": {"fast": 10, "slow": 50}}
StoreFactory = Callable[[], JobStore]




def _submit(store: JobStore, n: int = 1) -> list[Job]:
    return [store.create({**SPEC, "n": i}, request_hash({**SPEC, "n": i})) for i in range(n)]


def _history(store: JobStore, job_id: str) -> list[tuple[int, str, str]]:
    return [(a.generation, a.owner, a.outcome) for a in store.attempts_history(job_id)]


# --------------------------------------------------------------------------- the store


def test_claim_takes_a_lease_and_records_the_run(store: JobStore) -> None:
    job = _submit(store)[0]
    assert (job.lease_generation, job.lease_expires_at) == (0, None) and store.attempts_history(job.id) == []
    before = dt.datetime.now(dt.UTC)
    claimed = store.claim_next("server-a", lease_s=30)
    assert claimed is not None and claimed.owner == "server-a" and claimed.lease_generation == 1
    assert claimed.lease_expires_at is not None and claimed.heartbeat_at is not None
    # the database's clock on PostgreSQL: allow for a little skew against this process
    assert before + dt.timedelta(seconds=25) < claimed.lease_expires_at < before + dt.timedelta(seconds=40)
    (attempt,) = store.attempts_history(job.id)
    assert (attempt.generation, attempt.owner, attempt.outcome, attempt.ended_at) == (1, "server-a", "running", None)
    assert store.recover() == {"requeued": 0, "failed": 0, "cancelled": 0, "alive": 1}  # a live lease is left alone


def test_heartbeat_renews_only_the_leases_still_held(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    _submit(a, 3)
    c1 = a.claim_next("server-a", lease_s=30)
    c2 = a.claim_next("server-a", lease_s=30)
    c3 = a.claim_next("server-a", lease_s=0)  # its lease has run out
    assert c1 and c2 and c3
    first = a.get(c1.id).lease_expires_at  # type: ignore[union-attr]
    time.sleep(0.05)
    held = {c1.id: 1, c2.id: 1, c3.id: 1}
    assert a.renew_leases("server-a", held, lease_s=60) == {c1.id, c2.id}
    assert a.get(c1.id).lease_expires_at > first  # type: ignore[operator, union-attr]
    assert a.renew_leases("server-a", {c1.id: 2}, lease_s=60) == set()  # another generation
    assert b.renew_leases("server-b", held, lease_s=60) == set()  # another owner
    assert a.renew_leases("server-a", {}, lease_s=60) == set()
    assert b.recover() == {"requeued": 1, "failed": 0, "cancelled": 0, "alive": 2}
    assert a.get(c3.id).status == "queued"  # type: ignore[union-attr]


def test_a_lost_lease_fences_every_write_of_the_old_holder(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    job = _submit(a)[0]
    mine = a.claim_next("server-a", lease_s=0)  # server A pauses: its lease expires
    assert mine is not None and mine.lease_generation == 1
    assert not a.update_progress(job.id, 0.5, "late", owner="server-a", generation=1)  # expired: refused already
    assert not a.finish(job.id, "succeeded", {"info": {}}, artifact_path="/a", owner="server-a", generation=1)
    assert b.recover() == {"requeued": 1, "failed": 0, "cancelled": 0, "alive": 0}
    theirs = b.claim_next("server-b", lease_s=30)
    assert theirs is not None and theirs.id == job.id and theirs.lease_generation == 2 and theirs.attempts == 2
    # A comes back: every write is refused (owner, generation and lease are conditions of each)
    assert a.renew_leases("server-a", {job.id: 1}, lease_s=30) == set()
    assert not a.update_progress(job.id, 0.9, "stale", owner="server-a", generation=1)
    assert not a.finish(job.id, "succeeded", {"info": {"by": "a"}}, artifact_path="/a", owner="server-a",
                        generation=1)
    assert not a.finish(job.id, "failed", error={"code": "x", "message": "y"}, owner="server-b", generation=1)
    assert b.update_progress(job.id, 0.5, "sweep", owner="server-b", generation=2)
    assert b.finish(job.id, "succeeded", {"info": {"by": "b"}}, artifact_path="/b", owner="server-b", generation=2)
    done = a.get(job.id)
    assert done is not None and done.status == "succeeded" and done.summary == {"info": {"by": "b"}}
    assert done.artifact_path == "/b" and done.owner == "server-b" and done.lease_expires_at is None
    assert _history(a, job.id) == [(1, "server-a", "lease_expired"), (2, "server-b", "succeeded")]
    assert all(x.ended_at is not None for x in a.attempts_history(job.id))


def test_the_same_owner_is_fenced_by_generation(store: JobStore) -> None:
    job = _submit(store)[0]
    store.claim_next("server-a", lease_s=0)
    store.recover()
    again = store.claim_next("server-a", lease_s=30)  # the same server takes it again: generation 2
    assert again is not None and again.lease_generation == 2
    assert not store.update_progress(job.id, 0.5, owner="server-a", generation=1)
    assert not store.finish(job.id, "succeeded", owner="server-a", generation=1)
    assert store.finish(job.id, "succeeded", owner="server-a", generation=2)


def test_hand_back_requeues_at_once_without_counting_the_attempt(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    plain, cancelling, other = _submit(a, 3)
    for _ in range(3):
        a.claim_next("server-a", lease_s=30)
    a.request_cancel(cancelling.id)
    assert a.hand_back("server-a", {plain.id: 2}) == {}  # another generation: nothing
    assert b.hand_back("server-b", {plain.id: 1}) == {}  # another owner: nothing
    assert a.hand_back("server-a", {plain.id: 1, cancelling.id: 1}) == {plain.id: "queued",
                                                                        cancelling.id: "cancelled"}
    back = a.get(plain.id)
    assert back is not None and back.status == "queued" and back.attempts == 0 and back.owner is None
    assert back.lease_expires_at is None and back.started_at is None
    assert a.get(cancelling.id).status == "cancelled"  # type: ignore[union-attr]
    assert a.get(other.id).status == "running"  # type: ignore[union-attr]
    assert not a.finish(plain.id, "succeeded", owner="server-a", generation=1)  # handed back: not A's any more
    again = b.claim_next("server-b", lease_s=30)
    assert again is not None and again.id == plain.id and again.attempts == 1 and again.lease_generation == 2
    assert _history(a, plain.id) == [(1, "server-a", "handed_back"), (2, "server-b", "running")]
    assert _history(a, cancelling.id) == [(1, "server-a", "cancelled")]


def test_servers_recovering_at_once_act_once(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(4)]
    jobs = _submit(stores[0], 3)
    for _ in jobs:
        stores[0].claim_next("dead", lease_s=0)
    barrier = threading.Barrier(len(stores))
    counts: list[dict[str, int]] = []

    def recover(s: JobStore) -> None:
        barrier.wait()
        counts.append(s.recover())

    threads = [threading.Thread(target=recover, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(c["requeued"] for c in counts) == 3
    for j in jobs:
        assert _history(stores[0], j.id) == [(1, "dead", "lease_expired")]


def test_too_many_lost_leases_fail_the_job_and_history_is_deleted_with_it(store: JobStore) -> None:
    job = _submit(store)[0]
    for _ in range(2):
        store.claim_next("flaky", lease_s=0)
        store.recover(max_attempts=2)
    failed = store.get(job.id)
    assert failed is not None and failed.status == "failed" and failed.error["code"] == "too_many_attempts"  # type: ignore[index]
    assert "lease" in failed.error["message"]  # type: ignore[index]
    assert [o for _, _, o in _history(store, job.id)] == ["lease_expired", "lease_expired"]
    assert [j.id for j in store.delete_older_than(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))] == [job.id]
    assert store.attempts_history(job.id) == []


# --------------------------------------------------------------------------- the JobManager


class StandInEngine:
    """Runs a job for ``seconds`` in small steps (progress, cancel checks), writes a one-piece
    artifact at ``location`` like the real engine, and records what happened to each run."""

    pm = None

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.runs: list[dict[str, Any]] = []
        self.started = threading.Event()

    def run(self, spec: Any, data: Any, progress: Any, cancel: Any, executor: Any, location: str) -> Any:
        record: dict[str, Any] = {"location": location, "end": "running"}
        self.runs.append(record)
        self.started.set()
        Path(location).mkdir(parents=True, exist_ok=True)
        (Path(location) / "part-00000.parquet").write_bytes(b"piece")
        t_end = time.monotonic() + self.seconds
        while time.monotonic() < t_end:
            if cancel():
                record["end"] = "cancelled"
                raise Cancelled("cancelled")
            progress(0.5, "simulating")
            time.sleep(0.02)
        (Path(location) / "manifest.json").write_text("{}")
        record["end"] = "done"

        return SimpleNamespace(artifact=location, info={"n_columns": 1}, details=[], rows=lambda n: [])


def _manager(store: JobStore, tmp_path: Path, engine: StandInEngine, lease_s: float = 1.0,
             heartbeat_s: float = 0.1) -> JobManager:
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path), "GPU_BACKTEST_LEASE_S": str(lease_s),
                                  "GPU_BACKTEST_HEARTBEAT_S": str(heartbeat_s), "MAX_CONCURRENT_JOBS": "2"})
    return JobManager(settings, store, engine)  # type: ignore[arg-type]


async def _until(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_heartbeat_keeps_a_job_longer_than_its_lease(store: JobStore, tmp_path: Path) -> None:
    engine = StandInEngine(seconds=2.5)  # 2.5 lease lengths
    manager = _manager(store, tmp_path, engine, lease_s=1.0, heartbeat_s=0.1)
    job = _submit(store)[0]
    await manager.start()
    try:
        await _until(lambda: store.get(job.id).is_final)  # type: ignore[union-attr]
    finally:
        await manager.shutdown(1.0)
    done = store.get(job.id)
    assert done is not None and done.status == "succeeded" and done.attempts == 1
    assert done.artifact_path == artifacts.job_dir(str(tmp_path / "artifacts"), job.id, 1)
    assert _history(store, job.id) == [(1, manager.owner, "succeeded")]
    assert [r["end"] for r in engine.runs] == ["done"]


@pytest.mark.asyncio
async def test_a_server_whose_job_was_taken_over_stops_it_and_writes_nothing(make_store: StoreFactory,
                                                                          tmp_path: Path) -> None:
    a_store, b_store = make_store(), make_store()
    engine = StandInEngine(seconds=30)
    manager = _manager(a_store, tmp_path, engine, lease_s=1.0, heartbeat_s=0.1)
    job = _submit(a_store)[0]
    await manager.start()
    try:
        await asyncio.to_thread(engine.started.wait, 30)
        # what a pause of server A amounts to: its lease runs out, B re-queues and takes the job
        with b_store.engine.begin() as conn:
            conn.execute(update(jobs_table).where(jobs_table.c.id == job.id).values(
                lease_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)))
        assert b_store.recover()["requeued"] == 1
        taken = b_store.claim_next("server-b", lease_s=30)
        assert taken is not None and taken.id == job.id and taken.lease_generation == 2
        await _until(lambda: not manager.running_count())
    finally:
        await manager.shutdown(1.0)
    assert [r["end"] for r in engine.runs] == ["cancelled"]  # A stopped the work
    got = b_store.get(job.id)
    assert got is not None and got.status == "running" and got.owner == "server-b" and got.artifact_path is None
    assert _history(b_store, job.id) == [(1, manager.owner, "lease_expired"), (2, "server-b", "running")]
    assert not Path(engine.runs[0]["location"]).exists()  # the fenced run's files are gone
    assert manager.store.get(job.id).progress == 0.0  # type: ignore[union-attr]  # A's progress was refused


@pytest.mark.asyncio
async def test_shutdown_hands_running_jobs_back(store: JobStore, tmp_path: Path) -> None:
    engine = StandInEngine(seconds=30)
    manager = _manager(store, tmp_path, engine, lease_s=5.0, heartbeat_s=0.5)
    job = _submit(store)[0]
    await manager.start()
    await asyncio.to_thread(engine.started.wait, 30)
    await manager.shutdown(0.2)
    back = store.get(job.id)
    assert back is not None and back.status == "queued" and back.attempts == 0 and back.lease_expires_at is None
    assert _history(store, job.id) == [(1, manager.owner, "handed_back")]
    assert [r["end"] for r in engine.runs] == ["cancelled"]
    assert not Path(engine.runs[0]["location"]).exists()
    # the next server runs it as the first counted attempt
    engine2 = StandInEngine(seconds=0.2)
    second = _manager(store, tmp_path, engine2, lease_s=5.0, heartbeat_s=0.5)
    await second.start()
    try:
        await _until(lambda: store.get(job.id).is_final)  # type: ignore[union-attr]
    finally:
        await second.shutdown(1.0)
    done = store.get(job.id)
    assert done is not None and done.status == "succeeded" and done.attempts == 1
    assert _history(store, job.id) == [(1, manager.owner, "handed_back"), (2, second.owner, "succeeded")]
    assert sorted(p.name for p in (tmp_path / "artifacts" / job.id).iterdir()) == ["g2"]
