"""MarketDataStore: OHLCV bars per (source, symbol, frequency) in Parquet, with a catalog.

Layout under the store root (``$GPU_BACKTEST_DATA_DIR/market``)::

    <source>/<frequency>/symbol=<SYMBOL>/bars.parquet     one file per symbol (hive-partitioned)
    catalog.sqlite                                        symbols, first/last bar, rows, updated

- Names are validated before they touch a path: sources ``[a-z][a-z0-9_]*``, frequencies
  from a fixed list, symbols by `check_symbol`'s strict pattern.
- Writes are atomic: a temp file in the same directory, fsync, ``os.replace``; the catalog
  row is updated after the file is in place (SQLite transaction). A failed write leaves the
  previous data intact.
- Timestamps are UTC; columns open, high, low, close, volume (+ adjusted fields, dividends,
  splits when the source has them).
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError, NotFoundError
from .panel import FIELDS, MarketPanel, check_symbol
from .spec import FREQUENCIES
from .timeutil import end_bound_utc, to_utc
from .timeutil import end_bound_utc as _end_utc  # the store's rule: a bare date string covers its day
from .timeutil import to_utc as _utc

SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
OPTIONAL = ("adj_open", "adj_high", "adj_low", "adj_close", "adj_volume", "dividend", "split")


def check_source(name: str) -> str:
    """Return ``name`` if it is a valid source name, else raise DataError."""
    if not isinstance(name, str) or not SOURCE_RE.match(name):
        raise DataError(f"invalid source name {name!r}: lower-case letters, digits and _ only", name)
    return name


def check_frequency(freq: str) -> str:
    """Return ``freq`` if it is one of the supported frequencies, else raise DataError."""
    if freq not in FREQUENCIES:
        raise DataError(f"invalid frequency {freq!r}: one of {', '.join(FREQUENCIES)}", freq)
    return freq


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

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "symbol": self.symbol, "frequency": self.frequency,
                "first": self.first.isoformat(), "last": self.last.isoformat(), "rows": self.rows,
                "updated": self.updated.isoformat()}


def canonical_frame(df: pd.DataFrame, where: str = "bars") -> pd.DataFrame:
    """Check and normalise a canonical bar frame (see plugins/datasources/base.py)."""
    if "timestamp" not in df.columns:
        raise DataError(f"{where}: no timestamp column", where)
    missing = [c for c in FIELDS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}", where)
    cols = ["timestamp", *FIELDS, *[c for c in OPTIONAL if c in df.columns]]
    out = df[cols].copy()
    ts = pd.to_datetime(out["timestamp"], utc=True)
    out["timestamp"] = ts.astype("datetime64[ns, UTC]")
    for c in cols[1:]:
        out[c] = pd.to_numeric(out[c], errors="raise").astype(np.float64)
    out = out.sort_values("timestamp", kind="stable")
    if out["timestamp"].duplicated().any():
        raise DataError(f"{where}: duplicate timestamps", where)
    return out.reset_index(drop=True)


class MarketDataStore:
    """Parquet bars under ``root`` with a SQLite catalog. Safe across threads and processes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_uri = str(self.root)
        self._lock = threading.Lock()
        with closing(self._db()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS catalog (source TEXT NOT NULL, symbol TEXT NOT NULL, "
                "frequency TEXT NOT NULL, first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL, "
                "rows INTEGER NOT NULL, updated_ns INTEGER NOT NULL, PRIMARY KEY (source, symbol, frequency))"
            )

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / "catalog.sqlite", timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    # -- paths ------------------------------------------------------------------------------
    def path(self, source: str, symbol: str, frequency: str) -> Path:
        """The Parquet file of one series (names validated first)."""
        check_source(source)
        check_symbol(symbol)
        check_frequency(frequency)
        return self.root / source / frequency / f"symbol={symbol}" / "bars.parquet"

    # -- writing ----------------------------------------------------------------------------
    def write(self, source: str, symbol: str, frequency: str, df: pd.DataFrame) -> CatalogEntry:
        """Replace the stored series with ``df`` (canonical frame), atomically."""
        path = self.path(source, symbol, frequency)
        frame = canonical_frame(df, f"{source}/{symbol}")
        if frame.empty:
            raise DataError(f"{source}/{symbol}: no bars to store", symbol)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        fd, tmp = tempfile.mkstemp(prefix=".bars-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
            with self._lock:
                os.replace(tmp, path)
                entry = CatalogEntry(source, symbol, frequency, frame["timestamp"].iloc[0],
                                     frame["timestamp"].iloc[-1], len(frame), pd.Timestamp.now(tz="UTC"))
                with closing(self._db()) as db, db:
                    db.execute("INSERT OR REPLACE INTO catalog VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (source, symbol, frequency, entry.first.value, entry.last.value, entry.rows,
                                entry.updated.value))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return entry

    def merge(self, source: str, symbol: str, frequency: str, df: pd.DataFrame) -> CatalogEntry:
        """Upsert ``df`` into the stored series (new bars win on equal timestamps)."""
        new = canonical_frame(df, f"{source}/{symbol}")
        if self.entry(source, symbol, frequency) is None:
            return self.write(source, symbol, frequency, new)
        old = self.read(source, symbol, frequency)
        both = pd.concat([old, new], ignore_index=True)
        both = both.drop_duplicates("timestamp", keep="last")
        return self.write(source, symbol, frequency, both)

    def delete(self, source: str, symbol: str, frequency: str) -> None:
        """Remove one series (file and catalog row)."""
        path = self.path(source, symbol, frequency)
        with self._lock:
            path.unlink(missing_ok=True)
            with closing(self._db()) as db, db:
                db.execute("DELETE FROM catalog WHERE source=? AND symbol=? AND frequency=?",
                           (source, symbol, frequency))

    # -- reading ----------------------------------------------------------------------------
    def entry(self, source: str, symbol: str, frequency: str) -> CatalogEntry | None:
        """The catalog row of one series, or None."""
        with closing(self._db()) as db:
            row = db.execute("SELECT * FROM catalog WHERE source=? AND symbol=? AND frequency=?",
                             (source, symbol, frequency)).fetchone()
        return _entry(row) if row else None

    def catalog(self, source: str | None = None, frequency: str | None = None,
                prefix: str | None = None, limit: int | None = None, offset: int = 0) -> list[CatalogEntry]:
        """Stored series, sorted by source, frequency, symbol (filters are bound parameters)."""
        sql = "SELECT * FROM catalog WHERE 1=1"
        args: list[Any] = []
        if source is not None:
            sql += " AND source=?"
            args.append(source)
        if frequency is not None:
            sql += " AND frequency=?"
            args.append(frequency)
        if prefix:
            sql += " AND substr(symbol, 1, ?) = ?"
            args += [len(prefix), prefix]
        sql += " ORDER BY source, frequency, symbol"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        with closing(self._db()) as db:
            rows = db.execute(sql, args).fetchall()
        return [_entry(r) for r in rows]

    def count(self, source: str | None = None, frequency: str | None = None) -> int:
        """Number of stored series matching the filters."""
        sql, args = "SELECT COUNT(*) FROM catalog WHERE 1=1", []
        if source is not None:
            sql += " AND source=?"
            args.append(source)
        if frequency is not None:
            sql += " AND frequency=?"
            args.append(frequency)
        with closing(self._db()) as db:
            return int(db.execute(sql, args).fetchone()[0])

    def read(self, source: str, symbol: str, frequency: str, start: Any = None, end: Any = None) -> pd.DataFrame:
        """One stored series as a canonical frame, optionally cut to [start, end]."""
        path = self.path(source, symbol, frequency)
        if not path.is_file():
            raise NotFoundError(f"no {frequency} bars stored for {symbol} from {source}",
                                {"source": source, "symbol": symbol, "frequency": frequency})
        df = pq.read_table(path).to_pandas()
        if start is not None:
            df = df[df["timestamp"] >= _utc(start)]
        if end is not None:
            df = df[df["timestamp"] <= _end_utc(end)]
        return df.reset_index(drop=True)

    def load_panel(self, source: str, symbols: Sequence[str], frequency: str = "1d", start: Any = None,
                   end: Any = None, adjusted: bool = True) -> MarketPanel:
        """The symbols' bars aligned on the union of their timestamps (NaN where a symbol has no bar).

        With ``adjusted`` and an ``adj_close`` column, prices are adjusted: the source's
        ``adj_open/high/low`` where stored, else the raw price × ``adj_close / close`` of the bar
        (so a file with only Adj Close never mixes adjusted closes with raw opens).
        """
        paths = []
        missing = []
        for sym in symbols:
            p = self.path(source, sym, frequency)
            (paths if p.is_file() else missing).append(p)
        if missing:
            names = [p.parent.name.removeprefix("symbol=") for p in missing]
            raise DataError(f"no {frequency} data from {source} for: {', '.join(names[:20])}"
                            + (f" (+{len(names) - 20} more)" if len(names) > 20 else ""), ",".join(names))
        lo = _utc(start).value if start is not None else None
        hi = _end_utc(end).value if end is not None else None
        # pyarrow releases the GIL while reading and decoding: read files on a few threads
        with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
            series = list(pool.map(lambda p: _read_arrays(p, lo, hi, adjusted), paths))
        return panel_from_arrays(list(symbols), series)


def read_symbol_arrays(root: str, source: str, frequency: str, symbol: str, lo: int | None, hi: int | None,
                       adjusted: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One stored series as (int64 UTC ns timestamps, {field: float64 array}) within [lo, hi].

    What a cluster worker calls to read its partition: ``root`` is the store's root (a
    directory; a URI once the store speaks to buckets), the rest names the series. Raises
    DataError naming the symbol when nothing is stored for it."""
    path = Path(root) / check_source(source) / check_frequency(frequency) / f"symbol={check_symbol(symbol)}"
    path = path / "bars.parquet"
    if not path.is_file():
        raise DataError(f"no {frequency} data from {source} for: {symbol}", symbol)
    return _read_arrays(path, lo, hi, adjusted)


def _read_arrays(path: Path, lo: int | None, hi: int | None,
                 adjusted: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    table = pq.read_table(path)
    names = set(table.column_names)
    ts = table.column("timestamp").cast(pa.timestamp("ns", tz="UTC")).to_numpy().astype("datetime64[ns]").view(np.int64)
    mask = np.ones(len(ts), dtype=bool)
    if lo is not None:
        mask &= ts >= lo
    if hi is not None:
        mask &= ts <= hi
    cols = {f: table.column(f).to_numpy()[mask] for f in FIELDS}
    if adjusted and "adj_close" in names:
        adj_close = table.column("adj_close").to_numpy()[mask]
        factor = adj_close / cols["close"]  # the source's adjustment of each bar
        for f in ("open", "high", "low"):
            # the source's own adjusted field when it has one, else the raw price × the close's factor
            cols[f] = table.column(f"adj_{f}").to_numpy()[mask] if f"adj_{f}" in names else cols[f] * factor
        cols["close"] = adj_close
        if "adj_volume" in names:
            cols["volume"] = table.column("adj_volume").to_numpy()[mask]
    return ts[mask], cols


def panel_from_arrays(symbols: list[str], series: Iterable[tuple[np.ndarray, dict[str, np.ndarray]]]) -> MarketPanel:
    """Align per-symbol (int64 UTC ns timestamps, field arrays) on the union calendar."""
    series = list(series)
    all_ts = np.unique(np.concatenate([ts for ts, _ in series])) if series else np.array([], np.int64)
    n_t, n_s = len(all_ts), len(symbols)
    arrays = {f: np.full((n_t, n_s), np.nan) for f in FIELDS}
    for j, (ts, cols) in enumerate(series):
        rows = np.searchsorted(all_ts, ts)
        for f in FIELDS:
            arrays[f][rows, j] = cols[f]
    index = pd.DatetimeIndex(all_ts.astype("datetime64[ns]")).tz_localize("UTC")
    return MarketPanel(index=index, symbols=list(symbols), **arrays)


def bounds_ns(start: Any, end: Any) -> tuple[int | None, int | None]:
    """A run's [lo, hi] bounds in UTC ns: ``start`` from its first instant, ``end`` through its
    last (a bare date includes its whole day); None: unbounded."""
    lo = to_utc(start).value if start is not None else None
    hi = end_bound_utc(end).value if end is not None else None
    return lo, hi


def _entry(row: Sequence[Any]) -> CatalogEntry:
    return CatalogEntry(row[0], row[1], row[2], pd.Timestamp(row[3], tz="UTC"), pd.Timestamp(row[4], tz="UTC"),
                        int(row[5]), pd.Timestamp(row[6], tz="UTC"))
