"""`SimOptions`: the named options of the single-asset kernel and their packing into arrays.

The kernel (`kernel.py`) reads its options from two small arrays (float and int, slots named
in `layout.py`); `SimOptions.arrays()` is the only place that fills them, so no caller builds
option arrays by position. docs/semantics.md defines each option; ``want_returns`` and
``record`` are output switches (per-bar returns; equity curves and trade records).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import (
    DIR_BOTH,
    DIR_LONG,
    DIR_SHORT,
    F_FEES,
    F_FIXED_FEE,
    F_INIT_CASH,
    F_RISK_FREE,
    F_SIZE,
    F_SL_STOP,
    F_SLIPPAGE,
    F_TP_STOP,
    F_TSL_STOP,
    FILL_CLOSE,
    FILL_NEXT_OPEN,
    I_DIRECTION,
    I_FILL,
    I_FRACTIONAL,
    I_FUSED,
    I_N_BLOCKS,
    I_N_TAIL,
    I_RECORD,
    I_SIZE_TYPE,
    I_WANT_RETURNS,
    N_FOPTS,
    N_IOPTS,
    SIZE_PERCENT,
    SIZE_UNITS,
    SIZE_VALUE,
)

FILLS = {"close": FILL_CLOSE, "next_open": FILL_NEXT_OPEN}
DIRECTIONS = {"long": DIR_LONG, "short": DIR_SHORT, "both": DIR_BOTH}
SIZE_TYPES = {"percent": SIZE_PERCENT, "value": SIZE_VALUE, "units": SIZE_UNITS}


@dataclass(frozen=True)
class SimOptions:
    """Options of one single-asset kernel launch (shared by all its columns)."""

    init_cash: float = 100_000.0
    fees: float = 0.0
    fixed_fee: float = 0.0
    slippage: float = 0.0
    size: float = 1.0
    size_type: str = "percent"   # "percent" | "value" | "units"
    fill: str = "close"          # "close" | "next_open"
    direction: str = "long"      # "long" | "short" | "both"
    fractional: bool = True
    sl_stop: float = 0.0         # fraction of the entry price; 0 = off
    tp_stop: float = 0.0         # fraction of the entry price; 0 = off
    tsl_stop: float = 0.0        # fraction of the running extreme; 0 = off
    risk_free: float = 0.0       # per-period rate for the downside / omega sums
    want_returns: bool = False   # write per-bar returns into returns_out
    record: bool = False         # write equity_out and trade records
    n_blocks: int = 0            # B > 0: per-block sums into blocks_out (C, B, N_BLOCK_ACC); 0 = off
    n_tail: int = 0              # m > 0: the m smallest / largest returns into tails_out (C, 2, m); 0 = off
    fused: bool = False          # signals from the fused line crossings instead of the bool arrays

    def __post_init__(self) -> None:
        for name, choices in (("fill", FILLS), ("direction", DIRECTIONS), ("size_type", SIZE_TYPES)):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(fopts float64 (N_FOPTS,), iopts int64 (N_IOPTS,))`` for the kernel."""
        fopts = np.zeros(N_FOPTS, dtype=np.float64)
        fopts[F_INIT_CASH] = self.init_cash
        fopts[F_FEES] = self.fees
        fopts[F_FIXED_FEE] = self.fixed_fee
        fopts[F_SLIPPAGE] = self.slippage
        fopts[F_SIZE] = self.size
        fopts[F_SL_STOP] = self.sl_stop
        fopts[F_TP_STOP] = self.tp_stop
        fopts[F_TSL_STOP] = self.tsl_stop
        fopts[F_RISK_FREE] = self.risk_free
        iopts = np.zeros(N_IOPTS, dtype=np.int64)
        iopts[I_FILL] = FILLS[self.fill]
        iopts[I_DIRECTION] = DIRECTIONS[self.direction]
        iopts[I_SIZE_TYPE] = SIZE_TYPES[self.size_type]
        iopts[I_FRACTIONAL] = int(bool(self.fractional))
        iopts[I_WANT_RETURNS] = int(bool(self.want_returns))
        iopts[I_RECORD] = int(bool(self.record))
        iopts[I_N_BLOCKS] = int(self.n_blocks)
        iopts[I_N_TAIL] = int(self.n_tail)
        iopts[I_FUSED] = int(bool(self.fused))
        return fopts, iopts
