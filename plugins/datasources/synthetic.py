"""synthetic: seeded, deterministic GBM daily bars for any symbol — the embedded demo source.

Bars exist on business days from 2000-01-03; a symbol's bars depend only on its name and
the seed (prefix-stable, see core/synthetic.py), so any symbol list and date range give the
same numbers everywhere. Without ``symbols`` a spec runs on the demo universe DEMO_SYMBOLS;
without ``start``/``end`` on 2010-01-01 … 2019-12-31 (2,608 bars).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from ...core.synthetic import symbol_bars
from ...core.timeutil import to_utc
from ..hookspecs import hookimpl
from .base import DataSource, FetchRange

if TYPE_CHECKING:  # pragma: no cover
    from ...core.marketdata import MarketDataStore

EPOCH = pd.Timestamp("2000-01-03", tz="UTC")
DEFAULT_START = pd.Timestamp("2010-01-01", tz="UTC")
DEFAULT_END = pd.Timestamp("2019-12-31", tz="UTC")
DEMO_SYMBOLS = [f"SYN{i:03d}" for i in range(20)]
SEED = 42


class SyntheticSource(DataSource):
    """Deterministic GBM bars (realistic OHLC and volume) generated on demand and cached."""

    name = "synthetic"
    description = ("Seeded synthetic GBM daily bars for any symbol and date range (demo data; "
                   f"default universe {DEMO_SYMBOLS[0]}…{DEMO_SYMBOLS[-1]}, 2010–2019).")
    frequencies = ("1d",)

    def default_symbols(self, store: MarketDataStore, frequency: str) -> list[str]:
        return list(DEMO_SYMBOLS)

    def default_range(self, frequency: str = "1d") -> tuple[pd.Timestamp, pd.Timestamp]:
        """2010-01-01 … 2019-12-31 (the demo decade; the source serves daily bars only)."""
        return DEFAULT_START, DEFAULT_END

    def fetch(self, symbol: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
              frequency: str, adjusted: bool = True) -> pd.DataFrame:
        end = DEFAULT_END if end is None else max(to_utc(end), EPOCH)
        index = pd.bdate_range(EPOCH.tz_localize(None), end.normalize().tz_localize(None), tz="UTC")
        b = symbol_bars(symbol, len(index), SEED)
        frame = pd.DataFrame({"timestamp": index, "open": b[0], "high": b[1], "low": b[2], "close": b[3],
                              "volume": b[4]})
        if start is not None:
            frame = frame[frame["timestamp"] >= to_utc(start)]
        return frame.reset_index(drop=True)

    def ensure(self, store: MarketDataStore, symbols: Sequence[str], rng: FetchRange,
               adjusted: bool = True) -> None:
        """Store each symbol's bars from the epoch to max(2019-12-31, the range's end), once."""
        end = max(DEFAULT_END, rng.end) if rng.end is not None else DEFAULT_END
        stored = store.entries(self.name, rng.frequency, symbols)
        due = min(end, pd.Timestamp.now(tz="UTC")) - pd.Timedelta(days=4)
        todo = [s for s in dict.fromkeys(symbols) if s not in stored or stored[s].last < due]
        for i in range(0, len(todo), 500):  # bounded memory; each batch's catalog rows in one transaction
            store.write_many(self.name, rng.frequency,
                             {s: self.fetch(s, None, end, rng.frequency) for s in todo[i:i + 500]})


@hookimpl
def register_data_sources():
    return [SyntheticSource()]
