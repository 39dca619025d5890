"""MarketDataStore: OHLCV bars per (source, symbol, frequency) in Parquet, with a catalog.

The bars live under a *storage root* (`core.storage`): a local or shared directory, or an
S3-compatible bucket (``s3://bucket/prefix``) — ``GPU_BACKTEST_MARKET_ROOT``, default
``<data dir>/market``. Servers and commands write there (uploads, fetches); cluster workers
read their partitions from there with `read_symbol_arrays`. Layout under the root::

    <source>/<frequency>/symbol=<SYMBOL>/bars.parquet     one file per series (hive-partitioned)

One file per symbol was kept after measuring it against files holding a bucket of 500 symbols,
at 20,000 symbols (bench/layout.py; bench/RESULTS.md, "Market data layout and import (issue
11)"): a bucket reads its own 500 symbols, or all buckets the whole universe, 2–3× faster, but
one symbol ~20× and 500 scattered symbols ~2× slower, and every incremental fetch of one symbol
would rewrite its bucket — a read-modify-write that two servers updating two symbols of one
bucket would race.

The catalog (symbols, first/last bar, rows, updated) is the ``market_catalog`` table of the job
database (`core.catalog`), never a file under the root.

- Names are validated before they touch a path: sources ``[a-z][a-z0-9_]*``, frequencies
  from a fixed list, symbols by `check_symbol`'s strict pattern.
- Writes are atomic (`core.storage.write_table`); the catalog row is updated after the file
  is in place. A failed write leaves the previous data intact. `write_many` writes many series
  on a few threads and their catalog rows in one transaction, and puts the previous files
  back if any write fails.
- Timestamps are UTC; columns open, high, low, close, volume (+ adjusted fields, dividends,
  splits when the source has them).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Engine

from . import storage
from .catalog import Catalog, CatalogEntry
from .errors import DataError, NotFoundError
from .panel import FIELDS, MarketPanel, check_symbol
from .spec import FREQUENCIES
from .timeutil import end_bound_utc, to_utc
from .timeutil import end_bound_utc as _end_utc  # the store's rule: a bare date string covers its day
from .timeutil import to_utc as _utc

__all__ = [
    "OPTIONAL",
    "CatalogEntry",
    "MarketDataStore",
    "canonical_frame",
    "canonical_table",
    "check_frequency",
    "check_source",
    "panel_from_arrays",
    "read_symbol_arrays",
    "series_key",
]

log = logging.getLogger(__name__)

SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
OPTIONAL = ("adj_open", "adj_high", "adj_low", "adj_close", "adj_volume", "dividend", "split")
#: Threads reading or writing series files (pyarrow and the filesystem release the GIL).
IO_THREADS = min(16, 4 * (os.cpu_count() or 1))
BARS_FILE = "bars.parquet"
#: How a series file is encoded: zstd, and no dictionary pages (prices and timestamps hardly repeat;
#: a dictionary attempt made encoding 2.5× and decoding 1.6× slower and the file 20 % larger).
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": False}


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


def series_key(source: str, symbol: str, frequency: str) -> str:
    """The path of one series' file relative to the store root (names validated first)."""
    return f"{check_source(source)}/{check_frequency(frequency)}/symbol={check_symbol(symbol)}/{BARS_FILE}"


def canonical_frame(df: pd.DataFrame, where: str = "bars") -> pd.DataFrame:
    """Check and normalise a canonical bar frame (see plugins/datasources/base.py)."""
    if "timestamp" not in df.columns:
        raise DataError(f"{where}: no timestamp column", where)
    missing = [c for c in FIELDS if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}", where)
    cols = ["timestamp", *FIELDS, *[c for c in OPTIONAL if c in df.columns]]
    if _is_canonical(df, cols):  # already canonical (e.g. a validated upload): no copy
        return df[cols] if list(df.columns) != cols else df
    out = df[cols].copy()
    ts = pd.to_datetime(out["timestamp"], utc=True)
    out["timestamp"] = ts.astype("datetime64[ns, UTC]")
    for c in cols[1:]:
        out[c] = pd.to_numeric(out[c], errors="raise").astype(np.float64)
    out = out.sort_values("timestamp", kind="stable")
    if out["timestamp"].duplicated().any():
        raise DataError(f"{where}: duplicate timestamps", where)
    return out.reset_index(drop=True)


def _is_canonical(df: pd.DataFrame, cols: list[str]) -> bool:
    if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
        return False
    dtypes = df.dtypes
    if str(dtypes["timestamp"]) != "datetime64[ns, UTC]" or any(dtypes[c] != np.float64 for c in cols[1:]):
        return False
    ts = df["timestamp"].array.asi8
    return bool(len(ts) < 2 or (ts[1:] > ts[:-1]).all())


def _frame_table(frame: pd.DataFrame) -> pa.Table:
    """A canonical frame as an Arrow table (timestamp[ns, UTC] + float64 columns), without copies."""
    names = list(frame.columns)
    arrays = [pa.array(frame["timestamp"].array.asi8, type=pa.timestamp("ns", tz="UTC"))]
    arrays += [pa.array(frame[c].to_numpy(), type=pa.float64()) for c in names[1:]]
    return pa.Table.from_arrays(arrays, names=names)


def canonical_table(data: pd.DataFrame | pa.Table, where: str = "bars") -> pa.Table:
    """A canonical bar frame or Arrow table as the Arrow table a series file holds.

    A table must already be canonical (the columns of `canonical_frame`, in its order, as
    timestamp[ns, UTC] and float64 — e.g. an upload's validated slice); only the strict time
    order is checked again, without copying. A frame goes through `canonical_frame`."""
    if not isinstance(data, pa.Table):
        return _frame_table(canonical_frame(data, where))
    names = data.column_names
    want = ["timestamp", *FIELDS, *[c for c in OPTIONAL if c in names]]
    if names != want:
        raise DataError(f"{where}: columns {names} are not the canonical {want}", where)
    if data.schema.field("timestamp").type != pa.timestamp("ns", tz="UTC") or any(
            data.schema.field(c).type != pa.float64() for c in want[1:]):
        raise DataError(f"{where}: a canonical table has timestamp[ns, UTC] and float64 columns", where)
    ts = _ns(data)
    if len(ts) > 1 and not (ts[1:] > ts[:-1]).all():
        raise DataError(f"{where}: timestamps not strictly increasing", where)
    return data


def _ns(table: pa.Table) -> np.ndarray:
    """The timestamp column as int64 UTC nanoseconds."""
    col = table.column("timestamp").cast(pa.timestamp("ns", tz="UTC"))
    return col.to_numpy().astype("datetime64[ns]").view(np.int64)


def _entry_of(source: str, symbol: str, frequency: str, table: pa.Table, now: pd.Timestamp) -> CatalogEntry:
    ts = _ns(table)
    return CatalogEntry(source, symbol, frequency, pd.Timestamp(int(ts[0]), tz="UTC"),
                        pd.Timestamp(int(ts[-1]), tz="UTC"), len(ts), now)


class MarketDataStore:
    """Parquet bars under a storage root (directory or ``s3://bucket/prefix``) with the catalog in a
    database. Safe across threads and processes.

    ``MarketDataStore(root_uri, catalog)``: ``catalog`` is a SQLAlchemy URL (the job database's,
    `core.jobstore.default_url`), an `Engine`, or a `Catalog`.
    """

    def __init__(self, root_uri: str | os.PathLike[str], catalog: str | Engine | Catalog) -> None:
        root = storage.check_uri(root_uri)
        self.root_uri: str = root.uri
        self._local: Path | None = Path(root.path) if root.is_local else None
        if self._local is not None:
            self._local.mkdir(parents=True, exist_ok=True)
        self.catalog_db: Catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)

    def __repr__(self) -> str:
        return f"MarketDataStore({self.root_uri!r}, {self.catalog_db!r})"

    def close(self) -> None:
        """Release the catalog's database connections."""
        self.catalog_db.close()

    # -- locations --------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """True when the root is a local (or mounted shared) directory."""
        return self._local is not None

    @property
    def root(self) -> Path:
        """The root directory of a local store (DataError for a bucket: use `root_uri`)."""
        if self._local is None:
            raise DataError(f"the market-data root {self.root_uri} is not a local directory", self.root_uri)
        return self._local

    def location(self, source: str, symbol: str, frequency: str) -> str:
        """Where one series' file is: a path (local root) or an ``s3://`` URI (names validated)."""
        return storage.join(self.root_uri, series_key(source, symbol, frequency))

    def path(self, source: str, symbol: str, frequency: str) -> Path:
        """The file of one series in a local store (see `location` for any root)."""
        return self.root / series_key(source, symbol, frequency)

    # -- writing ----------------------------------------------------------------------------
    def write(self, source: str, symbol: str, frequency: str, df: pd.DataFrame | pa.Table) -> CatalogEntry:
        """Replace the stored series with ``df`` (a canonical frame or table), atomically."""
        uri = self.location(source, symbol, frequency)
        table = canonical_table(df, f"{source}/{symbol}")
        if not len(table):
            raise DataError(f"{source}/{symbol}: no bars to store", symbol)
        storage.write_table(uri, table, **PARQUET_OPTIONS)
        entry = _entry_of(source, symbol, frequency, table, pd.Timestamp.now(tz="UTC"))
        self.catalog_db.put(entry)
        return entry

    def write_many(self, source: str, frequency: str,
                   frames: Mapping[str, pd.DataFrame | pa.Table]) -> list[CatalogEntry]:
        """Replace the stored series of every symbol in ``frames``, all or nothing (best effort).

        ``frames`` maps symbols to canonical frames or tables (`canonical_table`). Every one is
        checked first (nothing is written if one is invalid); the files are
        written on `IO_THREADS` threads, then the catalog rows in one transaction. If a write
        or the catalog update fails, the series already written are put back as they were
        (previous file restored, or removed when there was none) before the error propagates.
        Returns the entries in the order of ``frames``.
        """
        check_source(source)
        check_frequency(frequency)
        checked: dict[str, pa.Table] = {}
        for sym, df in frames.items():
            series_key(source, sym, frequency)
            table = canonical_table(df, f"{source}/{sym}")
            if not len(table):
                raise DataError(f"{source}/{sym}: no bars to store", sym)
            checked[sym] = table
        if not checked:
            return []
        existing = self._existing_files(source, frequency, list(checked))
        token = uuid.uuid4().hex[:12]
        backups: dict[str, str] = {}
        written: list[str] = []
        now = pd.Timestamp.now(tz="UTC")

        def backup(sym: str) -> None:
            uri = self.location(source, sym, frequency)
            copy = storage.join(self.root_uri, source, frequency, f"symbol={sym}", f".tmp-{token}-{BARS_FILE}")
            if storage.copy(uri, copy):
                backups[sym] = copy

        def put(sym: str) -> CatalogEntry:
            self._write_file(source, sym, frequency, checked[sym])
            written.append(sym)
            return _entry_of(source, sym, frequency, checked[sym], now)

        try:
            with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
                list(pool.map(backup, [s for s in checked if s in existing]))
                entries = list(pool.map(put, checked))
            self.catalog_db.put_many(entries)
        except BaseException:
            self._restore(source, frequency, written, backups)
            raise
        finally:
            for copy in backups.values():
                _quietly(storage.delete, copy)
        return entries

    def _existing_files(self, source: str, frequency: str, symbols: list[str]) -> set[str]:
        """Those of ``symbols`` whose file exists (whatever the catalog says): one listing of the
        (source, frequency) prefix for many symbols, one existence check each for a few."""
        if len(symbols) > 64:
            listed = storage.list_files(storage.join(self.root_uri, source, frequency))
            present = {f.removeprefix("symbol=").removesuffix(f"/{BARS_FILE}") for f in listed
                       if f.startswith("symbol=") and f.endswith(f"/{BARS_FILE}") and f.count("/") == 1}
            return present.intersection(symbols)
        with ThreadPoolExecutor(max_workers=max(1, min(IO_THREADS, len(symbols)))) as pool:
            found = pool.map(lambda s: storage.exists(self.location(source, s, frequency)), symbols)
            return {s for s, there in zip(symbols, found, strict=True) if there}

    def _write_file(self, source: str, symbol: str, frequency: str, table: pa.Table) -> None:
        """Write one series' file (no catalog row); `write_many`'s unit of work."""
        storage.write_table(self.location(source, symbol, frequency), table, **PARQUET_OPTIONS)

    def _restore(self, source: str, frequency: str, written: Sequence[str], backups: Mapping[str, str]) -> None:
        for sym in written:
            uri = self.location(source, sym, frequency)
            try:
                if sym in backups:
                    storage.copy(backups[sym], uri)
                else:
                    storage.delete(uri)
            except Exception:  # pragma: no cover - best effort
                log.exception("could not restore %s/%s/%s after a failed write", source, sym, frequency)

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
        uri = self.location(source, symbol, frequency)
        storage.delete(uri)
        self.catalog_db.delete(source, symbol, frequency)

    # -- reading ----------------------------------------------------------------------------
    def entry(self, source: str, symbol: str, frequency: str) -> CatalogEntry | None:
        """The catalog row of one series, or None."""
        return self.catalog_db.get(source, symbol, frequency)

    def entries(self, source: str, frequency: str, symbols: Sequence[str]) -> dict[str, CatalogEntry]:
        """The catalog rows of those of ``symbols`` that are stored, by symbol (one query)."""
        return self.catalog_db.get_many(source, frequency, symbols)

    def catalog(self, source: str | None = None, frequency: str | None = None,
                prefix: str | None = None, limit: int | None = None, offset: int = 0) -> list[CatalogEntry]:
        """Stored series, sorted by source, frequency, symbol (filters are bound parameters)."""
        return self.catalog_db.list(source, frequency, prefix, limit, offset)

    def count(self, source: str | None = None, frequency: str | None = None, prefix: str | None = None) -> int:
        """Number of stored series matching the filters."""
        return self.catalog_db.count(source, frequency, prefix)

    def read(self, source: str, symbol: str, frequency: str, start: Any = None, end: Any = None) -> pd.DataFrame:
        """One stored series as a canonical frame, optionally cut to [start, end]."""
        uri = self.location(source, symbol, frequency)
        try:
            table = storage.read_table(uri)
        except FileNotFoundError:
            raise NotFoundError(f"no {frequency} bars stored for {symbol} from {source}",
                                {"source": source, "symbol": symbol, "frequency": frequency}) from None
        df = table.to_pandas()
        if str(df["timestamp"].dtype) != "datetime64[ns, UTC]":
            df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[ns, UTC]")
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
        for sym in symbols:
            series_key(source, sym, frequency)
        lo = _utc(start).value if start is not None else None
        hi = _end_utc(end).value if end is not None else None
        series = read_many(self.root_uri, source, frequency, symbols, lo, hi, adjusted)
        return panel_from_arrays(list(symbols), series)


def read_symbol_arrays(root: str, source: str, frequency: str, symbol: str, lo: int | None, hi: int | None,
                       adjusted: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One stored series as (int64 UTC ns timestamps, {field: float64 array}) within [lo, hi].

    What a cluster worker calls to read its partition: ``root`` is the store's root URI
    (`MarketDataStore.root_uri`: a directory or ``s3://bucket/prefix``; S3 is configured from
    the worker's AWS variables), the rest names the series. Raises DataError naming the symbol
    when nothing is stored for it. Needs no database: the path follows from the names."""
    series = _read_series(storage.join(root, series_key(source, symbol, frequency)), lo, hi, adjusted)
    if series is None:
        raise DataError(f"no {frequency} data from {source} for: {symbol}", symbol)
    return series


def read_many(root: str, source: str, frequency: str, symbols: Sequence[str], lo: int | None, hi: int | None,
              adjusted: bool, threads: int = IO_THREADS) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """`read_symbol_arrays` for many symbols on a thread pool, in order; one DataError naming every
    symbol that is not stored."""
    uris = [storage.join(root, series_key(source, sym, frequency)) for sym in symbols]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        series = list(pool.map(lambda uri: _read_series(uri, lo, hi, adjusted), uris))
    missing = [s for s, got in zip(symbols, series, strict=True) if got is None]
    if missing:
        raise DataError(f"no {frequency} data from {source} for: {', '.join(missing[:20])}"
                        + (f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""), ",".join(missing))
    return series  # type: ignore[return-value]


def _read_series(uri: str, lo: int | None, hi: int | None,
                 adjusted: bool) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    try:
        table = storage.read_table(uri, use_threads=False)  # the callers read many files on threads
    except FileNotFoundError:
        return None
    return _arrays(table, lo, hi, adjusted)


def _arrays(table: pa.Table, lo: int | None, hi: int | None,
            adjusted: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    names = set(table.column_names)
    ts = _ns(table)
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


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # pragma: no cover - cleanup only
        pass


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
