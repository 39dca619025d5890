"""The job store on SQLite and on PostgreSQL: the same tests against both databases.

PostgreSQL: ``TEST_DATABASE_URL`` or ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``.
Each test session works in a fresh schema (``gbt_test_<random>``, dropped at the end). When
the server is unreachable the PostgreSQL tests fail, unless ``GPU_BACKTEST_SKIP_POSTGRES=1``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from gpu_backtest.core.config import ConfigError, Settings
from gpu_backtest.core.errors import DataError
from gpu_backtest.core.jobstore import (
    SCHEMA_VERSION,
    STATUSES,
    IdempotencyConflict,
    Job,
    JobQueryError,
    JobStore,
    default_url,
    normalise_url,
    request_hash,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))

SPEC = {"strategy": "sma_cross", "symbols": ["AAA"], "params": {"fast": [5, 10], "slow": 50}}

StoreFactory = Callable[[], JobStore]


# --------------------------------------------------------------------------- fixtures




def _submit(store: JobStore, n: int, **kw: object) -> list[Job]:
    return [store.create({**SPEC, "n": i}, request_hash({**SPEC, "n": i}), **kw) for i in range(n)]  # type: ignore[arg-type]


def _run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


# --------------------------------------------------------------------------- schema and reads


def test_schema_is_created_once_and_versioned(store: JobStore) -> None:
    assert store.create_all() == SCHEMA_VERSION  # idempotent
    assert store.schema_version() == SCHEMA_VERSION
    insp = inspect(store.engine)
    assert {"jobs", "schema_version", "job_attempts", "alembic_version"} <= set(insp.get_table_names())
    assert "ix_jobs_status_created_at" in {ix["name"] for ix in insp.get_indexes("jobs")}
    columns = {c["name"] for c in insp.get_columns("jobs")}
    assert columns == {f.name for f in Job.__dataclass_fields__.values()}


def test_create_get_list_and_pages(store: JobStore) -> None:
    jobs = _submit(store, 5, callback_url="http://cb.example/hook")
    first = jobs[0]
    assert first.status == "queued" and first.progress == 0.0 and first.attempts == 0
    assert len(first.id) == 32 and first.spec == {**SPEC, "n": 0} and first.callback_url == "http://cb.example/hook"
    assert first.created_at.tzinfo is not None and first.created_at.utcoffset() == dt.timedelta(0)
    assert store.get(first.id) == first
    assert store.get("0" * 32) is None

    page, total = store.list()
    assert total == 5 and [j.id for j in page] == [j.id for j in reversed(jobs)]  # newest first
    pages = [store.list(limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p) for p, _ in pages] == [2, 2, 1, 0] and {t for _, t in pages} == {5}
    assert [j.id for p, _ in pages for j in p] == [j.id for j in reversed(jobs)]

    store.claim_next("owner-a")
    running, n_running = store.list(status="running")
    assert n_running == 1 and running[0].id == first.id
    assert store.list(status="queued")[1] == 4
    assert store.counts_by_status() == {**dict.fromkeys(STATUSES, 0), "queued": 4, "running": 1}
    with pytest.raises(JobQueryError):
        store.list(status="sleeping")
    with pytest.raises(JobQueryError):
        store.list(limit=-1)

    doc = json.loads(json.dumps(store.get(first.id).to_dict()))  # type: ignore[union-attr]
    assert doc["status"] == "running" and doc["owner"] == "owner-a"
    assert dt.datetime.fromisoformat(doc["created_at"]) == first.created_at


def test_json_values_are_stored_as_plain_json(store: JobStore) -> None:
    np = pytest.importorskip("numpy")
    job = store.create({"x": np.float64(1.5), "t": (1, 2), "bad": float("nan")}, "h")
    assert store.get(job.id).spec == {"x": 1.5, "t": [1, 2], "bad": None}  # type: ignore[union-attr]
    assert request_hash({"a": 1, "b": [1, 2]}) == request_hash({"b": [1, 2], "a": 1})
    assert request_hash({"a": 1}) != request_hash({"a": 2})


# --------------------------------------------------------------------------- idempotency


def test_idempotency_key_same_body_same_job_other_body_conflict(store: JobStore) -> None:
    h = request_hash(SPEC)
    job, new = store.create_or_get(SPEC, h, "key-1")
    again, new_again = store.create_or_get(SPEC, h, "key-1")
    assert new and not new_again and again.id == job.id
    with pytest.raises(IdempotencyConflict) as info:
        store.create({**SPEC, "symbols": ["BBB"]}, request_hash({**SPEC, "symbols": ["BBB"]}), "key-1")
    assert info.value.status == 422 and info.value.code == "idempotency_conflict"
    assert info.value.details["job_id"] == job.id
    other = store.create(SPEC, h, "key-2")
    no_key = [store.create(SPEC, h), store.create(SPEC, h)]
    assert len({job.id, other.id, *(j.id for j in no_key)}) == 4
    assert store.list()[1] == 4


def test_concurrent_creates_with_one_key_make_one_job(make_store: StoreFactory) -> None:
    stores = [make_store() for _ in range(6)]
    h = request_hash(SPEC)
    barrier = threading.Barrier(len(stores))
    ids: list[str] = []

    def create(i: int) -> None:
        barrier.wait()
        ids.append(stores[i].create(SPEC, h, "same-key").id)

    _run_threads(len(stores), create)
    assert len(ids) == 6 and len(set(ids)) == 1
    assert stores[0].list()[1] == 1


# --------------------------------------------------------------------------- claiming


def test_claim_takes_oldest_first(store: JobStore) -> None:
    jobs = _submit(store, 4)
    claimed = [store.claim_next("owner-a") for _ in range(4)]
    assert [j.id for j in claimed if j] == [j.id for j in jobs]
    c = claimed[0]
    assert c is not None and c.status == "running" and c.owner == "owner-a" and c.attempts == 1
    assert c.started_at is not None and c.started_at >= c.created_at
    assert store.claim_next("owner-a") is None


def test_concurrent_claimers_take_each_job_once(make_store: StoreFactory) -> None:
    jobs = _submit(make_store(), 20)
    stores = [make_store() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    taken: list[tuple[int, str]] = []

    def claimer(i: int) -> None:
        barrier.wait()
        while (job := stores[i].claim_next(f"owner-{i}")) is not None:
            assert job.owner == f"owner-{i}" and job.attempts == 1
            taken.append((i, job.id))

    _run_threads(len(stores), claimer)
    counts = Counter(job_id for _, job_id in taken)
    assert sorted(counts) == sorted(j.id for j in jobs) and set(counts.values()) == {1}
    final = {j.id: stores[0].get(j.id) for j in stores[0].list(limit=100)[0]}
    assert all(final[job_id].owner == f"owner-{i}" and final[job_id].status == "running" for i, job_id in taken)


# --------------------------------------------------------------------------- progress, cancel, finish


def test_progress_of_running_jobs_only(store: JobStore) -> None:
    job = _submit(store, 1)[0]
    assert not store.update_progress(job.id, 0.5, "sweep")  # still queued
    store.claim_next("o")
    assert store.update_progress(job.id, 0.25, "sweep 1/4")
    got = store.get(job.id)
    assert got is not None and (got.progress, got.stage) == (0.25, "sweep 1/4")
    assert store.update_progress(job.id, 7.0, "x" * 500)
    got = store.get(job.id)
    assert got is not None and got.progress == 1.0 and len(got.stage) == 200


def test_cancel_queued_running_and_final(store: JobStore) -> None:
    running, final, queued = _submit(store, 3)
    store.claim_next("o")
    store.claim_next("o")
    assert store.finish(final.id, "succeeded", summary={"info": {}})

    c = store.request_cancel(queued.id)
    assert c is not None and c.status == "cancelled" and c.finished_at is not None
    assert store.is_cancel_requested(queued.id)
    assert store.claim_next("o") is None  # a cancelled job is never claimed

    c = store.request_cancel(running.id)
    assert c is not None and c.status == "running" and c.cancel_requested and c.finished_at is None
    assert store.is_cancel_requested(running.id)
    assert store.finish(running.id, "cancelled")
    assert store.get(running.id).status == "cancelled"  # type: ignore[union-attr]

    before = store.get(final.id)
    after = store.request_cancel(final.id)
    assert after == before and after is not None and after.status == "succeeded" and not after.cancel_requested
    assert not store.is_cancel_requested(final.id)
    assert store.request_cancel("0" * 32) is None
    assert store.is_cancel_requested("0" * 32)  # a job that is gone should not keep running


def test_finish_writes_one_result(store: JobStore) -> None:
    job = _submit(store, 1)[0]
    assert not store.finish(job.id, "succeeded")  # not running yet
    store.claim_next("owner-a")
    assert not store.finish(job.id, "succeeded", owner="owner-b")  # not the owner
    summary = {"info": {"columns": 2}, "top": [{"sharpe": float("nan"), "total_return": 0.1}]}
    assert store.finish(job.id, "succeeded", summary=summary, artifact_path="/data/artifacts/x.parquet",
                        owner="owner-a")
    done = store.get(job.id)
    assert done is not None and done.status == "succeeded" and done.progress == 1.0
    assert done.summary == {"info": {"columns": 2}, "top": [{"sharpe": None, "total_return": 0.1}]}
    assert done.artifact_path == "/data/artifacts/x.parquet" and done.finished_at is not None

    assert not store.finish(job.id, "failed", error={"code": "boom", "message": "late"})
    assert store.get(job.id) == done
    with pytest.raises(ValueError):
        store.finish(job.id, "running")


def test_finish_failed_records_error(store: JobStore) -> None:
    a, b = _submit(store, 2)
    store.claim_next("o")
    store.claim_next("o")
    assert store.finish(a.id, "failed", error=DataError("no bars for ZZZ", source="ZZZ"))
    assert store.finish(b.id, "failed", error={"code": "internal", "message": "worker lost"})
    ea, eb = store.get(a.id).error, store.get(b.id).error  # type: ignore[union-attr]
    assert ea == {"code": "invalid_data", "message": "no bars for ZZZ", "details": {"source": "ZZZ", "problems": []}}
    assert eb == {"code": "internal", "message": "worker lost", "details": None}


# --------------------------------------------------------------------------- recovery


def test_recover_requeues_then_fails_after_max_attempts(store: JobStore) -> None:
    job = _submit(store, 1)[0]
    for attempt in (1, 2):
        claimed = store.claim_next(f"dead-{attempt}", lease_s=0)  # a lease that has already expired
        assert claimed is not None and claimed.id == job.id and claimed.attempts == attempt
        assert store.recover(max_attempts=3) == {"requeued": 1, "failed": 0, "cancelled": 0, "alive": 0}
        back = store.get(job.id)
        assert back is not None and back.status == "queued" and back.owner is None and back.progress == 0.0
        assert back.attempts == attempt
    store.claim_next("dead-3", lease_s=0)
    assert store.recover(max_attempts=3) == {"requeued": 0, "failed": 1, "cancelled": 0, "alive": 0}
    failed = store.get(job.id)
    assert failed is not None and failed.status == "failed" and failed.finished_at is not None
    assert failed.error is not None and failed.error["code"] == "too_many_attempts"
    assert failed.error["details"]["attempts"] == 3 and failed.error["message"]
    assert store.recover() == {"requeued": 0, "failed": 0, "cancelled": 0, "alive": 0}


def test_recover_spares_live_leases_and_honours_cancel(store: JobStore) -> None:
    old, live, cancelling = _submit(store, 3)
    store.claim_next("dead", lease_s=0)
    store.claim_next("alive", lease_s=60)
    store.claim_next("dead", lease_s=0)
    store.request_cancel(cancelling.id)
    counts = store.recover()
    assert counts == {"requeued": 1, "failed": 0, "cancelled": 1, "alive": 1}
    assert store.get(live.id).status == "running"  # type: ignore[union-attr]
    assert store.get(cancelling.id).status == "cancelled"  # type: ignore[union-attr]
    requeued = store.claim_next("new")
    assert requeued is not None and requeued.id == old.id and requeued.attempts == 2
    assert not store.finish(old.id, "succeeded", owner="dead")  # the dead run cannot write over the new one


def test_delete_older_than(store: JobStore) -> None:
    a, b = _submit(store, 2)
    store.claim_next("o")
    store.finish(a.id, "succeeded", artifact_path="/tmp/a.parquet")
    assert store.delete_older_than(dt.timedelta(hours=1)) == []
    gone = store.delete_older_than(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert [j.id for j in gone] == [a.id] and gone[0].artifact_path == "/tmp/a.parquet"
    assert store.get(a.id) is None and store.get(b.id) is not None
    with pytest.raises(ValueError):
        store.delete_older_than(dt.timedelta(0), statuses=["queued"])


# --------------------------------------------------------------------------- URLs and SQLite settings


def test_url_normalisation(tmp_path: Path) -> None:
    assert normalise_url("postgres://u:p@db:5433/jobs") == "postgresql+psycopg2://u:p@db:5433/jobs"
    assert normalise_url("postgresql://u@db/jobs?sslmode=require") == "postgresql+psycopg2://u@db/jobs?sslmode=require"
    assert normalise_url("postgresql+psycopg2://u@db/jobs") == "postgresql+psycopg2://u@db/jobs"
    assert normalise_url("sqlite:////var/x/jobs.sqlite") == "sqlite:////var/x/jobs.sqlite"
    with pytest.raises(ConfigError) as info:
        normalise_url("not a url")
    assert info.value.details == {"variable": "DATABASE_URL"}

    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path / "data")})
    assert default_url(settings) == f"sqlite:///{tmp_path / 'data' / 'jobs.sqlite'}"
    settings = Settings.from_env({"DATABASE_URL": "postgres://u@db/jobs"})
    assert default_url(settings) == "postgresql+psycopg2://u@db/jobs"
    assert "secret" not in repr(JobStore("postgres://u:secret@db/jobs"))


def test_sqlite_default_file_in_data_dir_uses_wal(tmp_path: Path) -> None:
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path / "new" / "dir")})
    with JobStore.from_settings(settings) as store:
        store.create_all()
        assert (tmp_path / "new" / "dir" / "jobs.sqlite").exists()
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
