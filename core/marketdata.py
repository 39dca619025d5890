"""MarketDataStore: OHLCV bars per (source, symbol, frequency) in Parquet, with a catalog.

The bars live under a *storage root* (`core.storage`): a local or shared directory, or an
S3-compatible bucket (``s3://bucket/prefix``) — ``GPU_BACKTEST_MARKET_ROOT``, default
``<data dir>/market``. Servers and commands write there (uploads, fetches); cluster workers
read their partitions from there with `read_symbol_arrays`. Layout under the root::

    <source>/<frequency>/symbol=<SYMBOL>/bars-<content hash>.parquet     one file per version of a series

One file per symbol was kept after measuring it against files holding a bucket of 500 symbols,
at 20,000 symbols (bench/layout.py; bench/RESULTS.md, "Market data layout and import (issue
11)"): a bucket reads its own 500 symbols, or all buckets the whole universe, 2–3× faster, but
one symbol ~20× and 500 scattered symbols ~2× slower, and every incremental fetch of one symbol
would rewrite its bucket — a read-modify-write that two servers updating two symbols of one
bucket would race.

The catalog (symbols, first/last bar, rows, updated, and the *file* of the current version) is
the ``market_catalog`` table of the job database (`core.catalog`), never a file under the root.

**Versions.** A series is never overwritten: each write puts the bars in a new file named by
the hash of its content (`version_name`), then switches the series' catalog row to it, in one
transaction with the other rows of the batch. A reader opens the file the catalog (or a run
plan, `DataSelection.files`) names, once, whole: it sees the old bars or the new ones, never a
mix, and the row always describes the file it names, however many writers race. A file the
catalog no longer names is *superseded*; a write removes the superseded files of the series it
wrote once a newer file has existed for `SUPERSEDED_GRACE_S` (default one day: longer than a
job runs, so a plan made before a re-upload still finds its files). Series written before
versions existed live in ``bars.parquet`` (catalog ``file`` NULL) and are read there until
their next write.

- Names are validated before they touch a path: sources ``[a-z][a-z0-9_]*``, frequencies
  from a fixed list, symbols by `check_symbol`'s strict pattern, version files by `FILE_RE`
  (all matched whole: `re.fullmatch`).
- A failed write leaves the previous data as it was: the files it wrote are removed, the
  catalog is untouched. `write_many` writes many series on a few threads and their catalog rows
  in one transaction.
- Timestamps are UTC; columns open, high, low, close, volume (+ adjusted fields, dividends,
  splits when the source has them).

**Ended series.** A write names the series its source marks as *ended* (``ended=``: a
delisting — an upload's ``delisted`` flag); their catalog rows get ``ended`` = their last bar,
every other row written is left unmarked (a new version replaces the series and its mark).
`merge` keeps a mark while the merged series still ends at the marked bar (history added
before it). `mark_ended` marks stored series afterwards (Tiingo, `plugins/datasources/tiingo.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
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
    "version_name",
]

log = logging.getLogger(__name__)

SOURCE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
OPTIONAL = ("adj_open", "adj_high", "adj_low", "adj_close", "adj_volume", "dividend", "split")
#: Threads reading or writing series files (pyarrow and the filesystem release the GIL).
IO_THREADS = min(16, 4 * (os.cpu_count() or 1))
BARS_FILE = "bars.parquet"  # the one file of a series written before versions (catalog ``file`` NULL)
FILE_RE = re.compile(r"bars-[0-9a-f]{32}\.parquet")
#: How long a superseded version is kept after a newer one was written (see the module docstring).
SUPERSEDED_GRACE_S = 24 * 3600.0
#: How a series file is encoded: zstd, and no dictionary pages (prices and timestamps hardly repeat;
#: a dictionary attempt made encoding 2.5× and decoding 1.6× slower and the file 20 % larger).
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": False}


def check_source(name: str) -> str:
    """Return ``name`` if it is a valid source name, else raise DataError."""
    if not isinstance(name, str) or not SOURCE_RE.fullmatch(name):
        raise DataError(f"invalid source name {name!r}: lower-case letters, digits and _ only", name)
    return name


def check_frequency(freq: str) -> str:
    """Return ``freq`` if it is one of the supported frequencies, else raise DataError."""
    if freq not in FREQUENCIES:
        raise DataError(f"invalid frequency {freq!r}: one of {', '.join(FREQUENCIES)}", freq)
    return freq


def series_dir(source: str, symbol: str, frequency: str) -> str:
    """The directory of one series relative to the store root (names validated first)."""
    return f"{check_source(source)}/{check_frequency(frequency)}/symbol={check_symbol(symbol)}"


def series_key(source: str, symbol: str, frequency: str, file: str | None = None) -> str:
    """The path of one version of a series relative to the store root: ``file`` (a `version_name`),
    or ``bars.parquet`` when None (a series written before versions). Names validated first."""
    if file is not None and not (isinstance(file, str) and FILE_RE.fullmatch(file)):
        raise DataError(f"invalid series file name {file!r}", str(file))
    return f"{series_dir(source, symbol, frequency)}/{file or BARS_FILE}"


def version_name(data: bytes | pa.Buffer) -> str:
    """The file name of a version: ``bars-<first 32 hex digits of the sha256 of its bytes>.parquet``
    (the same bars, encoded alike, get the same name: a plan's hash follows the data)."""
    return f"bars-{hashlib.sha256(memoryview(data)).hexdigest()[:32]}.parquet"


def _encode(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue()


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

    def __init__(self, root_uri: str | os.PathLike[str], catalog: str | Engine | Catalog,
                 grace_s: float = SUPERSEDED_GRACE_S) -> None:
        root = storage.check_uri(root_uri)
        self.root_uri: str = root.uri
        self._local: Path | None = Path(root.path) if root.is_local else None
        if self._local is not None:
            self._local.mkdir(parents=True, exist_ok=True)
        self.catalog_db: Catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
        self.grace_s = float(grace_s)

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
        """Where the current version of one series is: a path (local root) or an ``s3://`` URI, as
        the catalog names it (NotFoundError when the series is not stored)."""
        return storage.join(self.root_uri, series_key(source, symbol, frequency, self._file(source, symbol, frequency)))

    def path(self, source: str, symbol: str, frequency: str) -> Path:
        """The current file of one series in a local store (see `location` for any root)."""
        return self.root / series_key(source, symbol, frequency, self._file(source, symbol, frequency))

    def _file(self, source: str, symbol: str, frequency: str) -> str | None:
        entry = self.entry(source, symbol, frequency)
        if entry is None:
            raise NotFoundError(f"no {frequency} bars stored for {symbol} from {source}",
                                {"source": source, "symbol": symbol, "frequency": frequency})
        return entry.file

    # -- writing ----------------------------------------------------------------------------
    def write(self, source: str, symbol: str, frequency: str, df: pd.DataFrame | pa.Table,
              ended: bool = False) -> CatalogEntry:
        """Replace the stored series with ``df`` (a canonical frame or table): a new version
        (``ended``: the source marks the series as ended at its last bar)."""
        return self.write_many(source, frequency, {symbol: df}, ended=[symbol] if ended else ())[0]

    def write_many(self, source: str, frequency: str, frames: Mapping[str, pd.DataFrame | pa.Table],
                   ended: Collection[str] = ()) -> list[CatalogEntry]:
        """Replace the stored series of every symbol in ``frames``, all or nothing.

        ``ended``: the symbols whose source marks their series as ended (a delisting); their rows
        are marked ended at their last bar, the other rows written carry no mark.

        ``frames`` maps symbols to canonical frames or tables (`canonical_table`). Every one is
        checked first (nothing is written if one is invalid); each is written as a new version
        file on `IO_THREADS` threads, then the catalog rows are switched to them in one
        transaction. If a write or the catalog update fails, the files this call wrote are
        removed (the catalog still names the previous versions, untouched) before the error
        propagates. Then superseded versions past the grace period are removed (`_prune`).
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
        written: dict[str, str] = {}
        now = pd.Timestamp.now(tz="UTC")

        marked = set(ended)
        unknown = marked - set(checked)
        if unknown:
            raise DataError(f"ended: {', '.join(sorted(unknown))} not among the series written", ",".join(unknown))

        def put(sym: str) -> CatalogEntry:
            file = self._write_file(source, sym, frequency, checked[sym])
            written[sym] = file
            entry = _entry_of(source, sym, frequency, checked[sym], now)
            return dataclasses.replace(entry, file=file, ended=entry.last if sym in marked else None)

        try:
            with ThreadPoolExecutor(max_workers=max(1, min(IO_THREADS, len(checked)))) as pool:
                entries = list(pool.map(put, checked))
            self.catalog_db.put_many(entries)
        except BaseException:
            self._discard(source, frequency, written)
            raise
        self._prune(source, frequency, list(checked))
        return entries

    def _write_file(self, source: str, symbol: str, frequency: str, table: pa.Table) -> str:
        """Write one version of a series (no catalog row); returns its file name. `write_many`'s unit
        of work."""
        data = _encode(table)
        file = version_name(data)
        storage.write_bytes(storage.join(self.root_uri, series_key(source, symbol, frequency, file)), data)
        return file

    def _discard(self, source: str, frequency: str, written: Mapping[str, str]) -> None:
        """Remove the files a failed write made, except any the catalog names (the same bars were
        stored already: the same content hash)."""
        try:
            named = {s: e.file for s, e in self.entries(source, frequency, list(written)).items()}
        except Exception:  # pragma: no cover - the database is what failed: remove them all
            named = {}
        for sym, file in written.items():
            if named.get(sym) != file:
                _quietly(storage.delete, storage.join(self.root_uri, series_key(source, sym, frequency, file)))

    def _prune(self, source: str, frequency: str, symbols: Sequence[str]) -> None:
        """Remove the superseded versions of ``symbols``: files the catalog does not name, of which a
        newer file has existed for longer than the grace period. Best effort: never fails a write."""
        try:
            current = {s: e.file or BARS_FILE for s, e in self.entries(source, frequency, symbols).items()}
            by_symbol = self._version_files(source, frequency, symbols)
            horizon = time.time() - self.grace_s
            doomed: list[str] = []
            for sym, files in by_symbol.items():
                if sym not in current:
                    continue
                # a file is superseded for long enough when a newer one was written before the horizon
                newest_old = max((m for _, m in files if m <= horizon), default=None)
                if newest_old is None:
                    continue
                doomed += [storage.join(self.root_uri, series_dir(source, sym, frequency), name)
                           for name, m in files if m < newest_old and name != current[sym]]
            if doomed:
                with ThreadPoolExecutor(max_workers=max(1, min(IO_THREADS, len(doomed)))) as pool:
                    list(pool.map(lambda uri: _quietly(storage.delete, uri), doomed))
        except Exception:  # pragma: no cover - cleanup only
            log.warning("could not remove superseded versions under %s/%s", source, frequency, exc_info=True)

    def _version_files(self, source: str, frequency: str,
                       symbols: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """(file name, modification time in s) of every version file of ``symbols``: one listing of
        the (source, frequency) prefix for many symbols, one of each directory for a few."""
        fs, root = storage.filesystem(self.root_uri)
        wanted = set(symbols)
        out: dict[str, list[tuple[str, float]]] = {}

        def listing(rel: str) -> list[pafs.FileInfo]:
            path = f"{root.path.rstrip('/')}/{rel}"
            return fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))

        if len(wanted) > 64:
            infos = listing(f"{check_source(source)}/{check_frequency(frequency)}")
        else:
            with ThreadPoolExecutor(max_workers=max(1, min(IO_THREADS, len(wanted)))) as pool:
                infos = [i for part in pool.map(lambda s: listing(series_dir(source, s, frequency)), sorted(wanted))
                         for i in part]
        for info in infos:
            if info.type != pafs.FileType.File or info.mtime is None:
                continue
            name = info.base_name
            parent = info.path.replace(os.sep, "/").rsplit("/", 2)[-2]
            sym = parent.removeprefix("symbol=")
            if parent.startswith("symbol=") and sym in wanted and (name == BARS_FILE or FILE_RE.fullmatch(name)):
                out.setdefault(sym, []).append((name, info.mtime.timestamp()))
        return out

    def merge(self, source: str, symbol: str, frequency: str, df: pd.DataFrame) -> CatalogEntry:
        """Upsert ``df`` into the stored series (new bars win on equal timestamps): a new version.
        An ended mark is kept while the merged series still ends at the marked bar."""
        new = canonical_frame(df, f"{source}/{symbol}")
        entry = self.entry(source, symbol, frequency)
        if entry is None:
            return self.write(source, symbol, frequency, new)
        old = self.read(source, symbol, frequency)
        both = pd.concat([old, new], ignore_index=True)
        both = both.drop_duplicates("timestamp", keep="last").sort_values("timestamp", kind="stable")
        still = entry.ended is not None and int(both["timestamp"].iloc[-1].value) == int(entry.ended.value)
        return self.write(source, symbol, frequency, both.reset_index(drop=True), ended=still)

    def mark_ended(self, source: str, frequency: str, marks: Mapping[str, int | None]) -> list[str]:
        """Mark stored series as ended at their final bar (``{symbol: UTC ns}``, which must be the
        row's last bar, else that symbol is left alone) or clear the mark (``None``); returns the
        symbols changed (`Catalog.set_ended`)."""
        return self.catalog_db.set_ended(check_source(source), check_frequency(frequency), marks)

    def delete(self, source: str, symbol: str, frequency: str) -> None:
        """Remove one series: its catalog row, then every version file of it."""
        directory = storage.join(self.root_uri, series_dir(source, symbol, frequency))
        self.catalog_db.delete(source, symbol, frequency)
        for name in storage.list_files(directory):
            if "/" not in name and (name == BARS_FILE or FILE_RE.fullmatch(name)):
                _quietly(storage.delete, storage.join(directory, name))

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
        """The current version of one stored series as a canonical frame, optionally cut to [start, end]."""
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
        stored = self.entries(source, frequency, symbols)
        missing = [s for s in symbols if s not in stored]
        if missing:
            raise DataError(_no_data(source, frequency, missing), ",".join(missing))
        lo = _utc(start).value if start is not None else None
        hi = _end_utc(end).value if end is not None else None
        series = read_many(self.root_uri, source, frequency, symbols, lo, hi, adjusted,
                           files=[stored[s].file for s in symbols])
        return panel_from_arrays(list(symbols), series)


def _no_data(source: str, frequency: str, missing: Sequence[str]) -> str:
    return (f"no {frequency} data from {source} for: {', '.join(missing[:20])}"
            + (f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""))


def read_symbol_arrays(root: str, source: str, frequency: str, symbol: str, lo: int | None, hi: int | None,
                       adjusted: bool, file: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One stored series as (int64 UTC ns timestamps, {field: float64 array}) within [lo, hi].

    What a cluster worker calls to read its partition: ``root`` is the store's root URI
    (`MarketDataStore.root_uri`: a directory or ``s3://bucket/prefix``; S3 is configured from
    the worker's AWS variables), the rest names the series; ``file`` is the version the run's
    plan names (`DataSelection.files`; None: ``bars.parquet``, a series stored before versions).
    The file is read once, whole. Raises DataError naming the symbol when it is not there. Needs
    no database: the plan carries the file names."""
    series = _read_series(storage.join(root, series_key(source, symbol, frequency, file)), lo, hi, adjusted)
    if series is None:
        raise DataError(_gone(source, frequency, symbol, file), symbol)
    return series


def _gone(source: str, frequency: str, symbol: str, file: str | None) -> str:
    if file is None:
        return _no_data(source, frequency, [symbol])
    return (f"the {frequency} bars of {symbol} from {source} that this run was planned on ({file}) are gone: "
            "the series was replaced and the old version removed; run it again")


def read_many(root: str, source: str, frequency: str, symbols: Sequence[str], lo: int | None, hi: int | None,
              adjusted: bool, threads: int = IO_THREADS,
              files: Sequence[str | None] | None = None) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """`read_symbol_arrays` for many symbols (``files``: each one's version, as there) on a thread
    pool, in order; one DataError naming every symbol that is not there."""
    names = list(files) if files is not None else [None] * len(symbols)
    uris = [storage.join(root, series_key(source, sym, frequency, f)) for sym, f in zip(symbols, names, strict=True)]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        series = list(pool.map(lambda uri: _read_series(uri, lo, hi, adjusted), uris))
    missing = [s for s, got in zip(symbols, series, strict=True) if got is None]
    if len(missing) == 1:
        f = names[list(symbols).index(missing[0])]
        raise DataError(_gone(source, frequency, missing[0], f), missing[0])
    if missing:
        raise DataError(_no_data(source, frequency, missing), ",".join(missing))
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
