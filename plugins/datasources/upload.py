"""The ``upload`` data source: user CSV/Parquet files, validated strictly, stored all or nothing.

`validate_file` reads one file (a path, bytes or a binary file object), checks every row and
returns ``{symbol: canonical frame}`` (see plugins/datasources/base.py). When anything is wrong
it raises `DataError` whose ``problems`` lists *every* problem found (capped at `MAX_PROBLEMS`
entries plus one line counting the rest), each as ``{"row", "column", "message"}``:

- ``row`` is the data row as the user sees it: data row 1 is the first row after the CSV header
  (line 2 of the file; blank lines count as rows), or the first row of a Parquet table;
  ``None`` for a problem with the whole file (a missing column, the file name, ...).
- ``column`` is the column's name as written in the file (``"Adj Close"``), the canonical
  name of a missing column (``"open"``), or ``None``.

A file larger than the upload limit raises `UploadTooLarge` (a `DataError` with ``status``
413 and ``code`` ``"upload_too_large"``) before it is read.

`import_file` validates the whole file first and only then writes its symbols with
`MarketDataStore.write_many`, which *replaces* each symbol's stored series; nothing is stored
when any row of the file is invalid. The rules are documented in docs/datasources.md ("## upload").
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...core.config import Settings, parse_bytes
from ...core.errors import DataError
from ...core.marketdata import check_frequency, check_source
from ...core.panel import ALIASES, TIME_ALIASES, check_symbol
from ...core.spec import FREQUENCIES
from ..hookspecs import hookimpl
from .base import DataSource

if TYPE_CHECKING:  # pragma: no cover
    from ...core.marketdata import CatalogEntry, MarketDataStore

log = logging.getLogger(__name__)

#: Most problems listed on a `DataError`; one more entry then counts the rest.
MAX_PROBLEMS = 100
#: The environment variable holding the upload size limit (see core/config.py).
MAX_BYTES_VARIABLE = "GPU_BACKTEST_MAX_UPLOAD_BYTES"
PARQUET_MAGIC = b"PAR1"
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
DELIMITERS = (",", ";", "\t")
REQUIRED = ("timestamp", "open", "high", "low", "close")
PRICE_COLUMNS = ("open", "high", "low", "close", "adj_open", "adj_high", "adj_low", "adj_close")
VOLUME_COLUMNS = ("volume", "adj_volume")

#: What a file may hold, or a path to it (str / PathLike), or a readable binary file object.
UploadData = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
Problem = dict[str, Any]


def _key(name: Any) -> str:
    """A column name reduced for matching: lower case, no spaces, ``_``, ``.`` or ``-``."""
    return re.sub(r"[\s_.\-]+", "", str(name).strip().lower())


TIME_KEYS = frozenset(_key(a) for a in TIME_ALIASES)
COLUMN_KEYS: dict[str, str] = {
    **{_key(k): v for k, v in ALIASES.items()},
    "adjopen": "adj_open", "adjhigh": "adj_high", "adjlow": "adj_low", "adjclose": "adj_close",
    "adjvolume": "adj_volume",
}
_HINTS = {
    "timestamp": "Date, Datetime, Timestamp or Time",
    "open": "Open or o", "high": "High or h", "low": "Low or l", "close": "Close, c or Price",
}


class UploadTooLarge(DataError):
    """The file is larger than the upload limit (the web layer answers 413)."""

    code = "upload_too_large"
    status = 413

    def __init__(self, name: str, limit: int, size: int | None = None) -> None:
        what = f"is {size:,} bytes" if size is not None else "is larger than that"
        message = (f"{name}: the upload limit is {limit:,} bytes ({MAX_BYTES_VARIABLE}); the file {what}")
        super().__init__(message, name, [{"row": None, "column": None, "message": message}])
        self.details.update({"max_bytes": limit, "size": size})
        self.limit = limit
        self.size = size


def default_max_bytes() -> int:
    """The upload limit: ``GPU_BACKTEST_MAX_UPLOAD_BYTES`` if set, else the settings' default."""
    raw = os.environ.get(MAX_BYTES_VARIABLE)
    return parse_bytes(MAX_BYTES_VARIABLE, raw) if raw is not None else int(Settings.max_upload_bytes)


# -- problem collection ---------------------------------------------------------------------
class _Problems:
    """Collects problems; per check keeps only the first `cap` rows but counts them all."""

    def __init__(self, cap: int = MAX_PROBLEMS) -> None:
        self.cap = cap
        self.total = 0
        self.uncounted = False  # more problems exist than were counted (invalid UTF-8 bytes)
        self._items: list[tuple[int, int, Problem]] = []

    def add(self, row: int | None, column: str | None, message: str) -> None:
        self.total += 1
        self._items.append((row if row is not None else 0, len(self._items),
                            {"row": row, "column": column, "message": message}))

    def add_rows(self, mask: np.ndarray, column: str | None, message: Callable[[int], str]) -> None:
        """One problem per True in ``mask`` (positions 0.. → rows 1..); ``message(position)``."""
        hits = np.flatnonzero(mask)
        for pos in hits[: self.cap]:
            self._items.append((int(pos) + 1, len(self._items),
                                {"row": int(pos) + 1, "column": column, "message": message(int(pos))}))
        self.total += len(hits)

    def listing(self) -> list[Problem]:
        """File-level problems first, then by row; at most `cap` entries plus a count of the rest."""
        items = [p for _, _, p in sorted(self._items, key=lambda t: (t[0], t[1]))][: self.cap]
        if self.total > len(items):
            rest = self.total - len(items)
            items.append({"row": None, "column": None, "message": f"{rest} more problem(s) not listed"})
        elif self.uncounted:
            items.append({"row": None, "column": None, "message": "more problems follow (not counted)"})
        return items

    def raise_if_any(self, name: str) -> None:
        if not self.total:
            return
        listing = self.listing()
        shown = "; ".join(describe_problem(p) for p in listing[:3])
        more = " ..." if len(listing) > 3 else ""
        count = f"{self.total}{'+' if self.uncounted else ''}"
        raise DataError(f"{name}: {count} problem(s), file rejected: {shown}{more}", name, listing)


def describe_problem(problem: Problem) -> str:
    """``row 3, column 'Open': 'abc' is not a number`` (for messages and logs)."""
    where = []
    if problem.get("row") is not None:
        where.append(f"row {problem['row']}")
    if problem.get("column") is not None:
        where.append(f"column {problem['column']!r}")
    return f"{', '.join(where)}: {problem['message']}" if where else str(problem["message"])


# -- reading ----------------------------------------------------------------------------------
def _read_bytes(data: UploadData, limit: int, filename: str | None) -> tuple[bytes, str, bool]:
    """The file's bytes, the name to show and whether that is a real file name (for the symbol).

    Raises UploadTooLarge before reading a file over ``limit`` bytes.
    """
    if filename is not None:
        filename = re.split(r"[\\/]", filename)[-1]  # a browser may send a full (Windows) path
    if isinstance(data, (bytes, bytearray, memoryview)):
        name = filename or "upload"
        raw = bytes(data)
        if len(raw) > limit:
            raise UploadTooLarge(name, limit, len(raw))
        return raw, name, filename is not None
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        name = filename or p.name
        if not p.is_file():
            raise DataError(f"{name}: no such file", name)
        size = p.stat().st_size
        if size > limit:
            raise UploadTooLarge(name, limit, size)
        with p.open("rb") as fh:
            raw = fh.read(limit + 1)
        if len(raw) > limit:  # grew while we looked
            raise UploadTooLarge(name, limit, None)
        return raw, name, True
    if hasattr(data, "read"):
        given = filename or getattr(data, "name", None)
        name = Path(given).name if isinstance(given, str) and given else "upload"
        raw = data.read(limit + 1)
        if not isinstance(raw, (bytes, bytearray)):
            raise DataError(f"{name}: the file object must be opened in binary mode", name)
        if len(raw) > limit:
            raise UploadTooLarge(name, limit, None)
        return bytes(raw), name, name != "upload" or filename is not None
    raise DataError(f"cannot read an upload from a {type(data).__name__}", filename)


def _utf8_problems(data: bytes, offset: int, problems: _Problems) -> None:
    """Every invalid UTF-8 sequence (up to the cap) with its byte offset, line and data row."""
    view = memoryview(data)
    pos = line_pos = 0
    line = 1
    found = 0
    while pos < len(data):
        try:
            codecs.utf_8_decode(view[pos:], "strict", True)
            return
        except UnicodeDecodeError as exc:
            bad = pos + exc.start
            line += data.count(b"\n", line_pos, bad)
            line_pos = bad
            if found == problems.cap:
                problems.uncounted = True
                return
            found += 1
            row = line - 1 if line > 1 else None
            where = "in the header" if row is None else f"line {line}"
            problems.add(row, None, f"not UTF-8 text: invalid byte 0x{data[bad]:02X} at byte offset "
                                    f"{bad + offset} ({where}); save the file as UTF-8 CSV")
            pos = pos + exc.end


def _sniff_delimiter(data: bytes) -> str:
    """The delimiter of the header line: the most frequent of ``,`` ``;`` tab (``,`` on ties)."""
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _read_csv(data: bytes, problems: _Problems) -> tuple[pd.DataFrame, list[str]] | None:
    """Parse CSV into a frame of strings (positional columns) and the header names."""
    offset = 0
    if data.startswith(codecs.BOM_UTF8):
        data, offset = data[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
    if not data.strip():
        problems.add(None, None, "the file is empty")
        return None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        problems.add(None, None, "the file is UTF-16 text; save it as UTF-8 CSV")
        return None
    if data.startswith(b"PK\x03\x04"):
        problems.add(None, None, "this looks like an Excel/zip file; export it as CSV (UTF-8) or Parquet")
        return None
    _utf8_problems(data, offset, problems)
    if problems.total:
        return None
    sep = _sniff_delimiter(data)
    # pass 1: the csv module checks every record's field count (constant memory)
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=""), delimiter=sep)
    try:
        header = next(reader)
    except csv.Error as exc:
        problems.add(None, None, f"cannot parse the CSV header: {exc}")
        return None
    if not any(h.strip() for h in header):
        problems.add(None, None, "line 1 must be the header (column names), but it is blank")
        return None
    rows = data_rows = 0
    width = len(header)
    try:
        for record in reader:
            rows += 1
            if len(record) == width:
                data_rows += 1
            elif any(f.strip() for f in record):  # (a blank line is skipped but keeps its row number)
                problems.add(rows, None, f"expected {width} fields (as in the header), found {len(record)}")
    except csv.Error as exc:
        problems.add(rows + 1, None, f"cannot parse the CSV: {exc}")
        return None
    if problems.total:
        return None
    if not data_rows:
        problems.add(None, None, "no data rows: the file has only a header")
        return None
    # pass 2: pandas reads the values as strings
    try:
        df = pd.read_csv(io.BytesIO(data), sep=sep, dtype=str, na_filter=False, skip_blank_lines=False,
                         index_col=False, header=0, engine="c", encoding="utf-8")
    except Exception as exc:  # pandas raises several types for malformed CSV
        problems.add(None, None, f"cannot parse the CSV: {exc}")
        return None
    if df.shape[1] != len(header):
        problems.add(None, None, f"cannot parse the CSV: expected {len(header)} columns, read {df.shape[1]}")
        return None
    df.columns = range(len(header))
    return df, [h.strip() for h in header]


def _read_parquet(data: bytes, problems: _Problems) -> tuple[pd.DataFrame, list[str]] | None:
    """Read a Parquet file; the time may be a column or the (pandas) index."""
    try:
        df = pq.read_table(io.BytesIO(data)).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        problems.add(None, None, f"cannot read the Parquet file: {type(exc).__name__}: {exc}")
        return None
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()
    if df.empty:
        problems.add(None, None, "no data rows: the Parquet file has no rows")
        return None
    names = [str(c).strip() for c in df.columns]
    df = df.set_axis(range(len(names)), axis=1)
    return df, names


# -- column values ----------------------------------------------------------------------------
def _text(s: pd.Series) -> pd.Series:
    """The cells as stripped strings (positional index); missing cells are ``""``."""
    if not pd.api.types.is_string_dtype(s) or s.dtype == object:
        s = s.astype(str).where(s.notna().to_numpy(), "")
    return s.str.strip().fillna("").reset_index(drop=True)


def _to_float(text: pd.Series, missing: np.ndarray) -> np.ndarray:
    """Parse numbers: Arrow's fast cast when every cell is a number, else pandas (NaN where not)."""
    try:
        arr = pa.array(text)
        arr = pc.if_else(pa.array(missing), pa.scalar(None, arr.type), arr)
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[int], Any]]:
    """(float values, missing mask, not-a-number mask, cell → the raw value for messages)."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = s.isna().to_numpy()
        return values, missing, np.zeros(len(s), bool), values.__getitem__
    text = _text(s)
    missing = (text == "").to_numpy()
    values = _to_float(text, missing)
    return values, missing, ~missing & np.isnan(values), text.iloc.__getitem__


_TS_MIN = pd.Timestamp("1678-01-01", tz="UTC")
_TS_MAX = pd.Timestamp("2262-04-01", tz="UTC")


def _times(s: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray, Callable[[int], Any]]:
    """(UTC datetime64[ns] series with NaT where bad, missing mask, unparseable mask, raw cell)."""
    s = s.reset_index(drop=True)
    raw: Callable[[int], Any] = s.iloc.__getitem__
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        missing = ts.isna().to_numpy()
        bad = np.zeros(len(s), bool)
    elif pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        missing = s.isna().to_numpy()
        bad = ~missing
        ts = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    else:
        text = _text(s)
        raw = text.iloc.__getitem__
        missing = (text == "").to_numpy()
        ts = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        bad = ~missing & ts.isna().to_numpy()
    out_of_range = (ts.notna() & ((ts < _TS_MIN) | (ts > _TS_MAX))).to_numpy()
    bad = bad | out_of_range
    ts = ts.where(~bad & ~missing).astype("datetime64[ns, UTC]")
    return ts, missing, bad, raw


def _fmt(x: float) -> str:
    return repr(float(x))


# -- validation -------------------------------------------------------------------------------
def _map_columns(names: list[str], problems: _Problems) -> tuple[dict[str, int], int | None]:
    """Canonical name → column position; also the position of a separate Time column (Date + Time)."""
    found: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        k = _key(name)
        canon = "timestamp" if k in TIME_KEYS else COLUMN_KEYS.get(k)
        if canon:
            found.setdefault(canon, []).append(i)
    cols: dict[str, int] = {}
    time_col: int | None = None
    for canon, where in found.items():
        if len(where) == 1:
            cols[canon] = where[0]
        elif canon == "timestamp" and sorted(_key(names[i]) for i in where) == ["date", "time"]:
            cols[canon] = next(i for i in where if _key(names[i]) == "date")
            time_col = next(i for i in where if _key(names[i]) == "time")
        else:
            listed = ", ".join(repr(names[i]) for i in where)
            problems.add(None, canon, f"columns {listed} all mean {canon!r}; keep only one")
    for req in REQUIRED:
        if req not in cols and req not in found:
            problems.add(None, req, f"missing required column {req!r} (accepted names: {_HINTS[req]}, any case)")
    return cols, time_col


def _symbol_ok(symbol: str) -> bool:
    try:
        check_symbol(symbol)
    except DataError:
        return False
    return True


_SYMBOL_RULE = "letters, digits and . _ ^ = - only, starting with a letter or digit, at most 32 characters"


def validate_file(path: UploadData, symbol: str | None = None, max_bytes: int | None = None,
                  filename: str | None = None) -> dict[str, pd.DataFrame]:
    """Validate one uploaded file and return ``{symbol: canonical frame}`` (sorted by time).

    ``path`` is a file path, the file's bytes, or a binary file object. ``filename`` is the name
    the user gave the file (its extension picks the format and its stem is the symbol of a
    one-symbol file); it defaults to the path's name. ``symbol`` names the symbol of a
    one-symbol file; with a ``symbol``/``ticker`` column every row must carry that symbol.
    ``max_bytes`` defaults to `default_max_bytes`.

    Raises `UploadTooLarge` for a file over the limit, else `DataError` listing every problem.
    """
    return {sym: part.to_pandas() for sym, part in validate_tables(path, symbol, max_bytes, filename).items()}


def validate_tables(path: UploadData, symbol: str | None = None, max_bytes: int | None = None,
                    filename: str | None = None) -> dict[str, pa.Table]:
    """`validate_file`, answering ``{symbol: canonical Arrow table}``: zero-copy slices of one table
    holding the whole file sorted by (symbol, time) — what `import_file` stores. Same arguments,
    same checks and same errors as `validate_file`.
    """
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    data, name, named = _read_bytes(path, limit, filename)
    problems = _Problems()
    if not data:
        problems.add(None, None, "the file is empty")
        problems.raise_if_any(name)
    is_parquet = data[:4] == PARQUET_MAGIC
    if not is_parquet and Path(name).suffix.lower() in PARQUET_SUFFIXES:
        problems.add(None, None, "not a Parquet file (it does not start with the Parquet magic bytes PAR1)")
        problems.raise_if_any(name)
    read = _read_parquet(data, problems) if is_parquet else _read_csv(data, problems)
    del data
    if read is None:
        problems.raise_if_any(name)
        raise DataError(f"{name}: cannot read the file", name)  # pragma: no cover - problems always set
    df, names = read
    n = len(df)
    if is_parquet:
        blank = np.zeros(n, bool)
    else:  # CSV blank lines: skipped, but they keep their row numbers
        blank = np.ones(n, bool)
        for c in df.columns:
            blank &= df[c].str.strip().to_numpy() == ""
    valid = ~blank
    cols, time_pos = _map_columns(names, problems)

    if symbol is not None and not _symbol_ok(symbol):
        problems.add(None, None, f"invalid symbol {symbol!r}: {_SYMBOL_RULE}")

    # timestamps
    ts_ok = np.zeros(n, bool)
    ts: pd.Series | None = None
    if "timestamp" in cols:
        tcol = names[cols["timestamp"]]
        series = df[cols["timestamp"]]
        if time_pos is not None:
            series = (_text(series) + " " + _text(df[time_pos])).str.strip()
        ts, t_missing, t_bad, t_raw = _times(series)
        problems.add_rows(t_missing & valid, tcol, lambda i: "missing date/time")
        problems.add_rows(t_bad & valid, tcol, lambda i, raw=t_raw: (
            f"cannot read {str(raw(i))!r} as a date/time: ISO 8601 expected, e.g. 2024-01-31, "
            "2024-01-31 09:30:00 or 2024-01-31T09:30:00-05:00 (years 1678-2262)"))
        ts_ok = valid & ~t_missing & ~t_bad

    # prices and volumes
    values: dict[str, np.ndarray] = {}
    ok: dict[str, np.ndarray] = {}
    for field in (*PRICE_COLUMNS, *VOLUME_COLUMNS):
        if field not in cols:
            continue
        col = names[cols[field]]
        v, missing, text, raw = _numbers(df[cols[field]])
        problems.add_rows(missing & valid, col, lambda i: "missing value")
        problems.add_rows(text & valid, col, lambda i, raw=raw: f"{str(raw(i))!r} is not a number")
        finite = np.isfinite(v)
        problems.add_rows(~missing & ~text & ~finite & valid, col,
                          lambda i, raw=raw: f"{str(raw(i))!r} is not a finite number")
        if field in VOLUME_COLUMNS:
            bad = finite & (v < 0)
            problems.add_rows(bad & valid, col, lambda i, v=v: f"volume must be >= 0, got {_fmt(v[i])}")
        else:
            bad = finite & (v <= 0)
            problems.add_rows(bad & valid, col, lambda i, v=v: f"price must be > 0, got {_fmt(v[i])}")
        values[field] = v
        ok[field] = valid & finite & ~bad

    # bar consistency: low <= min(open, close) <= max(open, close) <= high
    if all(f in values for f in ("open", "high", "low", "close")):
        o, h, lo, c = (values[f] for f in ("open", "high", "low", "close"))
        both = ok["open"] & ok["high"] & ok["low"] & ok["close"]
        with np.errstate(invalid="ignore"):
            crossed = both & (h < lo)
            top, bottom = np.fmax(o, c), np.fmin(o, c)
            high_bad = both & ~crossed & (h < top)
            low_bad = both & ~crossed & (lo > bottom)
        hcol, lcol = names[cols["high"]], names[cols["low"]]
        problems.add_rows(crossed, hcol, lambda i: f"high {_fmt(h[i])} is below low {_fmt(lo[i])}")
        problems.add_rows(high_bad, hcol, lambda i: f"high {_fmt(h[i])} is below max(open, close) {_fmt(top[i])}")
        problems.add_rows(low_bad, lcol, lambda i: f"low {_fmt(lo[i])} is above min(open, close) {_fmt(bottom[i])}")

    # symbols: one code per row (pd.factorize), every check done once per distinct value
    sym_ok = valid.copy()
    if "symbol" in cols:
        scol = names[cols["symbol"]]
        codes, found = pd.factorize(_text(df[cols["symbol"]]), use_na_sentinel=False)
        uniq = np.asarray(found, dtype=object)
        missing_u = uniq == ""
        bad_u = np.array([not m and not _symbol_ok(u) for u, m in zip(uniq, missing_u, strict=True)], bool)
        missing, bad = missing_u[codes], bad_u[codes]
        problems.add_rows(missing & valid, scol, lambda i: "missing symbol")
        problems.add_rows(bad & valid, scol, lambda i: f"invalid symbol {uniq[codes[i]]!r}: {_SYMBOL_RULE}")
        sym_ok &= ~missing & ~bad
        if symbol is not None:
            other = sym_ok & (uniq != symbol)[codes]
            problems.add_rows(other, scol, lambda i: (
                f"symbol {uniq[codes[i]]!r} differs from the symbol given for this upload ({symbol!r})"))
            sym_ok &= ~other
    else:
        one = symbol if symbol is not None else (Path(name).stem if named else None)
        if one is None:
            problems.add(None, None, "no symbol: give one, or add a 'symbol' column")
        elif symbol is None and not _symbol_ok(one):
            problems.add(None, None, f"invalid symbol {one!r} (taken from the file name): {_SYMBOL_RULE}; "
                                     "rename the file or give the symbol")
        codes, uniq = np.zeros(n, np.intp), np.array([one or ""], dtype=object)

    # duplicate timestamps per symbol: order the rows by (symbol, time, row); a row repeating the
    # (symbol, time) of the row before it in that order duplicates the first row of its run
    ns = (ts.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64) if ts is not None
          else np.zeros(n, np.int64))
    keyed = ts_ok & sym_ok
    pos = np.flatnonzero(keyed)
    order = _group_order(codes[pos], ns[pos])
    in_order = slice(None) if order is None else order
    if ts is not None and len(pos):
        c, t = codes[pos][in_order], ns[pos][in_order]
        starts = np.ones(len(pos), bool)
        starts[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
        if not starts.all():
            rows = pos[in_order]
            first_row = np.full(n, -1, np.int64)
            first_row[rows] = rows[np.flatnonzero(starts)][np.cumsum(starts) - 1]
            dup = np.zeros(n, bool)
            dup[pos] = first_row[pos] != pos
            tcol = names[cols["timestamp"]]
            problems.add_rows(dup, tcol, lambda i: (
                f"duplicate date/time {ts.iloc[i].isoformat()} for {uniq[codes[i]]} "
                f"(first at row {first_row[i] + 1})"))

    problems.raise_if_any(name)
    assert ts is not None

    # every valid row is keyed now: one table ordered by (symbol, time), one slice per symbol
    if len(pos) != n:  # (CSV blank lines were left out)
        ns = ns[keyed]
        values = {f: v[keyed] for f, v in values.items()}
        codes = codes[keyed]
    if order is not None:
        ns = ns[order]
        values = {f: v[order] for f, v in values.items()}
        codes = codes[order]
    columns = {"timestamp": pa.array(ns, type=pa.timestamp("ns", tz="UTC"))}
    for field in ("open", "high", "low", "close"):
        columns[field] = pa.array(values[field], type=pa.float64())
    columns["volume"] = pa.array(values["volume"] if "volume" in values else np.zeros(len(ns)), type=pa.float64())
    for field in ("adj_open", "adj_high", "adj_low", "adj_close", "adj_volume"):
        if field in values:
            columns[field] = pa.array(values[field], type=pa.float64())
    table = pa.table(columns)
    counts = np.bincount(codes, minlength=len(uniq))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    out: dict[str, pa.Table] = {}
    for k in sorted(np.flatnonzero(counts), key=lambda k: str(uniq[k])):
        out[str(uniq[k])] = table.slice(int(bounds[k]), int(counts[k]))
    return out


def _group_order(codes: np.ndarray, ns: np.ndarray) -> np.ndarray | None:
    """The stable order of rows by (symbol code, time); None when they are in that order already
    (the usual long file: grouped by symbol, each group sorted by time)."""
    if len(codes) < 2:
        return None
    same = codes[1:] == codes[:-1]
    if ((codes[1:] > codes[:-1]) | (same & (ns[1:] >= ns[:-1]))).all():
        return None
    return np.lexsort((ns, codes))


def import_file(store: MarketDataStore, path: UploadData, symbol: str | None = None, source: str = "upload",
                frequency: str = "1d", max_bytes: int | None = None,
                filename: str | None = None) -> list[CatalogEntry]:
    """Validate the whole file, then store each of its symbols, *replacing* any stored series.

    Nothing is written unless every row is valid (`validate_file` raises first). The symbols are
    written by `MarketDataStore.write_many`: each file atomically, on a few threads, then every
    catalog row in one transaction; if a write fails part-way, the symbols already written are
    put back as they were (best effort) before the error propagates.
    Returns the catalog entries of the stored series, sorted by symbol.
    """
    check_source(source)
    check_frequency(frequency)
    tables = validate_tables(path, symbol=symbol, max_bytes=max_bytes, filename=filename)
    return store.write_many(source, frequency, tables)


class UploadSource(DataSource):
    """Bars that arrive only as user files (CSV or Parquet); nothing to fetch."""

    name = "upload"
    description = ("User-uploaded CSV or Parquet files (one symbol per file, or a long file with a symbol "
                   "column), validated strictly; a file is stored only if every row is valid.")
    frequencies = tuple(FREQUENCIES)
    fetchable = False
    importable = True

    def __init__(self, name: str = "upload") -> None:
        """``name``: ``upload`` (the registered source), or the name of an upload collection — files
        imported under a name no plugin owns (`MarketDataService.source` resolves stored ones)."""
        if name != type(self).name:
            self.name = check_source(name)
            self.description = (f"Upload collection {name!r}: user CSV/Parquet files imported with "
                                f"source={name} (validated as for upload).")

    def schema(self) -> dict[str, Any]:
        """The base schema plus ``collection``: true for an upload collection of the user's."""
        return {**super().schema(), "collection": self.name != type(self).name}

    def validate(self, path: UploadData, symbol: str | None = None, max_bytes: int | None = None,
                 filename: str | None = None) -> dict[str, pd.DataFrame]:
        """See `validate_file`."""
        return validate_file(path, symbol=symbol, max_bytes=max_bytes, filename=filename)

    def import_file(self, store: MarketDataStore, path: UploadData, symbol: str | None = None,
                    frequency: str = "1d", max_bytes: int | None = None,
                    filename: str | None = None) -> list[CatalogEntry]:
        """See `import_file` (stores under this source's name)."""
        return import_file(store, path, symbol=symbol, source=self.name, frequency=frequency,
                           max_bytes=max_bytes, filename=filename)


@hookimpl
def register_data_sources() -> list[DataSource]:
    """The built-in ``upload`` data source."""
    return [UploadSource()]
