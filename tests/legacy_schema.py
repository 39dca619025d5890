"""The job database as servers before migrations made it (schema version 1), frozen for tests.

`legacy_create_all` is that code's ``JobStore.create_all`` (commit 23a425b, core/jobstore.py):
the same tables, columns, types, names and start-up check, copied here so the upgrade tests
start from exactly what a deployed database holds, whatever the models become.
`fill_every_state` writes jobs in every status the way that code left them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
LEGACY_VERSION = 1


class UTCDateTime(TypeDecorator[dt.datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


JsonDoc = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

jobs = Table(
    "jobs", metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("spec", JsonDoc, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("idempotency_key", String(255), nullable=True, unique=True),
    Column("progress", Float, nullable=False, default=0.0),
    Column("stage", String(200), nullable=False, default=""),
    Column("error", JsonDoc, nullable=True),
    Column("summary", JsonDoc, nullable=True),
    Column("artifact_path", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("owner", String(255), nullable=True),
    Column("callback_url", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="status"),
    CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
    Index("ix_jobs_status_created_at", "status", "created_at"),
)
schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UTCDateTime, nullable=False),
    Column("description", String(200), nullable=False, default=""),
)


class LegacyNewerDatabase(Exception):
    """What the old server raised (a ConfigError) on a database newer than itself."""


def legacy_create_all(engine: Engine) -> int:
    """The pre-migration ``JobStore.create_all``: create what is missing, record version 1,
    refuse a database whose recorded version is higher (returns the version)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(0x6762745F6A6F6273)))
        metadata.create_all(conn)
        current = conn.execute(select(func.max(schema_version.c.version))).scalar()
        if current is None:
            conn.execute(insert(schema_version).values(version=LEGACY_VERSION, applied_at=dt.datetime.now(dt.UTC),
                                                       description="jobs table"))
            current = LEGACY_VERSION
    if current > LEGACY_VERSION:
        raise LegacyNewerDatabase(
            f"the job database has schema version {current}, newer than this code's {LEGACY_VERSION}")
    return int(current)


def _t(minutes: float) -> dt.datetime:
    return dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=minutes)


def fill_every_state(engine: Engine) -> dict[str, dict[str, Any]]:
    """Jobs in every status (two queued, one with an idempotency key and a callback; a running
    one of a server that is gone; a succeeded one with an artifact; failed; cancelled both
    ways), written as the old code wrote them. Returns the rows by id."""
    spec = {"strategy": "sma_crossover", "source": "synthetic", "symbols": ["SYN001"],
            "params": {"fast": [5, 10], "slow": 50}, "output": {"top_k": 3, "rank_by": "sharpe"}}

    def row(status: str, i: int, **kw: Any) -> dict[str, Any]:
        doc = {"id": uuid.uuid4().hex, "status": status, "spec": {**spec, "n": i}, "spec_hash": f"{i:064x}",
               "idempotency_key": None, "progress": 0.0, "stage": status, "error": None, "summary": None,
               "artifact_path": None, "attempts": 0, "cancel_requested": False, "owner": None, "callback_url": None,
               "created_at": _t(i), "started_at": None, "finished_at": None, "updated_at": _t(i)}
        doc.update(kw)
        return doc

    rows = [
        row("queued", 0, stage="queued"),
        row("queued", 1, stage="requeued", attempts=1, idempotency_key="client-key-1",
            callback_url="http://hooks.example/done"),
        row("running", 2, stage="simulating", progress=0.4, attempts=1, owner="0f" * 16,
            started_at=_t(3), updated_at=_t(4)),
        row("succeeded", 3, progress=1.0, attempts=1, owner="1e" * 16, started_at=_t(4), finished_at=_t(5),
            updated_at=_t(5), artifact_path="/data/artifacts/" + "ab" * 16,
            summary={"info": {"n_columns": 2, "rank_by": "sharpe", "elapsed_s": 0.5},
                     "top": [{"rank": 1, "symbol": "SYN001", "params": {"fast": 5, "slow": 50},
                              "metrics": {"sharpe": 1.25, "total_return": None}}], "details": []}),
        row("failed", 4, attempts=3, owner="2d" * 16, started_at=_t(5), finished_at=_t(6), updated_at=_t(6),
            error={"code": "too_many_attempts", "message": "the job was interrupted 3 times",
                   "details": {"attempts": 3, "max_attempts": 3, "last_owner": "2d" * 16}}),
        row("failed", 5, attempts=1, owner="3c" * 16, started_at=_t(6), finished_at=_t(7), updated_at=_t(7),
            progress=0.05, error={"code": "invalid_data", "message": "no bars for ZZZ",
                                  "details": {"source": "ZZZ", "problems": []}}),
        row("cancelled", 6, cancel_requested=True, finished_at=_t(7), updated_at=_t(7)),
        row("cancelled", 7, cancel_requested=True, attempts=1, owner="4b" * 16, started_at=_t(7),
            finished_at=_t(8), updated_at=_t(8), progress=0.3),
    ]
    with engine.begin() as conn:
        conn.execute(insert(jobs), rows)
    return {r["id"]: r for r in rows}
