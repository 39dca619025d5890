"""Saved strategies: named, versioned expression strategies in the job database.

The table ``saved_strategy`` (migration 0008) holds one row per version: ``name``,
``version`` (1, 2, …), ``doc`` (the strategy's canonical JSON: `core.expr.strategy.canonical`),
``digest`` (its sha256), ``description`` and ``created_at``. ``POST /strategies`` creates
version 1, ``PUT /strategies/{name}`` adds the next version, ``DELETE`` removes every version.
A job that runs a saved strategy carries the exact document, name and version in its own spec
(the server inlines them at submit: `inline_saved`), so its result stays reproducible after
the strategy changes or is deleted.

Every method is one short transaction; callers on the event loop run them in a thread.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Engine, Integer, String, Table, Text, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from .dbtypes import UTCDateTime
from .errors import GpuBacktestError, NotFoundError, SpecError
from .jobstore import Base

__all__ = ["NAME_RE", "SavedStrategy", "StrategyExists", "StrategyStore", "saved_strategy"]

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # lower-case identifiers: never a path, SQL or shell text
MAX_VERSIONS_LISTED = 1000

saved_strategy = Table(
    "saved_strategy",
    Base.metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("doc", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
)



class StrategyExists(GpuBacktestError):
    """``POST /strategies`` for a name that is taken (a saved strategy, a built-in or a plugin's)."""

    code = "strategy_exists"
    status = 409


@dataclass(frozen=True)
class SavedStrategy:
    """One version of a saved strategy."""

    name: str
    version: int
    doc: dict[str, Any]
    digest: str
    description: str
    created_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``GET /strategies/{name}``)."""
        return {"name": self.name, "version": self.version, "description": self.description,
                "digest": self.digest, "created_at": self.created_at.isoformat(), "strategy": self.doc}


def check_name(name: Any, where: str = "name") -> str:
    """A saved strategy's name, or SpecError naming ``where``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SpecError(where, f"must be a lower-case identifier (a letter, then letters, digits or _; at most "
                               f"64 characters), got {name!r}")
    return name


def _row(r: Any) -> SavedStrategy:
    return SavedStrategy(r.name, int(r.version), json.loads(r.doc), r.digest, r.description, r.created_at)


class StrategyStore:
    """The saved strategies of one job database (the `JobStore`'s engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # writers read (the latest version) and then write: on SQLite (WAL) a plain BEGIN's read
        # snapshot cannot be upgraded once another connection has written ("database is locked",
        # at once, whatever the busy timeout), so writers take the write lock at BEGIN (BEGIN
        # IMMEDIATE: `core.jobstore._configure_sqlite`, which the job store's engine has; a no-op
        # option elsewhere) and wait for it within the busy timeout
        self._write_engine = engine.execution_options(gbt_immediate=True)

    def save(self, name: str, doc: Mapping[str, Any], digest: str, description: str, *,
             new: bool) -> SavedStrategy:
        """Store ``doc`` as the next version of ``name`` (``new``: as version 1; StrategyExists if
        the name has versions; otherwise NotFoundError when it has none)."""
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        now = dt.datetime.now(dt.UTC)
        for _ in range(5):
            try:
                with self._write_engine.begin() as conn:
                    if conn.dialect.name == "postgresql":  # writers of saved strategies one at a time, as on SQLite
                        conn.exec_driver_sql(f"LOCK TABLE {saved_strategy.name} IN SHARE ROW EXCLUSIVE MODE")
                    latest = conn.execute(select(func.max(saved_strategy.c.version))
                                          .where(saved_strategy.c.name == name)).scalar()
                    if new and latest is not None:
                        raise StrategyExists(f"a strategy named {name!r} exists (version {latest}); PUT "
                                             f"/strategies/{name} adds a version",
                                             {"name": name, "version": latest})
                    if not new and latest is None:
                        raise NotFoundError(f"no saved strategy {name!r}", {"name": name})
                    version = (latest or 0) + 1
                    conn.execute(insert(saved_strategy).values(name=name, version=version, doc=text, digest=digest,
                                                               description=description, created_at=now))
            except IntegrityError:
                # another writer inserted this (name, version) since our read (a database where the
                # lock above is not taken): this transaction is rolled back and the next try sees that
                # row (a 409 for a new name, the next version for PUT)
                continue
            return SavedStrategy(name, version, json.loads(text), digest, description, now)
        raise StrategyExists(f"strategy {name!r} is being saved concurrently; try again", {"name": name})

    def get(self, name: str, version: int | None = None) -> SavedStrategy:
        """Version ``version`` (None: the latest) of ``name``; NotFoundError otherwise."""
        q = select(saved_strategy).where(saved_strategy.c.name == name)
        q = (q.where(saved_strategy.c.version == version) if version is not None
             else q.order_by(saved_strategy.c.version.desc()).limit(1))
        with self.engine.connect() as conn:
            r = conn.execute(q).first()
        if r is None:
            what = f"saved strategy {name!r}" if version is None else f"version {version} of saved strategy {name!r}"
            raise NotFoundError(f"no {what}", {"name": name, "version": version})
        return _row(r)

    def latest(self) -> list[SavedStrategy]:
        """The latest version of every saved strategy, by name."""
        last = (select(saved_strategy.c.name, func.max(saved_strategy.c.version).label("v"))
                .group_by(saved_strategy.c.name).subquery())
        q = (select(saved_strategy).join(last, (saved_strategy.c.name == last.c.name)
                                         & (saved_strategy.c.version == last.c.v))
             .order_by(saved_strategy.c.name).limit(MAX_VERSIONS_LISTED))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q)]

    def versions(self, name: str) -> list[int]:
        """The versions of ``name``, ascending (empty when unknown)."""
        with self.engine.connect() as conn:
            return [int(v) for v in conn.execute(select(saved_strategy.c.version)
                                                 .where(saved_strategy.c.name == name)
                                                 .order_by(saved_strategy.c.version)).scalars()]

    def all_versions(self) -> dict[str, list[int]]:
        """Every saved strategy's versions, ascending, in one query (name → versions)."""
        out: dict[str, list[int]] = {}
        with self.engine.connect() as conn:
            for name, version in conn.execute(select(saved_strategy.c.name, saved_strategy.c.version)
                                              .order_by(saved_strategy.c.name, saved_strategy.c.version)):
                out.setdefault(name, []).append(int(version))
        return out

    def delete(self, name: str) -> int:
        """Delete every version of ``name``; NotFoundError when it has none. Returns the count."""
        with self._write_engine.begin() as conn:
            n = conn.execute(delete(saved_strategy).where(saved_strategy.c.name == name)).rowcount
        if not n:
            raise NotFoundError(f"no saved strategy {name!r}", {"name": name})
        return int(n)
