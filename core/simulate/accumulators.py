"""Closed-trade statistics both kernels accumulate, as one named state and small shared functions.

`TradeStats` is an immutable named tuple of float64 scalars (counts, gross profit/loss, the
Welford mean and M2 of trade pnl, best/worst trade return, bars held); a kernel keeps one in
a local variable (``trade_stats_new``) and replaces it with ``trade_stats_add`` at every
closed trade. The functions are numba ``njit(inline="always")`` like those of `orders.py`, so
the CPU build and the numba.cuda build of the single-asset kernel (`kernel.py`) and the
portfolio kernel (`portfolio.py`) share this one definition, and the state lives in registers.
docs/metrics.md defines the metrics derived from these sums.

The ``acc`` layouts of both kernels hold this block as ``TS_N_FIELDS`` consecutive slots in
the field order below, starting at ``layout.A_N_CLOSED`` and ``portfolio_layout.PA_N_CLOSED``;
a kernel stores it with ``for k in range(TS_N_FIELDS): acc[c, base + k] = stats[k]``. That
loop stays in the kernels: shared functions take scalars only, because under the CUDA
simulator the kernel runs as Python and cannot hand its device arrays to an njit function.
Counts are float64 (exact below 2**53) so the tuple is homogeneous and indexable; the
divisions and sums are those of the former int counters, bit for bit.
"""

from __future__ import annotations

import math
from collections import namedtuple

from numba import njit

TradeStats = namedtuple(
    "TradeStats",
    [
        "n_closed",      # closed trades
        "n_wins",        # closed trades with pnl > 0
        "n_losses",      # closed trades with pnl < 0
        "gross_profit",  # sum of pnl over winners
        "gross_loss",    # sum of pnl over losers (<= 0)
        "pnl_mean",      # Welford running mean of closed-trade pnl
        "pnl_m2",        # Welford running sum of squared deviations of closed-trade pnl
        "best_ret",      # best closed-trade return (NaN when none)
        "worst_ret",     # worst closed-trade return (NaN when none)
        "hold_bars",     # sum of bars held over closed trades
    ],
)

# offsets of the fields inside an accumulator block (the TradeStats field order)
TS_N_CLOSED = 0
TS_N_WINS = 1
TS_N_LOSSES = 2
TS_GROSS_PROFIT = 3
TS_GROSS_LOSS = 4
TS_PNL_MEAN = 5
TS_PNL_M2 = 6
TS_BEST_RET = 7
TS_WORST_RET = 8
TS_HOLD_BARS = 9
TS_N_FIELDS = 10


@njit(inline="always", cache=False)
def trade_stats_new() -> TradeStats:
    """The statistics of no closed trade."""
    return TradeStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.nan, math.nan, 0.0)


@njit(inline="always", cache=False)
def trade_stats_add(st: TradeStats, pnl: float, tret: float, held: float) -> TradeStats:
    """``st`` after one more closed trade of profit ``pnl``, return ``tret`` and ``held`` bars."""
    n_closed = st.n_closed + 1.0
    n_wins = st.n_wins
    n_losses = st.n_losses
    gross_profit = st.gross_profit
    gross_loss = st.gross_loss
    if pnl > 0.0:
        n_wins += 1.0
        gross_profit += pnl
    elif pnl < 0.0:
        n_losses += 1.0
        gross_loss += pnl
    pnl_mean = st.pnl_mean
    delta = pnl - pnl_mean
    pnl_mean += delta / n_closed
    pnl_m2 = st.pnl_m2 + delta * (pnl - pnl_mean)
    best_ret = st.best_ret
    if not (tret <= best_ret):
        best_ret = tret
    worst_ret = st.worst_ret
    if not (tret >= worst_ret):
        worst_ret = tret
    hold_bars = st.hold_bars + held
    return TradeStats(
        n_closed, n_wins, n_losses, gross_profit, gross_loss, pnl_mean, pnl_m2, best_ret, worst_ret, hold_bars
    )
