"""synthetic: seeded, deterministic GBM daily bars for its own symbols — the embedded demo source.

It serves exactly the symbols ``SYN000`` … ``SYN999`` (`SYMBOLS`), on business days from
2000-01-03 to 2019-12-31 (`EPOCH` … `LAST`), and nothing else: any other symbol, or a range
wholly outside those dates, is refused at submit (`MarketDataService.check_spec`), and it never
generates bars for another name. A symbol's bars depend only on its name and the seed
(prefix-stable, see core/synthetic.py), so they are the same everywhere. Without ``symbols`` a
spec runs on the demo universe DEMO_SYMBOLS (``SYN000`` … ``SYN019``); without ``start``/``end``
on 2010-01-01 … 2019-12-31 (2,608 bars).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...core.errors import DataError
from ...core.synthetic import symbol_bars
from ...core.timeutil import to_utc
from ..hookspecs import hookimpl
from .base import DataSource, FetchRange

if TYPE_CHECKING:  # pragma: no cover
    from ...core.marketdata import MarketDataStore

EPOCH = pd.Timestamp("2000-01-03", tz="UTC")
DEFAULT_START = pd.Timestamp("2010-01-01", tz="UTC")
DEFAULT_END = pd.Timestamp("2019-12-31", tz="UTC")
LAST = DEFAULT_END  # the last bar it has
SYMBOLS = frozenset(f"SYN{i:03d}" for i in range(1000))
DEMO_SYMBOLS = [f"SYN{i:03d}" for i in range(20)]
SEED = 42


class SyntheticSource(DataSource):
    """Deterministic GBM bars (realistic OHLC and volume) of SYN000 … SYN999, 2000–2019, generated once
    and stored."""

    name = "synthetic"
    description = ("Seeded synthetic GBM daily bars (demo data) of SYN000…SYN999 on business days "
                   f"2000-01-03…2019-12-31; default universe {DEMO_SYMBOLS[0]}…{DEMO_SYMBOLS[-1]}, 2010–2019.")
    frequencies = ("1d",)

    def default_symbols(self, store: MarketDataStore, frequency: str) -> list[str]:
        return list(DEMO_SYMBOLS)

    def default_range(self, frequency: str = "1d") -> tuple[pd.Timestamp, pd.Timestamp]:
        """2010-01-01 … 2019-12-31 (the demo decade; the source serves daily bars only)."""
        return DEFAULT_START, DEFAULT_END

    def known_symbols(self, store: MarketDataStore, frequency: str) -> frozenset[str]:
        """SYN000 … SYN999."""
        return SYMBOLS

    def available_range(self, frequency: str = "1d") -> tuple[pd.Timestamp, pd.Timestamp]:
        """2000-01-03 … 2019-12-31."""
        return EPOCH, LAST

    def fetch(self, symbol: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
              frequency: str, adjusted: bool = True) -> pd.DataFrame:
        """The bars of one of `SYMBOLS` in [start, end] ∩ [2000-01-03, 2019-12-31]; DataError for any
        other symbol or frequency (it invents nothing)."""
        if symbol not in SYMBOLS:
            raise DataError(f"synthetic has no symbol {symbol!r}: it serves SYN000…SYN999 only", symbol)
        if frequency not in self.frequencies:
            raise DataError(f"synthetic serves 1d bars only, not {frequency!r}", frequency)
        index = pd.bdate_range(EPOCH.tz_localize(None), LAST.tz_localize(None), tz="UTC")
        b = symbol_bars(symbol, len(index), SEED)
        frame = pd.DataFrame({"timestamp": index, "open": b[0], "high": b[1], "low": b[2], "close": b[3],
                              "volume": b[4]})
        keep = np.ones(len(frame), dtype=bool)
        if start is not None:
            keep &= (frame["timestamp"] >= to_utc(start)).to_numpy()
        if end is not None:
            keep &= (frame["timestamp"] <= to_utc(end)).to_numpy()
        return frame[keep].reset_index(drop=True)

    def ensure(self, store: MarketDataStore, symbols: Sequence[str], rng: FetchRange,
               adjusted: bool = True) -> None:
        """Store the whole series (2000-01-03 … 2019-12-31) of each of ``symbols`` not stored yet;
        symbols it does not serve are left out (the caller reports them missing)."""
        wanted = [s for s in dict.fromkeys(symbols) if s in SYMBOLS]
        if rng.frequency not in self.frequencies or not wanted:
            return
        stored = store.entries(self.name, rng.frequency, wanted)
        todo = [s for s in wanted if s not in stored or (stored[s].first, stored[s].last) != (EPOCH, LAST)]
        for i in range(0, len(todo), 500):  # bounded memory; each batch's catalog rows in one transaction
            store.write_many(self.name, rng.frequency,
                             {s: self.fetch(s, None, None, rng.frequency) for s in todo[i:i + 500]})


@hookimpl
def register_data_sources():
    return [SyntheticSource()]
