"""MarketPanel: OHLCV for a universe as dense, aligned (T × S) float64 arrays plus the calendar.

Symbols are aligned on the union of their timestamps; a symbol without a bar at a timestamp
gets NaN there (never a silent forward-fill). Inputs: a long DataFrame (timestamp, symbol,
open, high, low, close, volume), a dict of per-symbol DataFrames, or CSV/Parquet files (one
symbol per file named by the file stem, or a long file with a ``symbol`` column).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .annualisation import annualise
from .errors import DataError
from .timeutil import end_bound_utc, to_utc

FIELDS = ("open", "high", "low", "close", "volume")
TIME_ALIASES = ("timestamp", "date", "datetime", "time")
ALIASES = {
    "open": "open", "o": "open",
    "high": "high", "h": "high",
    "low": "low", "l": "low",
    "close": "close", "c": "close", "price": "close",
    "volume": "volume", "v": "volume", "vol": "volume",
    "adj close": "adj_close", "adj_close": "adj_close", "adjclose": "adj_close",
    "symbol": "symbol", "ticker": "symbol",
}
SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._^=-]{0,31}$")


def check_symbol(symbol: str) -> str:
    """Return ``symbol`` if it matches the strict symbol pattern, else raise DataError."""
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol) or ".." in symbol:
        raise DataError(f"invalid symbol {symbol!r}: letters, digits and . _ ^ = - only, at most 32", symbol)
    return symbol


@dataclass
class MarketPanel:
    """Aligned bars: ``index`` (UTC timestamps, length T), ``symbols`` (length S), fields (T, S)."""

    index: pd.DatetimeIndex
    symbols: list[str]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @property
    def n_bars(self) -> int:
        return len(self.index)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    def bars(self) -> dict[str, np.ndarray]:
        """The five (T, S) arrays by field name."""
        return {f: getattr(self, f) for f in FIELDS}

    def select(self, symbols: Sequence[str] | None = None, start: Any = None, end: Any = None) -> MarketPanel:
        """A sub-panel: the given symbols (in that order) and the bars within [start, end]."""
        cols = np.arange(self.n_symbols)
        if symbols is not None:
            pos = {s: i for i, s in enumerate(self.symbols)}
            missing = [s for s in symbols if s not in pos]
            if missing:
                raise DataError(f"no data for symbol(s): {', '.join(missing)}", ",".join(missing))
            cols = np.array([pos[s] for s in symbols], dtype=np.int64)
        rows = np.ones(self.n_bars, dtype=bool)
        if start is not None:
            rows &= self.index >= to_utc(start)
        if end is not None:
            rows &= self.index <= end_bound_utc(end, midnight=True)  # a bare date at midnight: its whole day
        sub = {f: np.ascontiguousarray(getattr(self, f)[rows][:, cols]) for f in FIELDS}
        # drop calendar rows where no selected symbol has a bar
        keep = ~np.all(np.isnan(sub["close"]), axis=1) if len(cols) else np.zeros(rows.sum(), bool)
        sub = {f: np.ascontiguousarray(a[keep]) for f, a in sub.items()}
        return MarketPanel(self.index[rows][keep], [self.symbols[i] for i in cols], **sub)

    def periods_per_year(self) -> float:
        """Annualisation factor inferred from the bars' calendar (see docs/metrics.md)."""
        return infer_periods_per_year(self.index)

    @classmethod
    def from_long(cls, df: pd.DataFrame, source: str = "data") -> MarketPanel:
        """Build from a long frame with a time column, ``symbol`` and OHLCV columns."""
        df = normalize_columns(df, source)
        if "symbol" not in df.columns:
            raise DataError(f"{source}: no 'symbol' column in a multi-symbol frame", source)
        if df.empty:
            raise DataError(f"{source}: no rows", source)
        df = df.copy()
        df["symbol"] = df["symbol"].astype(str)
        for s in df["symbol"].unique():
            check_symbol(s)
        dup = df.duplicated(["timestamp", "symbol"])
        if dup.any():
            row = df[dup].iloc[0]
            raise DataError(f"{source}: duplicate bar for {row['symbol']} at {row['timestamp']}", source)
        symbols = sorted(df["symbol"].unique())
        index = pd.DatetimeIndex(np.sort(df["timestamp"].unique()))
        t_pos = index.get_indexer(df["timestamp"])
        s_pos = pd.Index(symbols).get_indexer(df["symbol"])
        arrays = {}
        for f in FIELDS:
            a = np.full((len(index), len(symbols)), np.nan)
            a[t_pos, s_pos] = df[f].to_numpy(dtype=np.float64)
            arrays[f] = a
        return cls(index=index, symbols=symbols, **arrays)


def infer_periods_per_year(index: pd.DatetimeIndex) -> float:
    """Annualisation factor of bars at ``index``: 252 for daily bars of a 5-day market, 365 of a
    7-day one, bars per trading day × trading days per year intraday (`core/annualisation.py`)."""
    return annualise(index).periods_per_year


def normalize_columns(df: pd.DataFrame, source: str = "data") -> pd.DataFrame:
    """Rename columns case-insensitively via common aliases; parse the time column to UTC.

    Accepts the time as a column (timestamp/date/datetime/time) or as the index. When only
    ``close`` is present, open/high/low are set to the close; a missing volume is 0.
    """
    if not isinstance(df.index, pd.RangeIndex) and df.index.name is not None:
        df = df.reset_index()
    elif isinstance(df.index, pd.DatetimeIndex):
        df = df.reset_index(names="timestamp")
    rename: dict[Any, str] = {}
    time_col = None
    for col in df.columns:
        key = str(col).strip().lower()
        if key in TIME_ALIASES and time_col is None:
            time_col = col
            rename[col] = "timestamp"
        elif key in ALIASES:
            rename[col] = ALIASES[key]
    if time_col is None:
        raise DataError(f"{source}: no time column (one of {', '.join(TIME_ALIASES)})", source)
    out = df.rename(columns=rename)
    if "close" not in out.columns:
        raise DataError(f"{source}: no close column", source)
    for f in ("open", "high", "low"):
        if f not in out.columns:
            out[f] = out["close"]
    if "volume" not in out.columns:
        out["volume"] = 0.0
    for f in FIELDS:
        try:
            out[f] = pd.to_numeric(out[f], errors="raise").astype(np.float64)
        except (ValueError, TypeError):
            bad = pd.to_numeric(out[f], errors="coerce").isna() & out[f].notna()
            row = int(np.argmax(bad.to_numpy())) if bad.any() else 0
            raise DataError(f"{source}: column {f!r} is not numeric (row {row + 1})", source) from None
    try:
        out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    except (ValueError, TypeError):
        raise DataError(f"{source}: cannot parse the time column {time_col!r}", source) from None
    return out


def panel_from_frames(frames: Mapping[str, pd.DataFrame]) -> MarketPanel:
    """Build from ``{symbol: frame}`` (each frame indexed by time or with a time column)."""
    parts = []
    for symbol, frame in frames.items():
        check_symbol(symbol)
        f = normalize_columns(frame, symbol)
        f["symbol"] = symbol
        parts.append(f[["timestamp", "symbol", *FIELDS]])
    if not parts:
        raise DataError("no data given", None)
    return MarketPanel.from_long(pd.concat(parts, ignore_index=True))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file; DataError naming the file when it can't be read."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file", str(p))
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(p)
        return pd.read_csv(p)
    except UnicodeDecodeError:
        raise DataError(f"{p}: not UTF-8 text", str(p)) from None
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise DataError(f"{p}: cannot read ({type(exc).__name__}: {exc})", str(p)) from None


def panel_from_files(paths: Iterable[str | Path]) -> MarketPanel:
    """Build from CSV/Parquet files: a long file with ``symbol``, or one symbol per file (stem)."""
    parts = []
    for path in paths:
        p = Path(path)
        df = read_table(p)
        if df.empty:
            raise DataError(f"{p}: no rows", str(p))
        f = normalize_columns(df, str(p))
        if "symbol" not in f.columns:
            f["symbol"] = check_symbol(p.stem)
        parts.append(f[["timestamp", "symbol", *FIELDS]])
    if not parts:
        raise DataError("no data files given", None)
    return MarketPanel.from_long(pd.concat(parts, ignore_index=True), source=", ".join(map(str, paths)))


def to_panel(data: Any) -> MarketPanel:
    """Coerce any accepted data form (panel, long frame, dict of frames, path(s)) to a MarketPanel."""
    if isinstance(data, MarketPanel):
        return data
    if isinstance(data, pd.DataFrame):
        return MarketPanel.from_long(data)
    if isinstance(data, Mapping):
        return panel_from_frames(data)
    if isinstance(data, (str, Path)):
        return panel_from_files([data])
    if isinstance(data, (list, tuple)) and all(isinstance(x, (str, Path)) for x in data):
        return panel_from_files(data)
    raise DataError(f"unsupported data type {type(data).__name__}", None)
