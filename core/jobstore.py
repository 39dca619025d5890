"""The persistent job store: backtest jobs in SQLite (default) or PostgreSQL, via SQLAlchemy 2.

A job is written here before the service acknowledges it, and every state change goes
through one of `JobStore`'s methods, each a single short transaction::

    queued ──claim_next──▶ running ──finish──▶ succeeded | failed | cancelled
      │                      │  ▲  │
      │ request_cancel       │  │  └── hand_back (clean shutdown; the attempt does not count) ──▶ queued
      ▼                      ▼  └───── recover (lease expired; attempts < max) ──▶ queued
    cancelled        cancel_requested=True (the runner stops and calls finish(..., "cancelled"))

**Leases.** A running job carries a lease: its ``owner`` (one server process), a
``lease_expires_at`` and a ``lease_generation`` that every claim increments. The owner renews
all its leases with `renew_leases` (its heartbeat); `recover` — run by every server, at start
and then periodically — re-queues only jobs whose lease has expired (a dead, paused or
partitioned owner), so several servers share one database without taking each other's live
jobs. Progress, the final state and the history row of a run are written only while the
writer still holds the lease: owner, generation and an unexpired lease are conditions of
each statement (fencing), so a server that comes back after its lease expired finds its
writes refused (False) and stops. Lease times come from the database's clock on PostgreSQL
(``clock_timestamp()``), so servers on several machines need not agree on the time; on
SQLite (one machine) from the process's clock. Every run is a row of ``job_attempts``
(generation, owner, started, ended, outcome): the job's history.

Guarantees, on both databases:

- **Idempotent submission.** ``create`` with an ``idempotency_key`` already used returns the
  existing job when the request body hashes the same, else raises `IdempotencyConflict`;
  two concurrent creates with one key leave one row (the unique index decides, the loser
  re-reads).
- **Each job claimed once.** ``claim_next`` takes the oldest queued job inside a transaction
  that locks it (PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN IMMEDIATE``)
  and moves it with a conditional ``UPDATE … WHERE status = 'queued'``, taking a lease.
- **Each result written once, by the lease holder.** ``finish`` only changes a job that is
  still ``running`` (with ``owner``/``generation``: still held by the caller under a live
  lease) and reports whether it did.
- **A restart loses nothing.** ``recover`` re-queues jobs whose lease expired, and fails those
  lost ``max_attempts`` times; ``hand_back`` re-queues a stopping server's jobs at once.
  ``attempts`` counts the runs that were lost or finished, not those handed back.

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
import logging
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    Interval,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .config import Settings
from .dbtypes import NAMING_CONVENTION, JsonDoc, UTCDateTime
from .errors import ConfigError, GpuBacktestError
from .jobstatus import (
    ATTEMPT_OUTCOMES,
    CANCELLED,
    FAILED,
    FINAL_STATUSES,
    HANDED_BACK,
    LEASE_EXPIRED,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    is_final,
)
from .jsonsafe import to_jsonable
from .timeutil import utc_now

__all__ = [
    "DEFAULT_LEASE_S",
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "Attempt",
    "Deleted",
    "IdempotencyConflict",
    "Job",
    "JobBrief",
    "JobNotFinal",
    "JobQueryError",
    "JobRow",
    "JobStore",
    "SchemaVersionRow",
    "default_url",
    "normalise_url",
    "request_hash",
    "to_jsonable",
]

SCHEMA_VERSION = 8
"""The schema this code writes: the head revision's ``schema_version`` (core/migrations/versions/).
Bump it with every schema change, with the new revision file."""

DEFAULT_LEASE_S = 30.0
DELETE_BATCH = 500
"""Jobs `delete_older_than` deletes per call (retention calls it again while a batch is full)."""
"""A lease's length when none is given (the server passes GPU_BACKTEST_LEASE_S)."""



STAGE_MAX = 200
_SQLITE_BUSY_TIMEOUT_S = 30.0
_CLAIM_RETRIES = 20
_MIGRATE_RETRIES = 5
_PG_IDLE_IN_TRANSACTION_S = 10.0
_PG_RECOVER_LOCK_TIMEOUT_MS = 2000
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- errors


class IdempotencyConflict(GpuBacktestError):
    """An ``Idempotency-Key`` was reused with a different request body."""

    code = "idempotency_conflict"
    status = 422


class JobNotFinal(GpuBacktestError):
    """A queued or running job cannot be deleted (cancel it first)."""

    code = "conflict"
    status = 409


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
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
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
    # the lease of a running job (schema version 2): generation counts claims; the fencing token
    lease_generation: Mapped[int] = mapped_column("lease_generation", Integer, nullable=False, default=0,
                                                  server_default=text("0"))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column("lease_expires_at", UTCDateTime, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column("heartbeat_at", UTCDateTime, nullable=True)
    # what a listing shows (schema version 4), written at submit from the validated spec
    strategy: Mapped[str | None] = mapped_column("strategy", String(64), nullable=True)
    n_symbols: Mapped[int | None] = mapped_column("n_symbols", Integer, nullable=True)
    n_columns: Mapped[int | None] = mapped_column("n_columns", BigInteger, nullable=True)
    # the delivery of its callback (schema version 6; core/callbacks.py)
    callback_status: Mapped[str | None] = mapped_column("callback_status", String(16), nullable=True)
    callback_attempts: Mapped[int] = mapped_column("callback_attempts", Integer, nullable=False, default=0,
                                                   server_default=text("0"))
    callback_last_error: Mapped[str | None] = mapped_column("callback_last_error", Text, nullable=True)
    callback_delivered_at: Mapped[dt.datetime | None] = mapped_column("callback_delivered_at", UTCDateTime,
                                                                      nullable=True)


class AttemptRow(Base):
    """One run of a job (the ``job_attempts`` table): who ran it, when, and how it ended."""

    __tablename__ = "job_attempts"
    __table_args__ = (
        UniqueConstraint("job_id", "generation"),
        CheckConstraint(f"outcome IN ({', '.join(repr(s) for s in ATTEMPT_OUTCOMES)})", name="outcome"),
    )

    id: Mapped[int] = mapped_column("id", Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"),
                                        nullable=False)
    generation: Mapped[int] = mapped_column("generation", Integer, nullable=False)
    owner: Mapped[str] = mapped_column("owner", String(255), nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column("started_at", UTCDateTime, nullable=False)
    ended_at: Mapped[dt.datetime | None] = mapped_column("ended_at", UTCDateTime, nullable=True)
    outcome: Mapped[str] = mapped_column("outcome", String(16), nullable=False)


class SchemaVersionRow(Base):
    """The schema versions applied to this database (``schema_version`` table); the highest is current."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column("version", Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[dt.datetime] = mapped_column("applied_at", UTCDateTime, nullable=False)
    description: Mapped[str] = mapped_column("description", String(200), nullable=False, default="")


jobs_table = JobRow.__table__
attempts_table = AttemptRow.__table__
_version_table = SchemaVersionRow.__table__
_c = jobs_table.c
_a = attempts_table.c


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
    lease_generation: int
    lease_expires_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    strategy: str | None = None
    n_symbols: int | None = None
    n_columns: int | None = None
    callback_status: str | None = None
    callback_attempts: int = 0
    callback_last_error: str | None = None
    callback_delivered_at: dt.datetime | None = None

    @property
    def is_final(self) -> bool:
        """True once the job is succeeded, failed or cancelled."""
        return is_final(self.status)

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-able data; timestamps as ISO 8601 strings in UTC. Also ``callback``:
        ``{url, status, attempts, last_error, delivered_at}`` (None without a callback URL); the
        callback URL is shown without any ``user:password@`` part, here and in ``spec``."""
        from .netpolicy import strip_credentials

        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.isoformat() if isinstance(v, dt.datetime) else v
        url = strip_credentials(self.callback_url) if self.callback_url else None
        out["callback_url"] = url
        if isinstance(out.get("spec"), dict) and out["spec"].get("callback_url"):
            out["spec"] = {**out["spec"], "callback_url": strip_credentials(str(out["spec"]["callback_url"]))}
        out["callback"] = self.callback_doc()
        return out

    def callback_doc(self) -> dict[str, Any] | None:
        """The callback's delivery: ``{url (without credentials), status, attempts, last_error,
        delivered_at}``, or None when the job has no callback URL."""
        from .netpolicy import strip_credentials

        if not self.callback_url:
            return None
        at = self.callback_delivered_at
        return {"url": strip_credentials(self.callback_url), "status": self.callback_status or "pending",
                "attempts": self.callback_attempts, "last_error": self.callback_last_error,
                "delivered_at": at.isoformat() if isinstance(at, dt.datetime) else at}

    @classmethod
    def _from_row(cls, row: Any) -> Job:
        m = row._mapping
        return cls(**{f.name: m[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Deleted:
    """A deleted job: its id and where its artifact was (None: it had none)."""

    id: str
    artifact_path: str | None


BRIEF_FIELDS = ("id", "status", "progress", "stage", "error", "attempts", "created_at", "started_at",
                "finished_at", "strategy", "n_symbols", "n_columns")
"""The columns a job listing reads: short ones only (never ``spec`` or ``summary``)."""


@dataclasses.dataclass(frozen=True)
class JobBrief:
    """A job as a listing shows it: status, timings, strategy and sizes — no spec, no summary."""

    id: str
    status: str
    progress: float
    stage: str
    error: dict[str, Any] | None
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    strategy: str | None
    n_symbols: int | None
    n_columns: int | None

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-able data; timestamps as ISO 8601 strings in UTC."""
        return {f.name: (v.isoformat() if isinstance(v, dt.datetime) else v)
                for f in dataclasses.fields(self) for v in (getattr(self, f.name),)}


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One run of a job: its lease generation, the server that ran it, when, and how it ended
    (``running``, ``succeeded``, ``failed``, ``cancelled``, ``handed_back``, ``lease_expired``)."""

    generation: int
    owner: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "owner": self.owner, "started_at": self.started_at.isoformat(),
                "ended_at": None if self.ended_at is None else self.ended_at.isoformat(), "outcome": self.outcome}


# --------------------------------------------------------------------------- the store


class JobStore:
    """Repository of jobs on one database. ``JobStore(url)``; call `migrate` once at start."""

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
        elif self.dialect == "postgresql":
            _configure_postgresql(self.engine)
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
        return migrate_engine(self._write_engine, apply=apply)

    def create_all(self) -> int:
        """The schema at this code's version: `migrate` (the name of the pre-migration method)."""
        return self.migrate()

    def schema_version(self) -> int | None:
        """The schema version recorded in the database (None before `migrate`)."""
        with self._read() as conn:
            return conn.execute(select(func.max(_version_table.c.version))).scalar()

    # ---- create / read

    def create(self, spec: Mapping[str, Any], spec_hash: str, idempotency_key: str | None = None,
               callback_url: str | None = None, listing: Mapping[str, Any] | None = None) -> Job:
        """Persist a new queued job and return it (or the job already made with ``idempotency_key``).

        ``listing``: the job's ``strategy``, ``n_symbols`` and ``n_columns`` (what `list` shows).
        Raises IdempotencyConflict when the key was used for a request whose hash differs.
        """
        return self.create_or_get(spec, spec_hash, idempotency_key, callback_url, listing)[0]

    def create_or_get(self, spec: Mapping[str, Any], spec_hash: str, idempotency_key: str | None = None,
                      callback_url: str | None = None,
                      listing: Mapping[str, Any] | None = None) -> tuple[Job, bool]:
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
            "updated_at": now, "lease_generation": 0, "lease_expires_at": None, "heartbeat_at": None,
            **{k: (listing or {}).get(k) for k in ("strategy", "n_symbols", "n_columns")},
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

    def get_light(self, job_id: str) -> Job | None:
        """The job without its ``spec`` and ``summary`` (None in the snapshot): a cheap status read."""
        with self._read() as conn:
            row = conn.execute(select(*[c for c in jobs_table.c if c.name not in ("spec", "summary")])
                               .where(_c.id == job_id)).first()
        return None if row is None else Job(**{f.name: row._mapping.get(f.name) for f in dataclasses.fields(Job)})

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[JobBrief], int]:
        """One page of jobs, newest first, optionally of one status, and the total matching.

        Reads the listing's short columns only (`JobBrief`): never a job's spec or summary."""
        if status is not None and status not in STATUSES:
            raise JobQueryError(f"status must be one of {', '.join(STATUSES)}, got {status!r}",
                                {"field": "status"})
        if limit < 0 or offset < 0:
            raise JobQueryError("limit and offset must be >= 0", {"limit": limit, "offset": offset})
        where = [] if status is None else [_c.status == status]
        with self._read() as conn:
            total = conn.execute(select(func.count()).select_from(jobs_table).where(*where)).scalar_one()
            rows = conn.execute(
                select(*[_c[name] for name in BRIEF_FIELDS]).where(*where)
                .order_by(_c.created_at.desc(), _c.id.desc()).limit(limit).offset(offset)
            ).all()
        return [JobBrief(**dict(r._mapping)) for r in rows], int(total)

    def counts_by_status(self) -> dict[str, int]:
        """Number of jobs in each status (every status present, zero when none)."""
        with self._read() as conn:
            rows = conn.execute(select(_c.status, func.count()).group_by(_c.status)).all()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({s: int(n) for s, n in rows})
        return counts

    # ---- leases: the clock

    def _now(self) -> Any:
        """"Now" in a statement: the database's clock on PostgreSQL, this process's on SQLite."""
        if self.dialect == "postgresql":
            return func.clock_timestamp(type_=UTCDateTime())
        return literal(utc_now(), UTCDateTime())

    def _after(self, seconds: float) -> Any:
        """"Now + seconds" in a statement (a lease's expiry), on the same clock as `_now`."""
        if self.dialect == "postgresql":
            return func.clock_timestamp(type_=UTCDateTime()) + literal(dt.timedelta(seconds=seconds), Interval())
        return literal(utc_now() + dt.timedelta(seconds=seconds), UTCDateTime())

    def _held(self, owner: str | None, generation: int | None) -> list[Any]:
        """Conditions of a write by a lease holder: still its owner, same generation, lease not expired."""
        where: list[Any] = []
        if owner is not None:
            where += [_c.owner == owner, _c.lease_expires_at > self._now()]
        if generation is not None:
            where.append(_c.lease_generation == generation)
        return where

    def _expired(self) -> Any:
        return or_(_c.lease_expires_at.is_(None), _c.lease_expires_at <= self._now())

    # ---- running

    def claim_next(self, owner: str, lease_s: float = DEFAULT_LEASE_S) -> Job | None:
        """Atomically take the oldest queued job for ``owner`` with a lease of ``lease_s`` seconds:
        running, attempts + 1, lease generation + 1, a ``job_attempts`` row. None if none waits."""
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
                        lease_generation=_c.lease_generation + 1, lease_expires_at=self._after(lease_s),
                        heartbeat_at=self._now(),
                    )
                )
                if res.rowcount == 1:
                    row = conn.execute(select(jobs_table).where(_c.id == job_id)).one()
                    conn.execute(insert(attempts_table).values(job_id=job_id, generation=row.lease_generation,
                                                               owner=owner, started_at=now, outcome=RUNNING))
                    return Job._from_row(row)
            # Someone else took it between our read and our update: look again.
        return None

    def renew_leases(self, owner: str, held: Mapping[str, int], lease_s: float = DEFAULT_LEASE_S) -> set[str]:
        """The heartbeat: extend by ``lease_s`` every lease of ``owner`` in ``held`` (job id →
        generation) that has not expired, in one statement. Returns the ids renewed; a job of
        ``held`` missing from them is lost to this owner (expired, re-queued, taken, finished)."""
        if not held:
            return set()
        with self._write() as conn:
            rows = conn.execute(
                update(jobs_table).where(
                    _c.status == RUNNING, _c.owner == owner, _c.lease_expires_at > self._now(),
                    tuple_(_c.id, _c.lease_generation).in_([(k, int(v)) for k, v in held.items()]),
                ).values(lease_expires_at=self._after(lease_s), heartbeat_at=self._now()).returning(_c.id)
            ).all()
        return {r.id for r in rows}

    def update_progress(self, job_id: str, progress: float, stage: str | None = None, *, owner: str | None = None,
                        generation: int | None = None) -> bool:
        """Record progress (clamped to 0–1) and stage of a running job; False if it is not running
        (or, with ``owner``/``generation``, no longer held by that lease: the write is refused)."""
        p = float(progress)
        p = 0.0 if not math.isfinite(p) else min(1.0, max(0.0, p))
        values: dict[str, Any] = {"progress": p, "updated_at": utc_now()}
        if stage is not None:
            values["stage"] = stage[:STAGE_MAX]
        with self._write() as conn:
            res = conn.execute(update(jobs_table).where(_c.id == job_id, _c.status == RUNNING,
                                                        *self._held(owner, generation)).values(**values))
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
               *, owner: str | None = None, generation: int | None = None) -> bool:
        """Write the final state of a running job, once. False if it was not running (already finished).

        ``status`` is succeeded, failed or cancelled; ``error`` is ``{code, message, details}`` or a
        GpuBacktestError. With ``owner`` (and ``generation``), only that lease's holder may finish
        it, while its lease lasts: a process that lost the job (its lease expired, it was
        re-queued or taken over) cannot overwrite the new run. The run's history row ends with
        the same statement's transaction.
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"finish() needs a final status ({', '.join(FINAL_STATUSES)}), got {status!r}")
        now = utc_now()
        values: dict[str, Any] = {
            "status": status, "summary": to_jsonable(summary) if summary is not None else None,
            "error": _error_doc(error), "artifact_path": str(artifact_path) if artifact_path is not None else None,
            "finished_at": now, "updated_at": now, "stage": status, "lease_expires_at": None,
        }
        if status == SUCCEEDED:
            values["progress"] = 1.0
        with self._write() as conn:
            res = conn.execute(update(jobs_table).where(_c.id == job_id, _c.status == RUNNING,
                                                        *self._held(owner, generation)).values(**values))
            if res.rowcount != 1:
                return False
            self._end_attempt(conn, job_id, generation, status, now)
        return True

    @staticmethod
    def _end_attempt(conn: Connection, job_id: str, generation: int | None, outcome: str, now: dt.datetime) -> None:
        where = [_a.job_id == job_id, _a.outcome == RUNNING]
        if generation is not None:
            where.append(_a.generation == generation)
        conn.execute(update(attempts_table).where(*where).values(outcome=outcome, ended_at=now))

    def hand_back(self, owner: str, held: Mapping[str, int]) -> dict[str, str]:
        """A clean shutdown: give ``owner``'s running jobs of ``held`` (id → generation) back at
        once, without waiting for their leases to expire. Each becomes queued (its attempt does
        not count: ``attempts`` - 1), or cancelled if a cancel was asked. Returns id → new status."""
        if not held:
            return {}
        pairs = [(k, int(v)) for k, v in held.items()]
        now = utc_now()
        out: dict[str, str] = {}
        with self._write() as conn:
            mine = [_c.status == RUNNING, _c.owner == owner, tuple_(_c.id, _c.lease_generation).in_(pairs)]
            cancelled = conn.execute(
                update(jobs_table).where(*mine, _c.cancel_requested.is_(True)).values(
                    status=CANCELLED, stage=CANCELLED, finished_at=now, updated_at=now, lease_expires_at=None,
                ).returning(_c.id, _c.lease_generation)).all()
            requeued = conn.execute(
                update(jobs_table).where(*mine, _c.cancel_requested.is_(False)).values(
                    status=QUEUED, owner=None, progress=0.0, stage="requeued", started_at=None, updated_at=now,
                    lease_expires_at=None, attempts=_c.attempts - 1,
                ).returning(_c.id, _c.lease_generation)).all()
            for rows, status, outcome in ((cancelled, CANCELLED, CANCELLED), (requeued, QUEUED, HANDED_BACK)):
                for r in rows:
                    self._end_attempt(conn, r.id, r.lease_generation, outcome, now)
                    out[r.id] = status
        return out

    def recover(self, max_attempts: int = 3) -> dict[str, int]:
        """Handle running jobs whose lease has expired (their server died, paused or lost the
        database); returns counts by what was done.

        Expired jobs with a pending cancel become cancelled; the others are re-queued (keeping
        their place: the oldest run first) while ``attempts < max_attempts``, else failed with
        error code ``too_many_attempts``. Each is one conditional statement (still running,
        same generation, lease still expired), so servers recovering at once act once; jobs
        under a live lease are counted as ``alive`` and left alone. A running job without a
        lease (left by a server from before leases) counts as expired.
        Returns ``{"requeued", "failed", "cancelled", "alive"}``.
        """
        counts = {"requeued": 0, "failed": 0, "cancelled": 0, "alive": 0}
        with self._read() as conn:
            rows = conn.execute(select(_c.id, _c.owner, _c.attempts, _c.cancel_requested, _c.lease_generation)
                                .where(_c.status == RUNNING, self._expired())).all()
            counts["alive"] = int(conn.execute(select(func.count()).select_from(jobs_table).where(
                _c.status == RUNNING, not_(self._expired()))).scalar_one())
        for r in rows:
            now = utc_now()
            same = [_c.id == r.id, _c.status == RUNNING, _c.lease_generation == r.lease_generation, self._expired()]
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
                    "message": f"the job was lost {r.attempts} times (its server stopped renewing its lease: "
                               f"it died, paused or lost the database); giving up after {max_attempts} attempts",
                    "details": {"attempts": r.attempts, "max_attempts": max_attempts, "last_owner": r.owner},
                }}
            try:
                with self._write() as conn:
                    if self.dialect == "postgresql":  # a row locked by a stalled session: skip it this round
                        conn.execute(text(f"SET LOCAL lock_timeout = {_PG_RECOVER_LOCK_TIMEOUT_MS}"))
                    res = conn.execute(update(jobs_table).where(*same).values(updated_at=now, lease_expires_at=None,
                                                                               **values))
                    if res.rowcount == 1:
                        self._end_attempt(conn, r.id, r.lease_generation, LEASE_EXPIRED, now)
                        counts[kind] += 1
            except OperationalError:
                log.info("recovering job %s: its row is locked; trying again later", r.id)
        return counts

    # ---- callbacks

    def record_callback(self, job_id: str, status: str, attempts: int | None = None,
                        last_error: str | None = None, delivered: bool = False) -> bool:
        """Record the delivery of a job's callback: its status (``pending``, ``delivered``,
        ``failed``, ``interrupted``), attempts so far and last error (kept when None is given);
        ``delivered`` stamps the delivery time. False if there is no such job."""
        values: dict[str, Any] = {"callback_status": status[:16]}
        if attempts is not None:
            values["callback_attempts"] = int(attempts)
        if last_error is not None:
            values["callback_last_error"] = last_error[:2000]
        if delivered:
            values["callback_delivered_at"] = utc_now()
        with self._write() as conn:
            res = conn.execute(update(jobs_table).where(_c.id == job_id).values(**values))
        return res.rowcount == 1

    def attempts_history(self, job_id: str) -> list[Attempt]:
        """The runs of a job, oldest first (empty for a job never started)."""
        with self._read() as conn:
            rows = conn.execute(select(_a.generation, _a.owner, _a.started_at, _a.ended_at, _a.outcome)
                                .where(_a.job_id == job_id).order_by(_a.generation)).all()
        return [Attempt(r.generation, r.owner, r.started_at, r.ended_at, r.outcome) for r in rows]

    # ---- housekeeping

    def delete(self, job_id: str) -> Job | None:
        """Delete one final job (and its history); returns it, or None if there is no such job.

        Raises `JobNotFinal` when the job is queued or running (cancel it first). The caller
        removes its artifact (``artifact_path``)."""
        with self._write() as conn:
            row = conn.execute(select(jobs_table).where(_c.id == job_id).with_for_update()).first()
            if row is None:
                return None
            job = Job._from_row(row)
            if not is_final(job.status):
                raise JobNotFinal(f"job {job_id} is {job.status}; cancel it first, then delete it",
                                  {"job_id": job_id, "status": job.status})
            conn.execute(delete(attempts_table).where(_a.job_id == job_id))  # SQLite enforces no cascade
            conn.execute(delete(jobs_table).where(_c.id == job_id, _c.status.in_(FINAL_STATUSES)))
        return job

    def delete_older_than(self, age: dt.timedelta | dt.datetime,
                          statuses: Iterable[str] = FINAL_STATUSES, limit: int = DELETE_BATCH) -> list[Deleted]:
        """Delete up to ``limit`` final jobs finished before ``age`` ago (or before a UTC datetime),
        oldest first; returns their ids and artifact paths (the caller removes the artifacts, and
        calls again while a full batch came back). Reads two short columns, never a summary.
        Only final statuses may be given."""
        statuses = tuple(statuses)
        if not set(statuses) <= set(FINAL_STATUSES):
            raise ValueError(f"only final jobs can be deleted, got {statuses!r}")
        cutoff = utc_now() - age if isinstance(age, dt.timedelta) else age
        if cutoff.tzinfo is None:
            raise ValueError("naive datetime: give a timezone-aware cutoff")
        when = func.coalesce(_c.finished_at, _c.created_at)
        with self._write() as conn:
            rows = conn.execute(select(_c.id, _c.artifact_path).where(_c.status.in_(statuses), when < cutoff)
                                .order_by(when).limit(limit)).all()
            gone = [Deleted(r.id, r.artifact_path) for r in rows]
            if gone:
                ids = [d.id for d in gone]
                conn.execute(delete(attempts_table).where(_a.job_id.in_(ids)))  # SQLite enforces no cascade
                conn.execute(delete(jobs_table).where(_c.id.in_(ids), _c.status.in_(statuses)))
        return gone


def _configure_postgresql(engine: Engine) -> None:
    """Every session ends a transaction left open for ``_PG_IDLE_IN_TRANSACTION_S`` (a server
    paused or cut off between two statements), so its row locks never hold the others up."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("SET idle_in_transaction_session_timeout = %s", (int(_PG_IDLE_IN_TRANSACTION_S * 1000),))
        finally:
            cur.close()
        dbapi_conn.commit()


def migrate_engine(write_engine: Engine, *, apply: bool = True) -> int:
    """`JobStore.migrate` on an engine (also what the market-data catalog calls): the migrations
    under their lock, retried when a new SQLite file is briefly locked by another opener."""
    from .migrations import migrate

    for attempt in range(_MIGRATE_RETRIES):
        try:
            return migrate(write_engine, apply=apply)
        except OperationalError as exc:
            # SQLite: servers opening a new database at once can meet "database is locked"
            # without waiting (switching it to WAL); PostgreSQL: a connection that failed.
            if attempt == _MIGRATE_RETRIES - 1:
                raise
            log.warning("migrating the job database failed (%s); trying again", str(exc.orig).strip())
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


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
