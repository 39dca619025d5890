"""Bar loaders: how a stage gets the bars of its symbols, on the run's calendar.

- `StoreLoader` reads each symbol's file from the market-data store root named in the plan
  (`marketdata.read_symbol_arrays`; a directory or a bucket) — the version of the series the
  plan names (`DataSelection.files`), once, whole, so a re-upload during the run changes
  nothing it reads — what cluster workers use, so bars never pass through the server or the
  scheduler.
- `PanelLoader` serves bars given in memory (`run_backtest(spec, data)`).

The calendar of a run is the union of the timestamps within [lo, hi] at which at least one
of the run's symbols has a close (the benchmark does not add rows); every stage aligns its
symbols on it, NaN where a symbol has no bar — so a partition's results do not depend on
which other symbols share its partition.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .annualisation import annualise
from .errors import DataError
from .marketdata import read_symbol_arrays
from .panel import FIELDS, MarketPanel
from .plan import DataSelection

Series = tuple[np.ndarray, dict[str, np.ndarray]]  # (int64 UTC ns timestamps, field arrays)


@dataclass(frozen=True)
class Calendar:
    """The run's bar timestamps (int64 UTC ns, ascending), its annualisation factor and how that
    factor was chosen (`core/annualisation.py`: periods_per_year, bars_per_day, days_per_year, rule, why)."""

    ns: np.ndarray
    periods_per_year: float
    annualisation: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.ns.astype("datetime64[ns]")).tz_localize("UTC")

    @property
    def n_bars(self) -> int:
        return len(self.ns)

    @classmethod
    def build(cls, ns: np.ndarray, periods_per_year: float | None) -> Calendar:
        """The calendar of ``ns``; ``periods_per_year`` (the spec's) wins over the inferred factor."""
        ns = np.asarray(ns, dtype=np.int64)
        a = annualise(ns, periods_per_year)
        return cls(ns, a.periods_per_year, a.as_dict())


class BarsLoader(Protocol):
    """What the stages need from the data."""

    def series(self, symbols: Sequence[str]) -> list[Series]: ...


def calendar_of(series: Sequence[Series]) -> np.ndarray:
    """Sorted unique timestamps at which any of ``series`` has a close."""
    parts = [ts[~np.isnan(cols["close"])] for ts, cols in series]
    return np.unique(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)


def align(symbols: Sequence[str], series: Sequence[Series], calendar: np.ndarray) -> MarketPanel:
    """The symbols' bars on ``calendar`` rows (NaN where a symbol has no bar there)."""
    n_t = len(calendar)
    arrays = {f: np.full((n_t, len(symbols)), np.nan) for f in FIELDS}
    for j, (ts, cols) in enumerate(series):
        rows = np.searchsorted(calendar, ts)
        ok = rows < n_t
        ok[ok] = calendar[rows[ok]] == ts[ok]
        for f in FIELDS:
            arrays[f][rows[ok], j] = cols[f][ok]
    index = pd.DatetimeIndex(calendar.astype("datetime64[ns]")).tz_localize("UTC")
    return MarketPanel(index=index, symbols=list(symbols), **arrays)


def benchmark_returns(series: Series, calendar: np.ndarray) -> np.ndarray:
    """Simple returns of the benchmark's close on the calendar (0 where undefined)."""
    ts, cols = series
    ok = ~np.isnan(cols["close"])
    close = pd.Series(cols["close"][ok], index=ts[ok]).reindex(calendar)
    r = close.pct_change(fill_method=None).to_numpy(dtype=np.float64, copy=True)
    r[~np.isfinite(r)] = 0.0
    return r


def data_info(data: DataSelection, calendar: Calendar, without: Sequence[str]) -> dict[str, object]:
    """What a result's ``info.data`` says of the bars a run used: the source (None: bars given in
    memory), frequency, adjustment, the first and last bar of the run's calendar, and the symbols
    that had no bar in the run's range (``without``)."""
    index = calendar.index
    return {"source": data.source, "frequency": data.frequency, "adjusted": data.adjusted,
            "first_bar": index[0].isoformat() if len(index) else None,
            "last_bar": index[-1].isoformat() if len(index) else None,
            "symbols_without_data": list(without)}


class StoreLoader:
    """Reads symbols from the store root a plan names (threads: pyarrow releases the GIL)."""

    def __init__(self, data: DataSelection, threads: int | None = None) -> None:
        if data.source is None or data.root is None:
            raise DataError("this run's bars were given in memory; a store loader cannot read them", None)
        self.data = data
        self.files = {s: f or None for s, f in data.files}
        self.threads = threads or min(8, 2 * (os.cpu_count() or 1))

    def series(self, symbols: Sequence[str]) -> list[Series]:
        d = self.data

        def read(sym: str) -> Series:
            return read_symbol_arrays(d.root or "", d.source or "", d.frequency, sym, d.lo_ns, d.hi_ns, d.adjusted,
                                      self.files.get(sym))

        if len(symbols) <= 1:
            return [read(s) for s in symbols]
        with ThreadPoolExecutor(max_workers=min(self.threads, len(symbols))) as pool:
            return list(pool.map(read, symbols))


class PanelLoader:
    """Serves symbols of an in-memory panel, cut to [lo, hi]."""

    def __init__(self, panel: MarketPanel, lo_ns: int | None, hi_ns: int | None) -> None:
        self.panel = panel
        ns = panel.index.as_unit("ns").asi8 if hasattr(panel.index, "as_unit") else panel.index.asi8
        rows = np.ones(len(ns), dtype=bool)
        if lo_ns is not None:
            rows &= ns >= lo_ns
        if hi_ns is not None:
            rows &= ns <= hi_ns
        self._rows = rows
        self._ns = ns[rows]
        self._pos = {s: i for i, s in enumerate(panel.symbols)}

    def symbols_without_data(self, symbols: Sequence[str]) -> list[str]:
        """Those of ``symbols`` with no close within [lo, hi]."""
        closes = self.panel.close[self._rows]
        return [s for s in symbols if s in self._pos and not np.isfinite(closes[:, self._pos[s]]).any()]

    def series(self, symbols: Sequence[str]) -> list[Series]:
        missing = [s for s in symbols if s not in self._pos]
        if missing:
            raise DataError(f"no data for symbol(s): {', '.join(missing)}", ",".join(missing))
        out = []
        for s in symbols:
            j = self._pos[s]
            out.append((self._ns, {f: getattr(self.panel, f)[self._rows, j] for f in FIELDS}))
        return out
