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
when any row of the file is invalid. With ``delisted`` every series of the file is marked as
*ended* at its last bar (a delisting: portfolio mode closes positions there); an upload without
it stores the series unmarked — the new version replaces the series and its mark, so uploading
again without the flag clears it (`parse_delisted` reads the flag's text). The rules are
documented in docs/datasources.md ("## upload").
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...core.config import Settings, parse_bytes
from ...core.errors import DataError, SpecError
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
        self._seq = 0  # insertion order (ties on a row keep the order the checks ran in)

    def add(self, row: int | None, column: str | None, message: str) -> None:
        self.total += 1
        self._seq += 1
        self._items.append((row if row is not None else 0, self._seq,
                            {"row": row, "column": column, "message": message}))

    def add_rows(self, mask: np.ndarray, column: str | None, message: Callable[[int], str],
                 offset: int = 0) -> None:
        """One problem per True in ``mask`` (positions 0.. → rows ``offset`` + 1..); ``message(position)``."""
        hits = np.flatnonzero(mask)
        for pos in hits[: self.cap]:
            row = int(pos) + 1 + offset
            self._seq += 1
            self._items.append((row, self._seq, {"row": row, "column": column, "message": message(int(pos))}))
        self.total += len(hits)

    def prune(self) -> None:
        """Keep only the problems `listing` can show (the first `cap` by row): bounded memory."""
        if len(self._items) > 4 * self.cap:
            self._items = sorted(self._items, key=lambda t: (t[0], t[1]))[: self.cap]

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
#: Rows per block: the file is read, checked and reduced to numbers one block at a time, so an
#: import holds one block of text plus the file's numbers (about the size of the stored data).
BLOCK_ROWS = 65_536
_SCAN_BYTES = 1 << 20
_HEADER_BYTES = 1 << 20


def _open_upload(data: UploadData, limit: int, filename: str | None) -> tuple[IO[bytes], str, bool]:
    """A binary file object over the upload (at its start), the name to show and whether that is
    a real file name (for the symbol). A path is opened, not read; bytes and file objects are
    taken as they are (a file object read up to the limit).

    Raises UploadTooLarge before reading a file over ``limit`` bytes.
    """
    if filename is not None:
        filename = re.split(r"[\\/]", filename)[-1]  # a browser may send a full (Windows) path
    if isinstance(data, (bytes, bytearray, memoryview)):
        name = filename or "upload"
        raw = bytes(data)
        if len(raw) > limit:
            raise UploadTooLarge(name, limit, len(raw))
        return io.BytesIO(raw), name, filename is not None
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        name = filename or p.name
        if not p.is_file():
            raise DataError(f"{name}: no such file", name)
        size = p.stat().st_size
        if size > limit:
            raise UploadTooLarge(name, limit, size)
        fh = p.open("rb")
        if os.fstat(fh.fileno()).st_size > limit:  # grew while we looked
            fh.close()
            raise UploadTooLarge(name, limit, None)
        return fh, name, True
    if hasattr(data, "read"):
        given = filename or getattr(data, "name", None)
        name = Path(given).name if isinstance(given, str) and given else "upload"
        raw = data.read(limit + 1)
        if not isinstance(raw, (bytes, bytearray)):
            raise DataError(f"{name}: the file object must be opened in binary mode", name)
        if len(raw) > limit:
            raise UploadTooLarge(name, limit, None)
        return io.BytesIO(bytes(raw)), name, name != "upload" or filename is not None
    raise DataError(f"cannot read an upload from a {type(data).__name__}", filename)


def _utf8_problems(fh: IO[bytes], offset: int, problems: _Problems) -> bool:
    """Every invalid UTF-8 sequence (up to the cap) with its byte offset, line and data row, read
    from ``fh`` (at ``offset`` bytes into the file) block by block. Returns whether the text
    holds anything but white space."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    pos = offset  # file offset of the first byte of `pending`
    line = 1
    content = False
    found = 0
    pending = b""
    while True:
        block = fh.read(_SCAN_BYTES)
        final = not block
        data = pending + block
        start = 0
        while True:
            try:
                text = decoder.decode(data[start:], final)
                content = content or (bool(text) and not text.isspace())
                line += data.count(b"\n", start, len(data) - len(decoder.getstate()[0]))
                pending = decoder.getstate()[0]
                pos += len(data) - len(pending)
                decoder.reset()
                break
            except UnicodeDecodeError as exc:
                bad = start + exc.start
                content = True
                line += data.count(b"\n", start, bad)
                if found == problems.cap:
                    problems.uncounted = True
                    return content
                found += 1
                row = line - 1 if line > 1 else None
                where = "in the header" if row is None else f"line {line}"
                problems.add(row, None, f"not UTF-8 text: invalid byte 0x{data[bad]:02X} at byte offset "
                                        f"{pos + bad} ({where}); save the file as UTF-8 CSV")
                line += data.count(b"\n", bad, start + exc.end)
                start += exc.end
                decoder.reset()
        if final:
            return content


def _sniff_delimiter(header_line: bytes) -> str:
    """The delimiter of the header line: the most frequent of ``,`` ``;`` tab (``,`` on ties)."""
    header = header_line.decode("utf-8", "replace")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _text_stream(fh: IO[bytes], offset: int) -> io.TextIOWrapper:
    fh.seek(offset)
    return io.TextIOWrapper(fh, encoding="utf-8", newline="")


def _read_csv(fh: IO[bytes], problems: _Problems) -> tuple[Iterator[pd.DataFrame], list[str]] | None:
    """Check a CSV file (encoding, header, field counts) and return its blocks — frames of strings
    with positional columns, `BLOCK_ROWS` rows at most — and the header names."""
    head = fh.read(4)
    offset = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        problems.add(None, None, "the file is UTF-16 text; save it as UTF-8 CSV")
        return None
    if head.startswith(b"PK\x03\x04"):
        problems.add(None, None, "this looks like an Excel/zip file; export it as CSV (UTF-8) or Parquet")
        return None
    fh.seek(offset)
    if not _utf8_problems(fh, offset, problems) and not problems.total:
        problems.add(None, None, "the file is empty")
        return None
    if problems.total:
        return None
    fh.seek(offset)
    sep = _sniff_delimiter(fh.readline(_HEADER_BYTES))
    # pass 1: the csv module checks every record's field count (constant memory)
    text = _text_stream(fh, offset)
    try:
        reader = csv.reader(text, delimiter=sep)
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
    finally:
        text.detach()
    if problems.total:
        return None
    if not data_rows:
        problems.add(None, None, "no data rows: the file has only a header")
        return None
    # pass 2: pandas reads the values as strings, a block at a time
    names = [h.strip() for h in header]
    text = _text_stream(fh, offset)
    try:
        blocks = pd.read_csv(text, sep=sep, dtype=str, na_filter=False, skip_blank_lines=False, index_col=False,
                             header=0, engine="c", chunksize=BLOCK_ROWS)
    except Exception as exc:  # pandas raises several types for malformed CSV
        problems.add(None, None, f"cannot parse the CSV: {exc}")
        return None

    def frames() -> Iterator[pd.DataFrame]:
        with blocks:
            while True:
                try:
                    df = next(blocks)
                except StopIteration:
                    return
                except Exception as exc:  # pandas raises several types for malformed CSV
                    raise _Unreadable(f"cannot parse the CSV: {exc}") from None
                if df.shape[1] != len(names):
                    raise _Unreadable(f"cannot parse the CSV: expected {len(names)} columns, read {df.shape[1]}")
                df.columns = range(len(names))
                yield df.reset_index(drop=True)

    return frames(), names


class _Unreadable(Exception):
    """A block of the file could not be parsed (a problem with the whole file)."""


def _read_parquet(fh: IO[bytes], problems: _Problems) -> tuple[Iterator[pd.DataFrame], list[str]] | None:
    """Read a Parquet file (as Arrow: columnar, compact) and return its blocks as frames (the time
    may be a column or the pandas index) and the column names."""
    try:
        table = pq.read_table(fh)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        problems.add(None, None, f"cannot read the Parquet file: {type(exc).__name__}: {exc}")
        return None
    if not table.num_rows:
        problems.add(None, None, "no data rows: the Parquet file has no rows")
        return None

    def frame(start: int) -> pd.DataFrame:
        df = table.slice(start, BLOCK_ROWS).to_pandas()
        if not isinstance(df.index, pd.RangeIndex):
            df = df.reset_index()
        return df

    first = frame(0)
    names = [str(c).strip() for c in first.columns]

    def frames() -> Iterator[pd.DataFrame]:
        for start in range(0, table.num_rows, BLOCK_ROWS):
            df = first if start == 0 else frame(start)
            yield df.set_axis(range(len(names)), axis=1).reset_index(drop=True)

    return frames(), names


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

    The file is read in blocks of `BLOCK_ROWS` rows: each block is checked and reduced to its
    numbers (time, prices, volumes, a symbol code) before the next is read, so memory stays
    near the size of those numbers, whatever the size of the text.
    """
    limit = default_max_bytes() if max_bytes is None else int(max_bytes)
    fh, name, named = _open_upload(path, limit, filename)
    with fh:
        return _validate(fh, name, named, symbol)


class _Columns:
    """The numbers of the file's keyed rows (valid time and symbol), gathered block by block."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []  # data row positions (0-based) of the keyed rows
        self.ns: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.values: dict[str, list[np.ndarray]] = {}

    def add(self, offset: int, keyed: np.ndarray, ns: np.ndarray, codes: np.ndarray,
            values: dict[str, np.ndarray]) -> None:
        self.rows.append(np.flatnonzero(keyed) + offset)
        self.ns.append(ns[keyed])
        self.codes.append(codes[keyed].astype(np.int64, copy=False))
        for f, v in values.items():
            self.values.setdefault(f, []).append(v[keyed])

    @staticmethod
    def joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        out = np.concatenate(parts) if parts else np.empty(0, dtype)
        parts.clear()  # one column's blocks at a time: the blocks go as the column is made
        return out


def _validate(fh: IO[bytes], name: str, named: bool, symbol: str | None) -> dict[str, pa.Table]:
    problems = _Problems()
    head = fh.read(4)
    fh.seek(0)
    if not head:
        problems.add(None, None, "the file is empty")
        problems.raise_if_any(name)
    is_parquet = head == PARQUET_MAGIC
    if not is_parquet and Path(name).suffix.lower() in PARQUET_SUFFIXES:
        problems.add(None, None, "not a Parquet file (it does not start with the Parquet magic bytes PAR1)")
        problems.raise_if_any(name)
    read = _read_parquet(fh, problems) if is_parquet else _read_csv(fh, problems)
    if read is None:
        problems.raise_if_any(name)
        raise DataError(f"{name}: cannot read the file", name)  # pragma: no cover - problems always set
    blocks, names = read
    cols, time_pos = _map_columns(names, problems)

    if symbol is not None and not _symbol_ok(symbol):
        problems.add(None, None, f"invalid symbol {symbol!r}: {_SYMBOL_RULE}")
    one: str | None = None
    if "symbol" not in cols:
        one = symbol if symbol is not None else (Path(name).stem if named else None)
        if one is None:
            problems.add(None, None, "no symbol: give one, or add a 'symbol' column")
        elif symbol is None and not _symbol_ok(one):
            problems.add(None, None, f"invalid symbol {one!r} (taken from the file name): {_SYMBOL_RULE}; "
                                     "rename the file or give the symbol")
    symbols = _Symbols(symbol, [one or ""] if "symbol" not in cols else [])
    gathered = _Columns()
    n = 0
    try:
        for df in blocks:
            _check_block(df, n, names, cols, time_pos, is_parquet, symbols, problems, gathered)
            n += len(df)
            problems.prune()
    except _Unreadable as exc:
        problems.add(None, None, str(exc))
        problems.raise_if_any(name)
    uniq = np.asarray(symbols.names, dtype=object)

    # duplicate timestamps per symbol: order the rows by (symbol, time, row); a row repeating the
    # (symbol, time) of the row before it in that order duplicates the first row of its run
    pos = _Columns.joined(gathered.rows, np.int64)
    ns = _Columns.joined(gathered.ns, np.int64)
    codes = _Columns.joined(gathered.codes, np.int64)
    order = _group_order(codes, ns)
    in_order = slice(None) if order is None else order
    if "timestamp" in cols and len(pos):
        c, t = codes[in_order], ns[in_order]
        starts = np.ones(len(pos), bool)
        starts[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
        if not starts.all():
            rows = pos[in_order]
            first_row = np.full(n, -1, np.int64)
            first_row[rows] = rows[np.flatnonzero(starts)][np.cumsum(starts) - 1]
            code_of = np.zeros(n, np.int64)
            code_of[pos] = codes
            ns_of = np.zeros(n, np.int64)
            ns_of[pos] = ns
            dup = np.zeros(n, bool)
            dup[pos] = first_row[pos] != pos
            tcol = names[cols["timestamp"]]
            problems.add_rows(dup, tcol, lambda i: (
                f"duplicate date/time {pd.Timestamp(int(ns_of[i]), tz='UTC').isoformat()} for {uniq[code_of[i]]} "
                f"(first at row {first_row[i] + 1})"))
            del first_row, code_of, ns_of, dup

    problems.raise_if_any(name)
    del pos

    # every valid row is keyed now: one table ordered by (symbol, time), one slice per symbol
    if order is not None:
        ns, codes = ns[order], codes[order]
    columns = {"timestamp": pa.array(ns, type=pa.timestamp("ns", tz="UTC"))}
    del ns
    for field in ("open", "high", "low", "close", "volume", "adj_open", "adj_high", "adj_low", "adj_close",
                  "adj_volume"):
        if field in gathered.values:
            v = _Columns.joined(gathered.values.pop(field), np.float64)
            columns[field] = pa.array(v if order is None else v[order], type=pa.float64())
        elif field == "volume":
            columns[field] = pa.array(np.zeros(len(codes)), type=pa.float64())
    table = pa.table(columns)
    counts = np.bincount(codes, minlength=len(uniq))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    out: dict[str, pa.Table] = {}
    for k in sorted(np.flatnonzero(counts), key=lambda k: str(uniq[k])):
        out[str(uniq[k])] = table.slice(int(bounds[k]), int(counts[k]))
    return out


class _Symbols:
    """Symbol codes across blocks: every distinct value checked once, numbered by first appearance."""

    def __init__(self, given: str | None, names: list[str]) -> None:
        self.given = given
        self.names: list[str] = list(names)
        self.code: dict[str, int] = {s: i for i, s in enumerate(self.names)}
        self.ok: list[bool] = [True] * len(self.names)

    def codes(self, text: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global codes, missing mask, invalid mask) of a block's symbol cells."""
        local, found = pd.factorize(text, use_na_sentinel=False)
        mapping = np.empty(len(found), np.int64)
        for j, value in enumerate(found):
            value = str(value)
            k = self.code.get(value)
            if k is None:
                k = self.code[value] = len(self.names)
                self.names.append(value)
                self.ok.append(value == "" or _symbol_ok(value))
            mapping[j] = k
        codes = mapping[local]
        names = np.asarray(self.names, dtype=object)
        missing = (names == "")[codes]
        bad = ~np.asarray(self.ok, bool)[codes]
        return codes, missing, bad


def _check_block(df: pd.DataFrame, offset: int, names: list[str], cols: dict[str, int], time_pos: int | None,
                 is_parquet: bool, symbols: _Symbols, problems: _Problems, gathered: _Columns) -> None:
    """Check one block of rows (data rows ``offset + 1`` …) and keep its keyed rows' numbers."""
    n = len(df)
    if is_parquet:
        blank = np.zeros(n, bool)
    else:  # CSV blank lines: skipped, but they keep their row numbers
        blank = np.ones(n, bool)
        for c in df.columns:
            blank &= (_text(df[c]) == "").to_numpy()
    valid = ~blank

    def add_rows(mask: np.ndarray, column: str | None, message: Callable[[int], str]) -> None:
        problems.add_rows(mask, column, message, offset)

    # timestamps
    ts_ok = np.zeros(n, bool)
    ns = np.zeros(n, np.int64)
    if "timestamp" in cols:
        tcol = names[cols["timestamp"]]
        series = df[cols["timestamp"]]
        if time_pos is not None:
            series = (_text(series) + " " + _text(df[time_pos])).str.strip()
        ts, t_missing, t_bad, t_raw = _times(series)
        add_rows(t_missing & valid, tcol, lambda i: "missing date/time")
        add_rows(t_bad & valid, tcol, lambda i, raw=t_raw: (
            f"cannot read {str(raw(i))!r} as a date/time: ISO 8601 expected, e.g. 2024-01-31, "
            "2024-01-31 09:30:00 or 2024-01-31T09:30:00-05:00 (years 1678-2262)"))
        ts_ok = valid & ~t_missing & ~t_bad
        ns = ts.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64)
        del ts

    # prices and volumes
    values: dict[str, np.ndarray] = {}
    ok: dict[str, np.ndarray] = {}
    for field in (*PRICE_COLUMNS, *VOLUME_COLUMNS):
        if field not in cols:
            continue
        col = names[cols[field]]
        v, missing, text, raw = _numbers(df[cols[field]])
        add_rows(missing & valid, col, lambda i: "missing value")
        add_rows(text & valid, col, lambda i, raw=raw: f"{str(raw(i))!r} is not a number")
        finite = np.isfinite(v)
        add_rows(~missing & ~text & ~finite & valid, col, lambda i, raw=raw: f"{str(raw(i))!r} is not a finite number")
        if field in VOLUME_COLUMNS:
            bad = finite & (v < 0)
            add_rows(bad & valid, col, lambda i, v=v: f"volume must be >= 0, got {_fmt(v[i])}")
        else:
            bad = finite & (v <= 0)
            add_rows(bad & valid, col, lambda i, v=v: f"price must be > 0, got {_fmt(v[i])}")
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
        add_rows(crossed, hcol, lambda i: f"high {_fmt(h[i])} is below low {_fmt(lo[i])}")
        add_rows(high_bad, hcol, lambda i: f"high {_fmt(h[i])} is below max(open, close) {_fmt(top[i])}")
        add_rows(low_bad, lcol, lambda i: f"low {_fmt(lo[i])} is above min(open, close) {_fmt(bottom[i])}")

    # symbols: one code per row, every check done once per distinct value (in `symbols`)
    sym_ok = valid.copy()
    if "symbol" in cols:
        scol = names[cols["symbol"]]
        codes, missing, bad = symbols.codes(_text(df[cols["symbol"]]))
        uniq = symbols.names
        add_rows(missing & valid, scol, lambda i: "missing symbol")
        add_rows(bad & valid, scol, lambda i: f"invalid symbol {uniq[codes[i]]!r}: {_SYMBOL_RULE}")
        sym_ok &= ~missing & ~bad
        given = symbols.given
        if given is not None:
            other = sym_ok & (np.asarray(uniq, dtype=object) != given)[codes]
            add_rows(other, scol, lambda i: (
                f"symbol {uniq[codes[i]]!r} differs from the symbol given for this upload ({given!r})"))
            sym_ok &= ~other
    else:
        codes = np.zeros(n, np.int64)
    gathered.add(offset, ts_ok & sym_ok, ns, codes, values)


def _group_order(codes: np.ndarray, ns: np.ndarray) -> np.ndarray | None:
    """The stable order of rows by (symbol code, time); None when they are in that order already
    (the usual long file: grouped by symbol, each group sorted by time)."""
    if len(codes) < 2:
        return None
    same = codes[1:] == codes[:-1]
    if ((codes[1:] > codes[:-1]) | (same & (ns[1:] >= ns[:-1]))).all():
        return None
    return np.lexsort((ns, codes))


#: The ``delisted`` flag's accepted spellings (case-insensitive); an empty value is "not given".
FLAG_VALUES = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
               "off": False}


def parse_delisted(value: Any, field: str = "delisted") -> bool:
    """The ``delisted`` flag of an upload: a bool, None / "" (not given: False) or one of
    `FLAG_VALUES`; anything else is a SpecError naming ``field`` (422 on the web)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "":
            return False
        if text in FLAG_VALUES:
            return FLAG_VALUES[text]
    raise SpecError(field, f"{str(value)[:40]!r} is not a flag: true or false (also 1/0, yes/no, on/off)")


def import_file(store: MarketDataStore, path: UploadData, symbol: str | None = None, source: str = "upload",
                frequency: str = "1d", max_bytes: int | None = None,
                filename: str | None = None, delisted: bool = False) -> list[CatalogEntry]:
    """Validate the whole file, then store each of its symbols, *replacing* any stored series.

    ``delisted``: the file holds series that have ended (delistings): each is marked ended at its
    last bar (`MarketDataStore.write_many`'s ``ended``); without it the series are stored unmarked.

    Nothing is written unless every row is valid (`validate_file` raises first). The symbols are
    written by `MarketDataStore.write_many`: each file atomically, on a few threads, then every
    catalog row in one transaction; if a write fails part-way, the symbols already written are
    put back as they were (best effort) before the error propagates.
    Returns the catalog entries of the stored series, sorted by symbol.
    """
    check_source(source)
    check_frequency(frequency)
    tables = validate_tables(path, symbol=symbol, max_bytes=max_bytes, filename=filename)
    return store.write_many(source, frequency, tables, ended=list(tables) if delisted else ())


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
                    filename: str | None = None, delisted: bool = False) -> list[CatalogEntry]:
        """See `import_file` (stores under this source's name)."""
        return import_file(store, path, symbol=symbol, source=self.name, frequency=frequency,
                           max_bytes=max_bytes, filename=filename, delisted=delisted)


@hookimpl
def register_data_sources() -> list[DataSource]:
    """The built-in ``upload`` data source."""
    return [UploadSource()]
