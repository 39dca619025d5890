"""The data-source plugin contract.

A data source has a ``name``, a ``description``, the ``frequencies`` it serves, and knows how
to fetch bars for one symbol over a date range. Fetched bars are *canonical frames*:

- column ``timestamp``: tz-aware UTC pandas timestamps, strictly increasing, unique;
- float64 columns ``open``, ``high``, ``low``, ``close``, ``volume``;
- optionally float64 ``adj_open``, ``adj_high``, ``adj_low``, ``adj_close``, ``adj_volume``,
  ``dividend``, ``split``.

`DataSource.ensure` puts what a backtest needs into the `MarketDataStore`, fetching only
what is missing (incremental by date). Register a source through the plugin hook
``register_data_sources`` (see plugins/hookspecs.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from ...core.marketdata import MarketDataStore

CANONICAL = ("open", "high", "low", "close", "volume")
BAR_SPACING = {"1min": pd.Timedelta(minutes=1), "5min": pd.Timedelta(minutes=5), "15min": pd.Timedelta(minutes=15),
               "30min": pd.Timedelta(minutes=30), "1h": pd.Timedelta(hours=1), "4h": pd.Timedelta(hours=4),
               "1d": pd.Timedelta(days=1), "1w": pd.Timedelta(days=7), "1mo": pd.Timedelta(days=28)}
ADJUSTED = ("adj_open", "adj_high", "adj_low", "adj_close", "adj_volume", "dividend", "split")


@dataclass(frozen=True)
class FetchRange:
    """What a backtest asks a source for: an inclusive date range at a frequency."""

    start: pd.Timestamp | None
    end: pd.Timestamp | None
    frequency: str = "1d"


def default_range_for(source: DataSource, frequency: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``source.default_range(frequency)``; a source written before ``default_range`` took the
    frequency (``def default_range(self)``) is asked without it."""
    try:
        takes_frequency = bool(inspect.signature(source.default_range).parameters)
    except (TypeError, ValueError):  # no signature to read (a builtin or C callable): assume the current one
        takes_frequency = True
    return source.default_range(frequency) if takes_frequency else source.default_range()


class DataSource:
    """Base class for data sources. Subclasses set the attributes and implement `fetch`."""

    name: str = ""
    description: str = ""
    frequencies: tuple[str, ...] = ("1d",)
    fetchable: bool = True  # False: bars only arrive by import (uploads); the catalog says what is stored
    importable: bool = False  # True: files may be imported under this name (the upload source only)

    def schema(self) -> dict[str, Any]:
        """JSON-able description (GET /data/sources, ``gpu-backtest data sources``)."""
        return {"name": self.name, "description": self.description, "frequencies": list(self.frequencies),
                "fetchable": self.fetchable}

    # -- what the source can tell without fetching (checked at submit: `MarketDataService.check_spec`)
    def unavailable(self) -> str | None:
        """Why this source cannot serve a backtest now (e.g. no API key), or None."""
        return None

    def known_symbols(self, store: MarketDataStore, frequency: str) -> Collection[str] | None:
        """Every symbol (this source's spelling) it can serve at ``frequency``, or None when it
        cannot tell without fetching (Tiingo: a fetch at run time tells, and fails the job naming
        the symbol). Only asked of a fetchable source: what a non-fetchable one serves is what the
        catalog holds."""
        return None

    def available_range(self, frequency: str = "1d") -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The first and last instant this source can have bars at ``frequency`` (None: it cannot
        tell). A spec whose range lies wholly outside is refused at submit."""
        return None, None

    def normalize_symbol(self, symbol: str) -> str:
        """The one spelling a symbol is stored under (Tiingo: upper case, dots as dashes)."""
        return symbol

    def default_symbols(self, store: MarketDataStore, frequency: str) -> list[str]:
        """The universe a spec without ``symbols`` runs on: every stored symbol of this source."""
        return [e.symbol for e in store.catalog(self.name, frequency)]

    def default_range(self, frequency: str = "1d") -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The date range a spec without ``start``/``end`` runs on at ``frequency`` (None: all stored bars)."""
        return None, None

    def fetch(self, symbol: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
              frequency: str, adjusted: bool = True) -> pd.DataFrame:
        """Canonical bars of ``symbol`` in [start, end] (None: the source's full history / today)."""
        raise NotImplementedError(f"data source {self.name!r} cannot fetch; import files instead")

    def fetch_many(self, symbols: Sequence[str], start: pd.Timestamp | None, end: pd.Timestamp | None,
                   frequency: str, adjusted: bool = True) -> dict[str, pd.DataFrame]:
        """Fetch several symbols (sources with a concurrent client override this)."""
        return {s: self.fetch(s, start, end, frequency, adjusted) for s in symbols}

    def ensure(self, store: MarketDataStore, symbols: Sequence[str], rng: FetchRange,
               adjusted: bool = True) -> None:
        """Fetch into ``store`` the bars of ``symbols`` in ``rng`` that it does not hold yet.

        Incremental: a symbol already stored is extended only past its last stored bar (and
        before its first, when the range starts earlier) — never past the last bar of a series
        marked as ended (a delisting: it has no later bars).
        """
        if not self.fetchable:
            return
        todo: dict[tuple[pd.Timestamp | None, pd.Timestamp | None], list[str]] = {}
        stored = store.entries(self.name, rng.frequency, symbols)
        for sym in symbols:
            entry = stored.get(sym)
            if entry is None:
                todo.setdefault((rng.start, rng.end), []).append(sym)
                continue
            step = BAR_SPACING[rng.frequency]
            if rng.start is not None and rng.start <= entry.first - step:
                todo.setdefault((rng.start, entry.first - step), []).append(sym)
            end = rng.end if rng.end is not None else pd.Timestamp.now(tz="UTC").normalize()
            if end >= entry.last + step and entry.ended is None:
                todo.setdefault((entry.last + step, rng.end), []).append(sym)
        for (start, end), syms in todo.items():
            frames = self.fetch_many(syms, start, end, rng.frequency, adjusted)
            for sym, frame in frames.items():
                if frame is not None and len(frame):
                    store.merge(self.name, sym, rng.frequency, frame)
