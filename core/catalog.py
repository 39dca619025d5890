"""The market-data catalog: one row per stored series, in the database the servers share.

The table ``market_catalog`` lives in the job database (`core.jobstore.default_url`:
``DATABASE_URL``, else ``<data dir>/jobs.sqlite``), so every server and command sees one
catalog and nothing opens SQLite on a shared market-data path. It is part of the job
database's schema (migrations 0003, 0005 and 0007, `core/migrations/`): `Catalog` brings the database to this
code's schema on construction, under the migrations' lock, on SQLite and PostgreSQL.

Columns: ``source``, ``frequency``, ``symbol`` (the primary key, in that order: listings by
source and frequency read the index in order), ``first_ns`` / ``last_ns`` (UTC nanoseconds of
the first and last bar), ``rows``, ``updated_ns`` and ``file`` (the name of the Parquet file that
holds those bars, in the series' directory: `core.marketdata` writes every version to a new file
and switches the row to it; NULL: ``bars.parquet``, a series written before revision 0005) and
``ended_ns`` (revision 0007): the UTC nanoseconds of the series' final bar when its source marks
the series as *ended* (a delisting: Tiingo's ticker end date, an upload's ``delisted`` flag), NULL
otherwise. A write of a new version sets the mark with the rows (`put_many`); `set_ended` marks a
stored version afterwards, only while the row still ends at that bar.
Writes are upserts; `Catalog.put_many` writes any number of rows in one transaction, so a row
always describes the file it names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    String,
    Table,
    and_,
    create_engine,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import make_url

from .jobstore import Base, _configure_sqlite, migrate_engine, normalise_url

__all__ = ["Catalog", "CatalogEntry", "market_catalog", "metadata"]

metadata = Base.metadata  # one schema with the jobs tables: migrated by core/migrations (revisions 0003, 0005, 0007)

market_catalog = Table(
    "market_catalog",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("frequency", String(16), primary_key=True),
    Column("symbol", String(32), primary_key=True),
    Column("first_ns", BigInteger, nullable=False),
    Column("last_ns", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    Column("file", String(80), nullable=True),
    Column("ended_ns", BigInteger, nullable=True),
)
_c = market_catalog.c
_KEY = ("source", "frequency", "symbol")
_UPDATED = ("first_ns", "last_ns", "rows", "updated_ns", "file", "ended_ns")  # what an upsert replaces
_SQLITE_BUSY_TIMEOUT_S = 30.0
_IN_CHUNK = 500  # symbols per IN (...) list


@dataclass(frozen=True)
class CatalogEntry:
    """One stored series: what the catalog answers without opening the Parquet file."""

    source: str
    symbol: str
    frequency: str
    first: pd.Timestamp
    last: pd.Timestamp
    rows: int
    updated: pd.Timestamp
    file: str | None = None  # the series' current file (None: the pre-versioning ``bars.parquet``)
    ended: pd.Timestamp | None = None  # the final bar, when the source marks the series as ended

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "symbol": self.symbol, "frequency": self.frequency,
                "first": self.first.isoformat(), "last": self.last.isoformat(), "rows": self.rows,
                "updated": self.updated.isoformat(),
                "ended": self.ended.isoformat() if self.ended is not None else None}

    def _row(self) -> dict[str, Any]:
        return {"source": self.source, "frequency": self.frequency, "symbol": self.symbol,
                "first_ns": int(self.first.value), "last_ns": int(self.last.value), "rows": int(self.rows),
                "updated_ns": int(self.updated.value), "file": self.file,
                "ended_ns": int(self.ended.value) if self.ended is not None else None}


def _entry(row: Any) -> CatalogEntry:
    m = row._mapping
    return CatalogEntry(m["source"], m["symbol"], m["frequency"], pd.Timestamp(m["first_ns"], tz="UTC"),
                        pd.Timestamp(m["last_ns"], tz="UTC"), int(m["rows"]), pd.Timestamp(m["updated_ns"], tz="UTC"),
                        m["file"], pd.Timestamp(m["ended_ns"], tz="UTC") if m["ended_ns"] is not None else None)


class Catalog:
    """The ``market_catalog`` table on one database. ``Catalog(url_or_engine)`` creates the table.

    Thread-safe (one SQLAlchemy engine, a connection pool); each method is one transaction.
    """

    def __init__(self, url: str | Engine) -> None:
        if isinstance(url, Engine):
            self.engine = url
            self._owned = False
        else:
            normalised = normalise_url(url)
            parsed = make_url(normalised)
            args: dict[str, Any] = {}
            kwargs: dict[str, Any] = {}
            if parsed.get_backend_name() == "sqlite":
                args["timeout"] = _SQLITE_BUSY_TIMEOUT_S
                if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
                    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            else:
                kwargs["pool_pre_ping"] = True
            self.engine = create_engine(normalised, connect_args=args, **kwargs)
            if parsed.get_backend_name() == "sqlite":
                _configure_sqlite(self.engine)
            self._owned = True
        self.dialect = self.engine.dialect.name
        self._write_engine = self.engine.execution_options(gbt_immediate=True)
        self.create()

    def __repr__(self) -> str:
        return f"Catalog({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close the pooled connections (only of an engine this catalog created)."""
        if self._owned:
            self.engine.dispose()

    def create(self) -> None:
        """Bring the database to this code's schema with the migrations (the catalog is revision
        0003; safe from several processes at once: one migrates under a lock)."""
        migrate_engine(self._write_engine)

    # -- writing --------------------------------------------------------------------------------
    def put(self, entry: CatalogEntry) -> None:
        """Insert or replace one row."""
        self.put_many([entry])

    def put_many(self, entries: Iterable[CatalogEntry]) -> None:
        """Insert or replace many rows in one transaction."""
        rows = [e._row() for e in entries]
        if not rows:
            return
        with self._write_engine.begin() as conn:
            if self.dialect in ("sqlite", "postgresql"):
                if self.dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert as upsert
                else:
                    from sqlalchemy.dialects.postgresql import insert as upsert
                stmt = upsert(market_catalog)
                stmt = stmt.on_conflict_do_update(
                    index_elements=list(_KEY),
                    set_={k: stmt.excluded[k] for k in _UPDATED})
                conn.execute(stmt, rows)
            else:  # pragma: no cover - other databases: delete, then insert
                for chunk in _chunks(rows, _IN_CHUNK):
                    conn.execute(delete(market_catalog).where(
                        tuple_(_c.source, _c.frequency, _c.symbol).in_([tuple(r[k] for k in _KEY) for r in chunk])))
                conn.execute(insert(market_catalog), rows)

    def set_ended(self, source: str, frequency: str, marks: Mapping[str, int | None]) -> list[str]:
        """Mark stored series as ended (``{symbol: UTC ns of its final bar}``) or not (``None``), in
        one transaction. A mark is written only while the row's last bar is that bar (a series
        rewritten meanwhile is left alone); a clear always applies. Returns the symbols changed."""
        changed: list[str] = []
        with self._write_engine.begin() as conn:
            for sym, ns in marks.items():
                where = [_c.source == source, _c.frequency == frequency, _c.symbol == sym]
                if ns is not None:
                    where.append(_c.last_ns == int(ns))
                res = conn.execute(update(market_catalog).where(*where).values(
                    ended_ns=None if ns is None else int(ns)))
                if res.rowcount:
                    changed.append(sym)
        return changed

    def delete(self, source: str, symbol: str, frequency: str) -> None:
        """Remove one row (nothing if it is not there)."""
        with self._write_engine.begin() as conn:
            conn.execute(delete(market_catalog).where(_c.source == source, _c.frequency == frequency,
                                                      _c.symbol == symbol))

    def delete_many(self, source: str, frequency: str, symbols: Sequence[str]) -> None:
        """Remove the rows of ``symbols`` in one transaction."""
        with self._write_engine.begin() as conn:
            for chunk in _chunks(list(symbols), _IN_CHUNK):
                conn.execute(delete(market_catalog).where(_c.source == source, _c.frequency == frequency,
                                                          _c.symbol.in_(chunk)))

    # -- reading --------------------------------------------------------------------------------
    def get(self, source: str, symbol: str, frequency: str) -> CatalogEntry | None:
        """The row of one series, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(market_catalog).where(
                _c.source == source, _c.frequency == frequency, _c.symbol == symbol)).first()
        return _entry(row) if row is not None else None

    def get_many(self, source: str, frequency: str, symbols: Sequence[str]) -> dict[str, CatalogEntry]:
        """The rows of those of ``symbols`` that are stored, by symbol."""
        out: dict[str, CatalogEntry] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(symbols)), _IN_CHUNK):
                for row in conn.execute(select(market_catalog).where(
                        _c.source == source, _c.frequency == frequency, _c.symbol.in_(chunk))):
                    e = _entry(row)
                    out[e.symbol] = e
        return out

    def list(self, source: str | None = None, frequency: str | None = None, prefix: str | None = None,
             limit: int | None = None, offset: int = 0) -> list[CatalogEntry]:
        """Rows sorted by source, frequency, symbol; filters are bound parameters."""
        stmt = select(market_catalog).where(*self._filters(source, frequency, prefix))
        stmt = stmt.order_by(_c.source, _c.frequency, _c.symbol)
        if limit is not None:
            stmt = stmt.limit(int(limit)).offset(int(offset))
        elif offset:
            stmt = stmt.offset(int(offset))
        with self.engine.connect() as conn:
            return [_entry(r) for r in conn.execute(stmt)]

    def summary(self) -> list[tuple[str, str, int]]:
        """(source, frequency, number of series) of everything stored, sorted (one grouped query)."""
        stmt = (select(_c.source, _c.frequency, func.count()).group_by(_c.source, _c.frequency)
                .order_by(_c.source, _c.frequency))
        with self.engine.connect() as conn:
            return [(r[0], r[1], int(r[2])) for r in conn.execute(stmt)]

    def count(self, source: str | None = None, frequency: str | None = None, prefix: str | None = None) -> int:
        """Number of rows matching the filters."""
        stmt = select(func.count()).select_from(market_catalog).where(*self._filters(source, frequency, prefix))
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    @staticmethod
    def _filters(source: str | None, frequency: str | None, prefix: str | None) -> list[Any]:
        where: list[Any] = []
        if source is not None:
            where.append(_c.source == source)
        if frequency is not None:
            where.append(_c.frequency == frequency)
        if prefix:
            where.append(func.substr(_c.symbol, 1, len(prefix)) == prefix)
        return [and_(*where)] if where else []


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
