"""`PortfolioOptions`: the named options of the portfolio kernel and their packing into arrays.

The kernel reads its options from two small arrays (float and int, slots named in
`portfolio_layout.py`); `PortfolioOptions.arrays()` is the only place that fills them, so no
caller builds option arrays by position. docs/semantics.md ("Portfolio mode") defines each option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layout import FILL_CLOSE, FILL_NEXT_OPEN
from .portfolio_layout import (
    N_PFOPTS,
    N_PIOPTS,
    PF_FEES,
    PF_FIXED_FEE,
    PF_INIT_CASH,
    PF_MIN_TRADE,
    PF_SL_STOP,
    PF_SLIPPAGE,
    PF_TP_STOP,
    PI_FILL,
    PI_FRACTIONAL,
    PI_SHORTS,
)

FILLS = {"close": FILL_CLOSE, "next_open": FILL_NEXT_OPEN}


@dataclass(frozen=True)
class PortfolioOptions:
    """Options of one portfolio run (shared by all its columns)."""

    init_cash: float = 100_000.0
    fees: float = 0.0
    fixed_fee: float = 0.0
    slippage: float = 0.0
    min_trade: float = 0.0
    fill: str = "close"          # "close" | "next_open"
    fractional: bool = True
    shorts: bool = False
    sl_stop: float = 0.0         # fraction of the average entry price; 0 = off
    tp_stop: float = 0.0         # fraction of the average entry price; 0 = off

    def __post_init__(self) -> None:
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {sorted(FILLS)}, got {self.fill!r}")
        for name in ("init_cash", "fees", "fixed_fee", "slippage", "min_trade", "sl_stop", "tp_stop"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0.0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.slippage >= 1.0:
            raise ValueError(f"slippage must be < 1, got {self.slippage}")

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(fopts float64 (N_PFOPTS,), iopts int64 (N_PIOPTS,))`` for the kernel."""
        fopts = np.zeros(N_PFOPTS, dtype=np.float64)
        fopts[PF_INIT_CASH] = self.init_cash
        fopts[PF_FEES] = self.fees
        fopts[PF_FIXED_FEE] = self.fixed_fee
        fopts[PF_SLIPPAGE] = self.slippage
        fopts[PF_MIN_TRADE] = self.min_trade
        fopts[PF_SL_STOP] = self.sl_stop
        fopts[PF_TP_STOP] = self.tp_stop
        iopts = np.zeros(N_PIOPTS, dtype=np.int64)
        iopts[PI_FILL] = FILLS[self.fill]
        iopts[PI_FRACTIONAL] = int(bool(self.fractional))
        iopts[PI_SHORTS] = int(bool(self.shorts))
        return fopts, iopts
