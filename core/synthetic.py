"""Seeded, deterministic synthetic GBM bars (realistic OHLC and volume) for demos, tests and benchmarks.

Each symbol's bars depend only on ``(seed, symbol)`` and the calendar, so any symbol list
and date range give the same bars for the same symbol.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd


def symbol_bars(symbol: str, n_bars: int, seed: int = 42) -> np.ndarray:
    """(5, n_bars) open, high, low, close, volume of ``symbol``.

    Prefix-stable: bar ``i`` depends only on ``(seed, symbol, i)``, so a longer series
    extends a shorter one without changing it (a fixed number of per-symbol draws first, then
    one row of four normal draws per bar).
    """
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode())])
    mu = rng.uniform(-0.05, 0.15) / 252
    sigma = rng.uniform(0.15, 0.45) / np.sqrt(252)
    start = rng.uniform(20.0, 300.0)
    z = rng.standard_normal((n_bars, 5))
    close = start * np.exp(np.cumsum(z[:, 0] * sigma + (mu - 0.5 * sigma**2)))
    prev = np.concatenate([[start], close[:-1]])
    open_ = prev * np.exp(z[:, 1] * sigma * 0.3)
    high = np.maximum(open_, close) * np.exp(np.abs(z[:, 2]) * sigma * 0.5)
    low = np.minimum(open_, close) * np.exp(-np.abs(z[:, 3]) * sigma * 0.5)
    volume = np.floor(np.exp(13.0 + 0.8 * z[:, 4]))
    return np.stack([open_, high, low, close, volume])


def gbm_bars(symbols: Sequence[str], index: pd.DatetimeIndex, seed: int = 42) -> pd.DataFrame:
    """A long frame (timestamp, symbol, open, high, low, close, volume) over ``index``."""
    n = len(index)
    parts = []
    for s in symbols:
        b = symbol_bars(s, n, seed)
        parts.append(pd.DataFrame({"timestamp": index, "symbol": s, "open": b[0], "high": b[1],
                                   "low": b[2], "close": b[3], "volume": b[4]}))
    if not parts:
        return pd.DataFrame(columns=["timestamp", "symbol", "open", "high", "low", "close", "volume"])
    return pd.concat(parts, ignore_index=True)


def gbm_panel_frame(n_symbols: int, n_bars: int, seed: int = 42, start: str = "2010-01-04") -> pd.DataFrame:
    """``n_symbols`` symbols SYM0000… over ``n_bars`` business days from ``start``."""
    index = pd.bdate_range(start, periods=n_bars, tz="UTC")
    return gbm_bars([f"SYM{i:04d}" for i in range(n_symbols)], index, seed)
