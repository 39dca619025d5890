"""The persistent job store: backtest jobs in SQLite (default) or PostgreSQL, via SQLAlchemy 2.

A job is written here before the service acknowledges it, and every state change goes
through one of `JobStore`'s methods, each a single short transaction::

    queued ──claim_next──▶ running ──finish──▶ succeeded | failed | cancelled
      │                      │  ▲
      │ request_cancel       │  └── recover (process died; attempts < max) ──▶ queued
      ▼                      ▼
    cancelled        cancel_requested=True (the runner stops and calls finish(..., "cancelled"))

Guarantees, on both databases:

- **Idempotent submission.** ``create`` with an ``idempotency_key`` already used returns the
  existing job when the request body hashes the same, else raises `IdempotencyConflict`;
  two concurrent creates with one key leave one row (the unique index decides, the loser
  re-reads).
- **Each job claimed once.** ``claim_next`` takes the oldest queued job inside a transaction
  that locks it (PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN IMMEDIATE``)
  and moves it with a conditional ``UPDATE … WHERE status = 'queued'``.
- **Each result written once.** ``finish`` only changes a job that is still ``running``
  (optionally: still owned by the caller) and reports whether it did.
- **A restart loses nothing.** ``recover`` re-queues jobs left ``running`` by a dead process,
  and fails those interrupted ``max_attempts`` times.

The methods are synchronous and thread-safe (one `Engine`, a connection pool); an async
caller runs them in a thread executor. They return `Job` snapshots: plain frozen
dataclasses, never ORM instances bound to a session.

URLs: ``DATABASE_URL`` if set (``postgres://`` and ``postgresql://`` are normalised to
``postgresql+psycopg2://``), else ``sqlite:///<GPU_BACKTEST_DATA_DIR>/jobs.sqlite``. SQLite
runs in WAL mode with a busy timeout. The schema is explicit (table, column, index and
constraint names fixed by a naming convention, core/dbtypes.py) and changes through versioned
migrations (core/migrations/, Alembic), which `migrate` applies at start-up under a lock; each
schema version is also recorded in the ``schema_version`` table.

JSON columns hold plain JSON: NaN and ±infinity are stored as ``null``, numpy scalars as
Python numbers, tuples as lists, timestamps as ISO strings (see `to_jsonable`, from core/jsonsafe.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .config import Settings
from .dbtypes import NAMING_CONVENTION, JsonDoc, UTCDateTime
from .errors import ConfigError, GpuBacktestError
from .jobstatus import CANCELLED, FAILED, FINAL_STATUSES, QUEUED, RUNNING, STATUSES, SUCCEEDED, is_final
from .jsonsafe import to_jsonable
from .timeutil import utc_now

__all__ = [
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "IdempotencyConflict",
    "Job",
    "JobQueryError",
    "JobRow",
    "JobStore",
    "SchemaVersionRow",
    "default_url",
    "normalise_url",
    "request_hash",
    "to_jsonable",
]

SCHEMA_VERSION = 1
"""The schema this code writes. Bump it with every schema change (and add the migration)."""

STAGE_MAX = 200
_SQLITE_BUSY_TIMEOUT_S = 30.0
_CLAIM_RETRIES = 20


# --------------------------------------------------------------------------- errors


class IdempotencyConflict(GpuBacktestError):
    """An ``Idempotency-Key`` was reused with a different request body."""

    code = "idempotency_conflict"
    status = 422


class JobQueryError(GpuBacktestError):
    """A job listing was asked for with an invalid filter or page."""

    code = "invalid_query"
    status = 400


# --------------------------------------------------------------------------- helpers


def request_hash(body: Any) -> str:
    """sha256 hex of the canonical JSON of ``body`` (sorted keys, no spaces): the idempotency check."""
    text = json.dumps(to_jsonable(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _error_doc(error: Mapping[str, Any] | GpuBacktestError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    if isinstance(error, GpuBacktestError):
        return to_jsonable(error.to_dict())
    doc = to_jsonable(dict(error))
    return {"code": str(doc.get("code") or "error"), "message": str(doc.get("message") or ""),
            "details": doc.get("details")}


def normalise_url(url: str) -> str:
    """A SQLAlchemy URL for the store; ``postgres://`` and ``postgresql://`` become psycopg2 URLs.

    Raises ConfigError (naming ``DATABASE_URL``) when ``url`` is not a database URL.
    """
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise ConfigError(f"DATABASE_URL is not a database URL: {url!r}", {"variable": "DATABASE_URL"}) from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def default_url(settings: Settings) -> str:
    """The store's URL for ``settings``: DATABASE_URL, else ``<data_dir>/jobs.sqlite``."""
    if settings.database_url:
        return normalise_url(settings.database_url)
    path = Path(settings.data_dir).expanduser() / "jobs.sqlite"
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


# --------------------------------------------------------------------------- schema


class Base(DeclarativeBase):
    """Declarative base of the job store's tables (its ``metadata`` is the whole schema)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobRow(Base):
    """One backtest job (the ``jobs`` table)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column("id", String(32), primary_key=True)
    status: Mapped[str] = mapped_column("status", String(16), nullable=False)
    spec: Mapped[Any] = mapped_column("spec", JsonDoc, nullable=False)
    spec_hash: Mapped[str] = mapped_column("spec_hash", String(64), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column("idempotency_key", String(255), nullable=True, unique=True)
    progress: Mapped[float] = mapped_column("progress", Float, nullable=False, default=0.0)
    stage: Mapped[str] = mapped_column("stage", String(STAGE_MAX), nullable=False, default="")
    error: Mapped[Any | None] = mapped_column("error", JsonDoc, nullable=True)
    summary: Mapped[Any | None] = mapped_column("summary", JsonDoc, nullable=True)
    artifact_path: Mapped[str | None] = mapped_column("artifact_path", Text, nullable=True)
    attempts: Mapped[int] = mapped_column("attempts", Integer, nullable=False, default=0)
    cancel_requested: Mapped[bool] = mapped_column("cancel_requested", Boolean, nullable=False, default=False)
    owner: Mapped[str | None] = mapped_column("owner", String(255), nullable=True)
    callback_url: Mapped[str | None] = mapped_column("callback_url", Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column("created_at", UTCDateTime, nullable=False)
    started_at: Mapped[dt.datetime | None] = mapped_column("started_at", UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column("finished_at", UTCDateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column("updated_at", UTCDateTime, nullable=False)


class SchemaVersionRow(Base):
    """The schema versions applied to this database (``schema_version`` table); the highest is current."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column("version", Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[dt.datetime] = mapped_column("applied_at", UTCDateTime, nullable=False)
    description: Mapped[str] = mapped_column("description", String(200), nullable=False, default="")


jobs_table = JobRow.__table__
_version_table = SchemaVersionRow.__table__
_c = jobs_table.c


# --------------------------------------------------------------------------- snapshot


@dataclasses.dataclass(frozen=True)
class Job:
    """A snapshot of one job row, detached from any session."""

    id: str
    status: str
    spec: Any
    spec_hash: str
    idempotency_key: str | None
    progress: float
    stage: str
    error: dict[str, Any] | None
    summary: dict[str, Any] | None
    artifact_path: str | None
    attempts: int
    cancel_requested: bool
    owner: str | None
    callback_url: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime

    @property
    def is_final(self) -> bool:
        """True once the job is succeeded, failed or cancelled."""
        return is_final(self.status)

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-able data; timestamps as ISO 8601 strings in UTC."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.isoformat() if isinstance(v, dt.datetime) else v
        return out

    @classmethod
    def _from_row(cls, row: Any) -> Job:
        m = row._mapping
        return cls(**{f.name: m[f.name] for f in dataclasses.fields(cls)})


# --------------------------------------------------------------------------- the store


class JobStore:
    """Repository of jobs on one database. ``JobStore(url)``; call `create_all` once at start."""

    def __init__(self, url: str, *, connect_args: Mapping[str, Any] | None = None, echo: bool = False) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        args: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            args["timeout"] = _SQLITE_BUSY_TIMEOUT_S
            if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        args.update(connect_args or {})
        self.engine: Engine = create_engine(self.url, connect_args=args, **kwargs)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        # Writers on SQLite take the write lock at BEGIN (see _configure_sqlite); elsewhere a no-op option.
        self._write_engine: Engine = self.engine.execution_options(gbt_immediate=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        """The store named by ``settings`` (`default_url`)."""
        return cls(default_url(settings))

    def __repr__(self) -> str:
        return f"JobStore({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # ---- schema

    def migrate(self, *, apply: bool = True) -> int:
        """Bring the schema to this code's version with the migrations (core/migrations/); returns it.

        Safe to call from several processes at once (one migrates, under a lock; the others
        wait and find it done). A database made by the old `create_all` is recognised as the
        baseline. Raises ConfigError if the database was upgraded by a newer version of this
        code, or (``apply=False``) if it needs an upgrade.
        """
        from .migrations import migrate

        return migrate(self._write_engine, apply=apply)

    def create_all(self) -> int:
        """The schema at this code's version: `migrate` (the name of the pre-migration method)."""
        return self.migrate()

    def schema_version(self) -> int | None:
        """The schema version recorded in the database (None before `migrate`)."""
        with self._read() as conn:
            return conn.execute(select(func.max(_version_table.c.version))).scalar()

    # ---- create / read

    def create(self, spec: Mapping[str, Any], spec_hash: str, idempotency_key: str | None = None,
               callback_url: str | None = None) -> Job:
        """Persist a new queued job and return it (or the job already made with ``idempotency_key``).

        Raises IdempotencyConflict when the key was used for a request whose hash differs.
        """
        return self.create_or_get(spec, spec_hash, idempotency_key, callback_url)[0]

    def create_or_get(self, spec: Mapping[str, Any], spec_hash: str, idempotency_key: str | None = None,
                      callback_url: str | None = None) -> tuple[Job, bool]:
        """Like `create`, and also says whether the job is new (True) or an idempotent repeat (False)."""
        if idempotency_key is not None:
            existing = self._by_key(idempotency_key)
            if existing is not None:
                return self._same_request(existing, spec_hash), False
        now = utc_now()
        values = {
            "id": uuid.uuid4().hex, "status": QUEUED, "spec": to_jsonable(spec), "spec_hash": spec_hash,
            "idempotency_key": idempotency_key, "progress": 0.0, "stage": QUEUED, "error": None, "summary": None,
            "artifact_path": None, "attempts": 0, "cancel_requested": False, "owner": None,
            "callback_url": callback_url, "created_at": now, "started_at": None, "finished_at": None,
            "updated_at": now,
        }
        try:
            with self._write() as conn:
                if idempotency_key is not None:
                    # Re-check inside the write transaction (on SQLite it holds the write lock).
                    row = conn.execute(select(jobs_table).where(_c.idempotency_key == idempotency_key)).first()
                    if row is not None:
                        return self._same_request(Job._from_row(row), spec_hash), False
                conn.execute(insert(jobs_table).values(**values))
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = self._by_key(idempotency_key)  # a concurrent create with this key won the race
            if existing is None:
                raise
            return self._same_request(existing, spec_hash), False
        job = self.get(values["id"])
        assert job is not None
        return job, True

    def _by_key(self, key: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(select(jobs_table).where(_c.idempotency_key == key)).first()
        return None if row is None else Job._from_row(row)

    @staticmethod
    def _same_request(job: Job, spec_hash: str) -> Job:
        if job.spec_hash != spec_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request body",
                {"idempotency_key": job.idempotency_key, "job_id": job.id},
            )
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        with self._read() as conn:
            row = conn.execute(select(jobs_table).where(_c.id == job_id)).first()
        return None if row is None else Job._from_row(row)

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        """One page of jobs, newest first, optionally of one status, and the total matching."""
        if status is not None and status not in STATUSES:
            raise JobQueryError(f"status must be one of {', '.join(STATUSES)}, got {status!r}",
                                {"field": "status"})
        if limit < 0 or offset < 0:
            raise JobQueryError("limit and offset must be >= 0", {"limit": limit, "offset": offset})
        where = [] if status is None else [_c.status == status]
        with self._read() as conn:
            total = conn.execute(select(func.count()).select_from(jobs_table).where(*where)).scalar_one()
            rows = conn.execute(
                select(jobs_table).where(*where).order_by(_c.created_at.desc(), _c.id.desc())
                .limit(limit).offset(offset)
            ).all()
        return [Job._from_row(r) for r in rows], int(total)

    def counts_by_status(self) -> dict[str, int]:
        """Number of jobs in each status (every status present, zero when none)."""
        with self._read() as conn:
            rows = conn.execute(select(_c.status, func.count()).group_by(_c.status)).all()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({s: int(n) for s, n in rows})
        return counts

    # ---- running

    def claim_next(self, owner: str) -> Job | None:
        """Atomically take the oldest queued job for ``owner``: running, attempts + 1. None if none waits."""
        for _ in range(_CLAIM_RETRIES):
            with self._write() as conn:
                job_id = conn.execute(
                    select(_c.id).where(_c.status == QUEUED).order_by(_c.created_at, _c.id).limit(1)
                    .with_for_update(skip_locked=True)
                ).scalar()
                if job_id is None:
                    return None
                now = utc_now()
                res = conn.execute(
                    update(jobs_table).where(_c.id == job_id, _c.status == QUEUED).values(
                        status=RUNNING, owner=owner, started_at=now, updated_at=now, attempts=_c.attempts + 1,
                        progress=0.0, stage="starting", cancel_requested=False,
                    )
                )
                if res.rowcount == 1:
                    row = conn.execute(select(jobs_table).where(_c.id == job_id)).one()
                    return Job._from_row(row)
            # Someone else took it between our read and our update: look again.
        return None

    def update_progress(self, job_id: str, progress: float, stage: str | None = None) -> bool:
        """Record progress (clamped to 0–1) and stage of a running job; False if it is not running."""
        p = float(progress)
        p = 0.0 if not math.isfinite(p) else min(1.0, max(0.0, p))
        values: dict[str, Any] = {"progress": p, "updated_at": utc_now()}
        if stage is not None:
            values["stage"] = stage[:STAGE_MAX]
        with self._write() as conn:
            res = conn.execute(update(jobs_table).where(_c.id == job_id, _c.status == RUNNING).values(**values))
        return res.rowcount == 1

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a job: queued → cancelled now; running → cancel_requested; final → unchanged.

        Returns the job afterwards, or None if there is no such job.
        """
        with self._write() as conn:
            row = conn.execute(select(jobs_table).where(_c.id == job_id).with_for_update()).first()
            if row is None:
                return None
            now = utc_now()
            if row.status == QUEUED:
                conn.execute(update(jobs_table).where(_c.id == job_id, _c.status == QUEUED).values(
                    status=CANCELLED, cancel_requested=True, stage=CANCELLED, finished_at=now, updated_at=now))
            elif row.status == RUNNING:
                conn.execute(update(jobs_table).where(_c.id == job_id, _c.status == RUNNING).values(
                    cancel_requested=True, updated_at=now))
            row = conn.execute(select(jobs_table).where(_c.id == job_id)).one()
        return Job._from_row(row)

    def is_cancel_requested(self, job_id: str) -> bool:
        """Should the runner of ``job_id`` stop? True if cancel was asked, the job is cancelled, or gone."""
        with self._read() as conn:
            row = conn.execute(select(_c.status, _c.cancel_requested).where(_c.id == job_id)).first()
        return row is None or bool(row.cancel_requested) or row.status == CANCELLED

    def finish(self, job_id: str, status: str, summary: Mapping[str, Any] | None = None,
               error: Mapping[str, Any] | GpuBacktestError | None = None, artifact_path: str | None = None,
               *, owner: str | None = None) -> bool:
        """Write the final state of a running job, once. False if it was not running (already finished).

        ``status`` is succeeded, failed or cancelled; ``error`` is ``{code, message, details}`` or a
        GpuBacktestError. With ``owner``, only that owner's run may finish it (a process that lost
        the job to `recover` cannot overwrite the new run).
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"finish() needs a final status ({', '.join(FINAL_STATUSES)}), got {status!r}")
        now = utc_now()
        values: dict[str, Any] = {
            "status": status, "summary": to_jsonable(summary) if summary is not None else None,
            "error": _error_doc(error), "artifact_path": str(artifact_path) if artifact_path is not None else None,
            "finished_at": now, "updated_at": now, "stage": status,
        }
        if status == SUCCEEDED:
            values["progress"] = 1.0
        where = [_c.id == job_id, _c.status == RUNNING]
        if owner is not None:
            where.append(_c.owner == owner)
        with self._write() as conn:
            res = conn.execute(update(jobs_table).where(*where).values(**values))
        return res.rowcount == 1

    def recover(self, owner_alive: Callable[[str], bool] | None = None, max_attempts: int = 3) -> dict[str, int]:
        """Handle jobs left running by dead processes; returns counts by what was done.

        A running job is orphaned when ``owner_alive(owner)`` is false (default: every running job
        is, as at the start of the only server). Orphans with a pending cancel become cancelled;
        the others are re-queued (keeping their place: the oldest run first) while
        ``attempts < max_attempts``, else failed with error code ``too_many_attempts``.
        Returns ``{"requeued", "failed", "cancelled", "alive"}``.
        """
        counts = {"requeued": 0, "failed": 0, "cancelled": 0, "alive": 0}
        with self._read() as conn:
            rows = conn.execute(select(_c.id, _c.owner, _c.attempts, _c.cancel_requested)
                                .where(_c.status == RUNNING)).all()
        for r in rows:
            if owner_alive is not None and r.owner is not None and owner_alive(r.owner):
                counts["alive"] += 1
                continue
            now = utc_now()
            same = [_c.id == r.id, _c.status == RUNNING, _c.attempts == r.attempts,
                    _c.owner.is_(None) if r.owner is None else _c.owner == r.owner]
            if r.cancel_requested:
                kind = "cancelled"
                values: dict[str, Any] = {"status": CANCELLED, "stage": CANCELLED, "finished_at": now}
            elif r.attempts < max_attempts:
                kind = "requeued"
                values = {"status": QUEUED, "owner": None, "progress": 0.0, "stage": "requeued",
                          "started_at": None}
            else:
                kind = "failed"
                values = {"status": FAILED, "stage": FAILED, "finished_at": now, "error": {
                    "code": "too_many_attempts",
                    "message": f"the job was interrupted {r.attempts} times (its server process stopped "
                               f"while running it); giving up after {max_attempts} attempts",
                    "details": {"attempts": r.attempts, "max_attempts": max_attempts, "last_owner": r.owner},
                }}
            with self._write() as conn:
                res = conn.execute(update(jobs_table).where(*same).values(updated_at=now, **values))
            if res.rowcount == 1:
                counts[kind] += 1
        return counts

    # ---- housekeeping

    def delete_older_than(self, age: dt.timedelta | dt.datetime,
                          statuses: Iterable[str] = FINAL_STATUSES) -> list[Job]:
        """Delete final jobs finished before ``age`` ago (or before a UTC datetime); returns them.

        The caller removes their artifacts (``artifact_path``). Only final statuses may be given.
        """
        statuses = tuple(statuses)
        if not set(statuses) <= set(FINAL_STATUSES):
            raise ValueError(f"only final jobs can be deleted, got {statuses!r}")
        cutoff = utc_now() - age if isinstance(age, dt.timedelta) else age
        if cutoff.tzinfo is None:
            raise ValueError("naive datetime: give a timezone-aware cutoff")
        when = func.coalesce(_c.finished_at, _c.created_at)
        with self._write() as conn:
            rows = conn.execute(select(jobs_table).where(_c.status.in_(statuses), when < cutoff)).all()
            jobs = [Job._from_row(r) for r in rows]
            if jobs:
                conn.execute(delete(jobs_table).where(_c.id.in_([j.id for j in jobs]), _c.status.in_(statuses)))
        return jobs


def _configure_sqlite(engine: Engine) -> None:
    """WAL, and explicit BEGINs: ``BEGIN IMMEDIATE`` for writers, so read-then-write is serialised."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver's implicit BEGIN off: the "begin" hook below issues it
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL").fetchall()
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("gbt_immediate") else "BEGIN")
