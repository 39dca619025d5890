"""Versioned schema migrations of the job database (Alembic), applied at start-up under a lock.

The revisions are the files in ``versions/``, one per schema change, each with a
``schema_version`` integer (1, 2, …) that it also records in the ``schema_version`` table::

    0001_baseline   the schema `create_all` made before migrations (jobs, schema_version)
    0002_leases     job leases (owner + expiry + generation) and the job_attempts history
    0003_market_catalog  the market-data catalog (market_catalog)
    0004_job_listing     jobs.strategy, n_symbols, n_columns: what a job listing shows
    0005_catalog_file    market_catalog.file: the file of each series' current version
    0006_callback_delivery  the delivery record of a job's callback (status, attempts, last error)
    0007_catalog_ended   market_catalog.ended_ns: the final bar of a series its source marks as ended
    0008_saved_strategy  saved_strategy: named, versioned expression strategies (POST /strategies)

`migrate` runs in one transaction that first takes a lock — PostgreSQL: an advisory
transaction lock; SQLite: ``BEGIN IMMEDIATE`` (the database's write lock) — so that several
servers starting at once migrate once: the first applies the revisions, the others wait,
then find the database at head. Inside the lock it

1. recognises a database made by the old `create_all` (tables ``jobs`` and
   ``schema_version`` at version 1, no ``alembic_version``) as the baseline and stamps it;
2. refuses (`ConfigError`) a database at a revision this code does not know, or with a
   schema version above its own: it was upgraded by a newer server;
3. applies the missing revisions (or, with ``apply=False``, refuses to go on).

Servers older than migrations read the ``schema_version`` table, and refuse to start on a
database whose version is above theirs, so they too stop with a clear message.

Adding a table or a column later is one new file in ``versions/`` (``down_revision`` = the
previous head, ``schema_version`` = the next integer, ending with `record_version`), plus the
model change and ``jobstore.SCHEMA_VERSION``. The Alembic config is built in code
(`alembic_config`); no ``alembic.ini`` is needed at run time. To use the ``alembic``
command while developing (``alembic revision --autogenerate``, ``alembic history``),
``python -m gpu_backtest.core.migrations alembic.ini`` writes a config pointing here.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Integer, MetaData, String, column, func, insert, inspect, select, table

from ..dbtypes import UTCDateTime
from ..errors import ConfigError
from ..timeutil import utc_now

__all__ = [
    "BASELINE",
    "MIGRATION_LOCK_KEY",
    "SchemaState",
    "alembic_config",
    "code_schema_version",
    "head_revision",
    "inspect_schema",
    "migrate",
    "record_version",
    "script_directory",
    "target_metadata",
]

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
BASELINE = "0001"
"""The revision of the schema that `create_all` made before migrations existed."""
MIGRATION_LOCK_KEY = 0x6762745F6A6F6273
"""PostgreSQL advisory lock key ("gbt_jobs"): also the key the pre-migration `create_all` took."""

_version_table = table("schema_version", column("version", Integer), column("applied_at", UTCDateTime()),
                       column("description", String(200)))


def target_metadata() -> MetaData:
    """The models' metadata (what autogenerate and the schema tests compare the database with)."""
    from .. import (
        catalog,  # noqa: F401 - registers market_catalog on the same metadata
        strategystore,  # noqa: F401 - registers saved_strategy on the same metadata
    )
    from ..jobstore import Base

    return Base.metadata


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    """An Alembic `Config` for this package's migrations, built in code (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> Any:
    """The revisions (an Alembic `ScriptDirectory`)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    head = script_directory().get_current_head()
    assert head is not None
    return str(head)


def code_schema_version() -> int:
    """The schema version of the head revision (= jobstore.SCHEMA_VERSION)."""
    script = script_directory()
    return int(script.get_revision(script.get_current_head()).module.schema_version)


def record_version(version: int, description: str) -> None:
    """Inside a revision's ``upgrade()``: record its schema version (what older servers check)."""
    from alembic import op

    op.get_bind().execute(insert(_version_table).values(version=version, applied_at=utc_now(),
                                                        description=description[:200]))


def forget_version(version: int) -> None:
    """Inside a revision's ``downgrade()``: remove its schema version row."""
    from alembic import op

    op.get_bind().execute(_version_table.delete().where(_version_table.c.version == version))


@dataclasses.dataclass(frozen=True)
class SchemaState:
    """What a database holds: its revisions, its schema version, and how it compares with this code."""

    revisions: tuple[str, ...]  # alembic_version rows (empty: none, or no such table)
    schema_version: int | None  # max(schema_version.version), None without the table
    tables: frozenset[str]
    head: str
    code_version: int

    @property
    def empty(self) -> bool:
        """No job tables yet (a new database)."""
        return not self.revisions and "jobs" not in self.tables

    @property
    def legacy(self) -> bool:
        """Made by the pre-migration `create_all`: to be stamped as the baseline."""
        return not self.revisions and "jobs" in self.tables

    @property
    def unknown_revisions(self) -> tuple[str, ...]:
        script = script_directory()
        out = []
        for rev in self.revisions:
            try:
                if script.get_revision(rev) is None:
                    out.append(rev)
            except Exception:  # alembic: "Can't locate revision identified by …"
                out.append(rev)
        return tuple(out)

    @property
    def newer(self) -> bool:
        """Written by a newer server: a revision this code does not know, or a higher version."""
        return bool(self.unknown_revisions) or (self.schema_version or 0) > self.code_version

    @property
    def current(self) -> bool:
        return self.revisions == (self.head,)


def inspect_schema(conn: Connection) -> SchemaState:
    """The `SchemaState` of the database behind ``conn``."""
    from alembic.runtime.migration import MigrationContext

    tables = frozenset(inspect(conn).get_table_names())
    revisions: tuple[str, ...] = ()
    if "alembic_version" in tables:
        revisions = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
    version = None
    if "schema_version" in tables:
        version = conn.execute(select(func.max(_version_table.c.version))).scalar()
    return SchemaState(revisions, None if version is None else int(version), tables, head_revision(),
                       code_schema_version())


def _newer_error(state: SchemaState) -> ConfigError:
    revs = ", ".join(state.revisions) or "none"
    return ConfigError(
        f"the job database is newer than this server: it is at schema version {state.schema_version} "
        f"(revision {revs}) and this server knows schema version {state.code_version} (revision {state.head}) "
        "at most. Run a server of the version that upgraded the database (or newer), or restore the "
        "database from before that upgrade",
        {"variable": "DATABASE_URL", "schema_version": state.schema_version, "revisions": list(state.revisions),
         "supported": state.code_version, "head": state.head},
    )


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Held until this transaction ends; the same key as the pre-migration create_all.
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
    # SQLite: the transaction began with BEGIN IMMEDIATE (the caller's engine), the write lock.


def migrate(engine: Engine, *, apply: bool = True, target: str = "head") -> int:
    """Bring the database to ``target`` (default: head) under the migration lock; returns the
    schema version afterwards.

    Raises ConfigError when the database is newer than this code, when its tables are not
    recognised, or (``apply=False``) when it needs an upgrade. On SQLite, ``engine`` must
    begin its transactions with ``BEGIN IMMEDIATE`` (JobStore's write engine does).
    """
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # its set-up chatter
    from alembic import command
    with engine.connect() as conn:
        with conn.begin():
            _lock(conn)
            state = inspect_schema(conn)
            if state.newer:
                raise _newer_error(state)
            cfg = alembic_config(conn)
            if state.legacy:
                if "schema_version" not in state.tables or state.schema_version != 1:
                    raise ConfigError(
                        f"the job database has a jobs table but no migration history, and schema version "
                        f"{state.schema_version} (expected 1, the baseline): not a database this server can "
                        "upgrade", {"variable": "DATABASE_URL", "schema_version": state.schema_version})
                if not apply:
                    raise _behind_error(state)
                log.info("job database made before migrations: stamping it as the baseline %s", BASELINE)
                command.stamp(cfg, BASELINE)
                state = inspect_schema(conn)
            if target != "head" or not state.current:
                if not apply:
                    raise _behind_error(state)
                log.info("migrating the job database from %s to %s", ", ".join(state.revisions) or "nothing",
                         target)
                command.upgrade(cfg, target)
                state = inspect_schema(conn)
            return int(state.schema_version or 0)


def _behind_error(state: SchemaState) -> ConfigError:
    return ConfigError(
        f"the job database is at schema version {state.schema_version} and this server needs version "
        f"{state.code_version}: run `gpu-backtest migrate` (or start with GPU_BACKTEST_AUTO_MIGRATE=true)",
        {"variable": "GPU_BACKTEST_AUTO_MIGRATE", "schema_version": state.schema_version,
         "supported": state.code_version},
    )


def write_ini(path: str | Path, url: str = "sqlite:///jobs.sqlite") -> Path:
    """Write an ``alembic.ini`` for the ``alembic`` command while developing (not needed to run)."""
    p = Path(path)
    p.write_text(f"[alembic]\nscript_location = {HERE}\nsqlalchemy.url = {url}\n"
                 "[loggers]\nkeys = root\n[handlers]\nkeys = console\n[formatters]\nkeys = generic\n"
                 "[logger_root]\nlevel = INFO\nhandlers = console\n"
                 "[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\nformatter = generic\n"
                 "[formatter_generic]\nformat = %%(levelname)s %%(name)s: %%(message)s\n")
    return p
