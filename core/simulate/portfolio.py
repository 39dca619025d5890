"""The per-column portfolio simulation (docs/semantics.md, "Portfolio mode"), written once.

One column is one parameter combination's whole portfolio: S symbols sharing one cash
balance, rebalanced to target weights, with optional shorts, stops and delistings.
`simulate_portfolio` is plain numba-compatible Python (scalars, ``math``, array indexing, no
allocation: per-symbol state lives in a scratch array the driver preallocates), compiled by
`run_portfolio_cpu` below with numba ``njit`` (a ``prange`` loop over columns) and by
`portfolio_cuda.py` with ``numba.cuda.jit(device=True)``. The cost model of a fill comes
from the shared scalar functions of `orders.py` and the closed-trade statistics from
`accumulators.py`, which both builds compile and the single-asset kernel shares.
"""

from __future__ import annotations

import math
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

from ..jitcache import compile_lock, drop_stale_builds
from .accumulators import TS_N_FIELDS, trade_stats_add, trade_stats_new
from .layout import FILL_CLOSE
from .orders import affordable_units, buy_cash, buy_fill_price, fill_costs, sell_cash, sell_fill_price
from .portfolio_layout import (
    N_OFIELDS,
    N_PACC,
    N_SCRATCH,
    O_BAR,
    O_COSTS,
    O_PRICE,
    O_REASON,
    O_SYMBOL,
    O_UNITS,
    OR_DELISTED,
    OR_REBALANCE,
    OR_STOP_LOSS,
    OR_TAKE_PROFIT,
    PA_COSTS,
    PA_EXPO_BARS_POS,
    PA_EXPOSURE_BARS,
    PA_FINAL_EQUITY,
    PA_GROSS_SUM,
    PA_HOLDINGS_SUM,
    PA_N_CLOSED,
    PA_N_OPEN,
    PA_N_ORDERS,
    PA_NET_SUM,
    PA_OPEN_PNL,
    PA_TURNOVER,
    PA_TURNOVER_REL,
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
    SC_AVG_PX,
    SC_CALL,
    SC_CALL_KEY,
    SC_DELTA,
    SC_ENTRY_BAR,
    SC_ENTRY_COST,
    SC_FLOW,
    SC_LAST_PX,
    SC_POS,
    SC_REASON,
    SC_TARGET,
)
from .portfolio_options import PortfolioOptions

# the steps of one bar (docs/semantics.md, "Order of events within bar t")
_STEP_OPEN = 0      # opens seen; a pending next_open rebalance fills
_STEP_STOPS = 1     # closes seen; stop exits
_STEP_REBAL = 2     # targets of a rebalance bar; a fill=close rebalance fills
_STEP_DELIST = 3    # delisting exits


@njit(inline="always", cache=False)
def _before(key_a, sym_a, key_b, sym_b):  # pragma: no cover - compiled
    """Whether call ``(key_a, sym_a)`` sorts before ``(key_b, sym_b)``: lower key, ties by lower symbol."""
    return key_a < key_b or (key_a == key_b and sym_a < sym_b)


def simulate_portfolio(
    c, open_, close, weights, rebalance, ended, fopts, iopts, scratch, acc, equity_out, orders_out, n_orders_out
):
    """Simulate portfolio column ``c`` over all bars; write ``acc[c]``, ``equity_out[:, c]`` (and records).

    ``open_``/``close`` are (T, S) prices (NaN: no bar); ``rebalance`` (T,) int64 is the row
    of ``weights`` (R, S, C) a bar applies (-1: no rebalance), NaN weights keep the earlier
    target; ``ended`` (S,) int64 is each symbol's delisting bar (-1: none); ``scratch`` is
    (C, S, N_SCRATCH) and is overwritten; ``acc`` is (C, N_PACC); ``equity_out`` is (T, C).
    ``orders_out`` is (C, M, N_OFIELDS) and ``n_orders_out`` (C,) in record mode; a
    ``orders_out`` whose last axis is not N_OFIELDS (a (1, 1, 1) dummy) turns records off.
    """
    n_bars = close.shape[0]
    n_sym = close.shape[1]
    init_cash = fopts[PF_INIT_CASH]
    fees = fopts[PF_FEES]
    fixed_fee = fopts[PF_FIXED_FEE]
    slippage = fopts[PF_SLIPPAGE]
    min_trade = fopts[PF_MIN_TRADE]
    sl_stop = fopts[PF_SL_STOP]
    tp_stop = fopts[PF_TP_STOP]
    fill_close = iopts[PI_FILL] == FILL_CLOSE
    fractional = iopts[PI_FRACTIONAL] != 0
    shorts = iopts[PI_SHORTS] != 0
    record = orders_out.shape[2] == N_OFIELDS
    max_records = orders_out.shape[1]
    use_stops = sl_stop > 0.0 or tp_stop > 0.0

    for s in range(n_sym):
        scratch[c, s, SC_POS] = 0.0
        scratch[c, s, SC_LAST_PX] = math.nan
        scratch[c, s, SC_TARGET] = math.nan
        scratch[c, s, SC_DELTA] = math.nan
        scratch[c, s, SC_AVG_PX] = math.nan
        scratch[c, s, SC_ENTRY_BAR] = -1.0
        scratch[c, s, SC_FLOW] = 0.0
        scratch[c, s, SC_ENTRY_COST] = 0.0
        scratch[c, s, SC_REASON] = OR_REBALANCE

    cash = init_cash
    pending = False
    n_orders = 0
    costs = 0.0
    turnover = 0.0
    turnover_rel = 0.0
    equity = init_cash
    prev_eq = init_cash
    stats = trade_stats_new()
    exposure_bars = 0
    holdings_sum = 0
    gross_sum = 0.0
    net_sum = 0.0
    expo_bars_pos = 0

    for t in range(n_bars):
        for step in range(4):
            rebal = False   # this step fills a rebalance (sized from `value`, min_trade, buy cut)
            forced = False  # this step fills forced exits (stops or delistings)
            if step == _STEP_OPEN:
                for s in range(n_sym):
                    p = open_[t, s]
                    if not math.isnan(p):
                        scratch[c, s, SC_LAST_PX] = p
                if pending:
                    pending = False
                    rebal = True
            elif step == _STEP_STOPS:
                for s in range(n_sym):
                    p = close[t, s]
                    if not math.isnan(p):
                        scratch[c, s, SC_LAST_PX] = p
                if use_stops:
                    for s in range(n_sym):
                        p = close[t, s]
                        q = scratch[c, s, SC_POS]
                        avg = scratch[c, s, SC_AVG_PX]
                        reason = -1
                        if q != 0.0 and not math.isnan(p):
                            if q > 0.0:
                                if sl_stop > 0.0 and p <= avg * (1.0 - sl_stop):
                                    reason = OR_STOP_LOSS
                                elif tp_stop > 0.0 and p >= avg * (1.0 + tp_stop):
                                    reason = OR_TAKE_PROFIT
                            else:
                                if sl_stop > 0.0 and p >= avg * (1.0 + sl_stop):
                                    reason = OR_STOP_LOSS
                                elif tp_stop > 0.0 and p <= avg * (1.0 - tp_stop):
                                    reason = OR_TAKE_PROFIT
                        if reason >= 0:
                            scratch[c, s, SC_DELTA] = -q
                            scratch[c, s, SC_REASON] = reason
                            scratch[c, s, SC_TARGET] = 0.0
                            forced = True
                        else:
                            scratch[c, s, SC_DELTA] = math.nan
            elif step == _STEP_REBAL:
                r = rebalance[t]
                if r >= 0:
                    for s in range(n_sym):
                        w = weights[r, s, c]
                        if not math.isnan(w) and not (ended[s] >= 0 and t > ended[s]):
                            scratch[c, s, SC_TARGET] = w
                    if fill_close:
                        rebal = True
                    else:
                        pending = True
            else:
                for s in range(n_sym):
                    scratch[c, s, SC_DELTA] = math.nan
                    if ended[s] == t:
                        scratch[c, s, SC_TARGET] = 0.0
                        q = scratch[c, s, SC_POS]
                        if q != 0.0:
                            scratch[c, s, SC_DELTA] = -q
                            scratch[c, s, SC_REASON] = OR_DELISTED
                            forced = True

            if rebal:
                value = cash
                for s in range(n_sym):
                    q = scratch[c, s, SC_POS]
                    if q != 0.0:
                        value += q * scratch[c, s, SC_LAST_PX]
                if not value > 0.0:
                    continue
                # every order is sized before any fills, from this one value
                n_calls = 0
                for s in range(n_sym):
                    p = open_[t, s] if step == _STEP_OPEN else close[t, s]
                    w = scratch[c, s, SC_TARGET]
                    delta = math.nan
                    dead = ended[s] >= 0 and t > ended[s]
                    if not (math.isnan(p) or math.isnan(w) or dead):
                        if w < 0.0 and not shorts:
                            w = 0.0
                        target = w * value / p
                        if not fractional:
                            if target >= 0.0:
                                target = math.floor(target)
                            else:
                                target = -math.floor(-target)
                        q = scratch[c, s, SC_POS]
                        delta = target - q
                        if delta != 0.0:  # a call, keyed by vectorbt's approximate order value
                            scratch[c, n_calls, SC_CALL] = s
                            scratch[c, n_calls, SC_CALL_KEY] = w * value - q * p
                            n_calls += 1
                    scratch[c, s, SC_DELTA] = delta
                    scratch[c, s, SC_REASON] = OR_REBALANCE
                # call order: a heapsort of the call slots by (key, symbol), ascending (O(n log n),
                # no allocation, no recursion). The (key, symbol) order is total, so this is the order
                # a stable sort by key of the calls in symbol order gives: vectorbt's insert_argsort_nb
                # of call_seq="auto" (an insertion sort, O(n²)).
                half = n_calls // 2
                for it in range(half + n_calls - 1):
                    if it < half:  # build the max-heap, from the last parent up
                        k = half - 1 - it
                        size = n_calls
                    else:  # swap the largest to the end of the heap, then sift the new root down
                        size = n_calls - 1 - (it - half)
                        key = scratch[c, 0, SC_CALL_KEY]
                        sym = scratch[c, 0, SC_CALL]
                        scratch[c, 0, SC_CALL_KEY] = scratch[c, size, SC_CALL_KEY]
                        scratch[c, 0, SC_CALL] = scratch[c, size, SC_CALL]
                        scratch[c, size, SC_CALL_KEY] = key
                        scratch[c, size, SC_CALL] = sym
                        k = 0
                    key = scratch[c, k, SC_CALL_KEY]
                    sym = scratch[c, k, SC_CALL]
                    while True:
                        child = 2 * k + 1
                        if child >= size:
                            break
                        ck = scratch[c, child, SC_CALL_KEY]
                        cs = scratch[c, child, SC_CALL]
                        if child + 1 < size:  # the larger child
                            rk = scratch[c, child + 1, SC_CALL_KEY]
                            rs = scratch[c, child + 1, SC_CALL]
                            if _before(ck, cs, rk, rs):
                                child += 1
                                ck = rk
                                cs = rs
                        if not _before(key, sym, ck, cs):
                            break
                        scratch[c, k, SC_CALL_KEY] = ck
                        scratch[c, k, SC_CALL] = cs
                        k = child
                    scratch[c, k, SC_CALL_KEY] = key
                    scratch[c, k, SC_CALL] = sym
            elif forced:
                value = prev_eq
                n_calls = 2 * n_sym
            else:
                continue

            # A rebalance fills its orders in call order (ascending key: sells, most negative
            # first, then buys from the smallest); forced exits fill sells (side 0), then buys
            # (side 1), each in symbol order. The price is last_px: the open or close of this
            # step (rebalance, stop) or the last price (delisting).
            for k in range(n_calls):
                if rebal:
                    s = np.int64(scratch[c, k, SC_CALL])  # not int(): numba.cuda's needs a device to compile
                    side = 0 if scratch[c, s, SC_DELTA] < 0.0 else 1
                else:
                    side = k // n_sym
                    s = k - side * n_sym
                delta = scratch[c, s, SC_DELTA]
                p = scratch[c, s, SC_LAST_PX]
                q = scratch[c, s, SC_POS]
                if side == 0:
                    if not delta < 0.0:
                        continue
                    units = -delta
                    if rebal and units * p < min_trade:
                        continue
                    f = sell_fill_price(p, slippage)
                    flow = sell_cash(units, f, fees, fixed_fee)
                    qn = q - units
                else:
                    if not delta > 0.0:
                        continue
                    units = delta
                    f = buy_fill_price(p, slippage)
                    if rebal and buy_cash(units, f, fees, fixed_fee) > cash:
                        units = affordable_units(cash, f, fees, fixed_fee)
                        if not fractional:
                            units = math.floor(units)
                    if rebal and (not units > 0.0 or units * p < min_trade):
                        continue
                    flow = -buy_cash(units, f, fees, fixed_fee)
                    qn = q + units
                cash += flow
                scratch[c, s, SC_POS] = qn
                # --- position trades: open, add, reduce, close or flip
                if q == 0.0:
                    scratch[c, s, SC_ENTRY_BAR] = t
                    scratch[c, s, SC_FLOW] = flow
                    scratch[c, s, SC_ENTRY_COST] = buy_cash(units, f, fees, fixed_fee)
                    scratch[c, s, SC_AVG_PX] = p
                elif (q > 0.0) == (qn > q):
                    scratch[c, s, SC_FLOW] += flow
                    scratch[c, s, SC_ENTRY_COST] += buy_cash(units, f, fees, fixed_fee)
                    scratch[c, s, SC_AVG_PX] = (abs(q) * scratch[c, s, SC_AVG_PX] + units * p) / abs(qn)
                else:
                    u_close = units
                    flipped = qn != 0.0 and (qn > 0.0) != (q > 0.0)
                    if flipped:
                        u_close = abs(q)
                    close_flow = flow * (u_close / units)
                    scratch[c, s, SC_FLOW] += close_flow
                    if qn == 0.0 or flipped:
                        pnl = scratch[c, s, SC_FLOW]
                        tret = pnl / scratch[c, s, SC_ENTRY_COST]
                        stats = trade_stats_add(stats, pnl, tret, t - scratch[c, s, SC_ENTRY_BAR])
                        scratch[c, s, SC_FLOW] = 0.0
                        scratch[c, s, SC_ENTRY_COST] = 0.0
                        scratch[c, s, SC_AVG_PX] = math.nan
                        scratch[c, s, SC_ENTRY_BAR] = -1.0
                    if flipped:
                        u_open = units - u_close
                        scratch[c, s, SC_ENTRY_BAR] = t
                        scratch[c, s, SC_FLOW] = flow * (u_open / units)
                        scratch[c, s, SC_ENTRY_COST] = u_open * f * (1.0 + fees) + fixed_fee * (u_open / units)
                        scratch[c, s, SC_AVG_PX] = p
                # --- order statistics and record
                order_costs = fill_costs(units, p, f, fees, fixed_fee, slippage)
                costs += order_costs
                turnover += units * p
                if value > 0.0:
                    turnover_rel += units * p / value
                if record and n_orders < max_records:
                    orders_out[c, n_orders, O_BAR] = t
                    orders_out[c, n_orders, O_SYMBOL] = s
                    orders_out[c, n_orders, O_UNITS] = units if side == 1 else -units
                    orders_out[c, n_orders, O_PRICE] = f
                    orders_out[c, n_orders, O_COSTS] = order_costs
                    orders_out[c, n_orders, O_REASON] = scratch[c, s, SC_REASON]
                n_orders += 1

        # mark
        equity = cash
        gross = 0.0
        net = 0.0
        held = 0
        for s in range(n_sym):
            q = scratch[c, s, SC_POS]
            if q != 0.0:
                v = q * scratch[c, s, SC_LAST_PX]
                equity += v
                gross += abs(v)
                net += v
                held += 1
        equity_out[t, c] = equity
        if held > 0:
            exposure_bars += 1
        holdings_sum += held
        if equity > 0.0:
            gross_sum += gross / equity
            net_sum += net / equity
            expo_bars_pos += 1
        prev_eq = equity

    n_open = 0
    open_pnl = 0.0
    for s in range(n_sym):
        q = scratch[c, s, SC_POS]
        if q != 0.0:
            n_open += 1
            open_pnl += scratch[c, s, SC_FLOW] + q * scratch[c, s, SC_LAST_PX]

    acc[c, PA_FINAL_EQUITY] = equity
    acc[c, PA_N_ORDERS] = n_orders
    acc[c, PA_COSTS] = costs
    acc[c, PA_TURNOVER] = turnover
    for k in range(TS_N_FIELDS):
        acc[c, PA_N_CLOSED + k] = stats[k]
    acc[c, PA_N_OPEN] = n_open
    acc[c, PA_OPEN_PNL] = open_pnl
    acc[c, PA_EXPOSURE_BARS] = exposure_bars
    acc[c, PA_HOLDINGS_SUM] = holdings_sum
    acc[c, PA_GROSS_SUM] = gross_sum
    acc[c, PA_NET_SUM] = net_sum
    acc[c, PA_EXPO_BARS_POS] = expo_bars_pos
    acc[c, PA_TURNOVER_REL] = turnover_rel
    if record:
        n_orders_out[c] = n_orders


@dataclass
class PortfolioRun:
    """What a portfolio run returns (numpy arrays from the CPU, device arrays from CUDA).

    ``acc`` (C, N_PACC); ``equity`` (T, C); ``orders`` (C, M, N_OFIELDS) and ``n_orders`` (C,)
    int64 in record mode (``max_records > 0``), else None. Rows of ``orders`` past
    ``min(n_orders[c], M)`` are unspecified.
    """

    acc: Any
    equity: Any
    orders: Any = None
    n_orders: Any = None


def check_shapes(open_shape: tuple, close_shape: tuple, weights_shape: tuple, rebalance_shape: tuple,
                 ended_shape: tuple) -> tuple[int, int, int, int]:
    """Validate the input shapes; returns ``(T, S, R, C)`` or raises ValueError."""
    if len(close_shape) != 2 or len(weights_shape) != 3:
        raise ValueError(f"shapes: close {close_shape}, weights {weights_shape}")
    n_bars, n_sym = close_shape
    n_rows, n_cols = weights_shape[0], weights_shape[2]
    if (tuple(open_shape) != tuple(close_shape) or weights_shape[1] != n_sym
            or tuple(rebalance_shape) != (n_bars,) or tuple(ended_shape) != (n_sym,)):
        raise ValueError(
            f"shapes: open {open_shape}, close {close_shape}, weights {weights_shape}, "
            f"rebalance {rebalance_shape}, ended {ended_shape}"
        )
    return n_bars, n_sym, n_rows, n_cols


_LAUNCH_LOCK = threading.Lock()
_column = njit(nogil=True, cache=True)(simulate_portfolio)


@njit(parallel=True, nogil=True, cache=True)
def _run_all(open_, close, weights, rebalance, ended, fopts, iopts, scratch, acc, equity_out, orders_out,
             n_orders_out):  # pragma: no cover - compiled
    for c in prange(weights.shape[2]):
        # np.int64: the same signature at typing and in the parallel loop (one compile, not two)
        _column(np.int64(c), open_, close, weights, rebalance, ended, fopts, iopts, scratch, acc, equity_out,
                orders_out, n_orders_out)


# the cached builds include layout.py, portfolio_layout.py and the inlined orders.py/accumulators.py,
# which numba's cache does not watch: dropped when any of them changed (core/jitcache.py)
drop_stale_builds((_column, _run_all), [Path(__file__).resolve().parent / n for n in (
    "portfolio.py", "portfolio_layout.py", "layout.py", "orders.py", "accumulators.py")], "portfolio")


def run_portfolio_cpu(
    open_: np.ndarray,
    close: np.ndarray,
    weights: np.ndarray,
    rebalance: np.ndarray,
    ended: np.ndarray,
    opts: PortfolioOptions,
    max_records: int = 0,
) -> PortfolioRun:
    """Run every portfolio column on the CPU.

    Shapes as in `simulate_portfolio`: prices (T, S), weights (R, S, C), rebalance (T,) int64
    rows (-1: none), ended (S,) int64 bars (-1: none). ``max_records > 0`` also returns the
    order records (see `PortfolioRun`).
    """
    open_ = np.ascontiguousarray(open_, dtype=np.float64)
    close = np.ascontiguousarray(close, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    rebalance = np.ascontiguousarray(rebalance, dtype=np.int64)
    ended = np.ascontiguousarray(ended, dtype=np.int64)
    n_bars, n_sym, n_rows, n_cols = check_shapes(open_.shape, close.shape, weights.shape, rebalance.shape,
                                                 ended.shape)
    if rebalance.size and int(rebalance.max()) >= n_rows:
        raise ValueError(f"rebalance refers to weights row {int(rebalance.max())}, but weights has {n_rows} rows")
    fopts, iopts = opts.arrays()
    scratch = np.empty((n_cols, n_sym, N_SCRATCH), dtype=np.float64)
    acc = np.empty((n_cols, N_PACC), dtype=np.float64)
    equity = np.empty((n_bars, n_cols), dtype=np.float64)
    if max_records > 0:
        orders = np.zeros((n_cols, max_records, N_OFIELDS), dtype=np.float64)
        n_orders = np.zeros(n_cols, dtype=np.int64)
    else:
        orders = np.zeros((1, 1, 1), dtype=np.float64)
        n_orders = np.zeros(1, dtype=np.int64)
    # see cpu.py: one parallel launch at a time per process; the first build compiled once per disk cache
    first = not getattr(_run_all, "signatures", True)
    with _LAUNCH_LOCK, (compile_lock(_run_all, "portfolio") if first else nullcontext()):
        _run_all(open_, close, weights, rebalance, ended, fopts, iopts, scratch, acc, equity, orders, n_orders)
    if max_records > 0:
        return PortfolioRun(acc, equity, orders, n_orders)
    return PortfolioRun(acc, equity)
