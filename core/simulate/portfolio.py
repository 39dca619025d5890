"""The per-column portfolio simulation (docs/semantics.md, "Portfolio mode"), written once.

One column is one parameter combination's whole portfolio: S symbols sharing one cash
balance, rebalanced to target weights. `simulate_portfolio` is plain numba-compatible Python
(scalars, ``math``, array indexing, no allocation: per-symbol state lives in a scratch array
the driver preallocates), compiled by `run_portfolio_cpu` below with numba ``njit`` (a
``prange`` loop over columns) and by `portfolio_cuda.py` with ``numba.cuda.jit(device=True)``.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit, prange

from .layout import FILL_CLOSE
from .portfolio_layout import (
    N_PACC,
    N_SCRATCH,
    PA_COSTS,
    PA_FINAL_EQUITY,
    PA_N_ORDERS,
    PA_TURNOVER,
    PF_FEES,
    PF_FIXED_FEE,
    PF_INIT_CASH,
    PF_MIN_TRADE,
    PF_SLIPPAGE,
    PI_FILL,
    PI_FRACTIONAL,
    SC_DELTA,
    SC_LAST_PX,
    SC_POS,
    SC_TARGET,
)


def simulate_portfolio(c, open_, close, weights, rebalance, fopts, iopts, scratch, acc, equity_out):
    """Simulate portfolio column ``c`` over all bars; write ``acc[c]`` (and ``equity_out[:, c]``).

    ``open_``/``close`` are (T, S) prices (NaN: no bar); ``weights`` is (T, S, C) target
    weights (NaN: no change); ``rebalance`` is (T, C) booleans; ``scratch`` is (C, S,
    N_SCRATCH) and is overwritten; ``acc`` is (C, N_PACC); ``equity_out`` is (T, C), or a
    (1, 1) dummy when the equity curve is not wanted.
    """
    n_bars = close.shape[0]
    n_sym = close.shape[1]
    init_cash = fopts[PF_INIT_CASH]
    fees = fopts[PF_FEES]
    fixed_fee = fopts[PF_FIXED_FEE]
    slippage = fopts[PF_SLIPPAGE]
    min_trade = fopts[PF_MIN_TRADE]
    fill_close = iopts[PI_FILL] == FILL_CLOSE
    fractional = iopts[PI_FRACTIONAL] != 0
    write_equity = equity_out.shape[0] == n_bars

    for s in range(n_sym):
        scratch[c, s, SC_POS] = 0.0
        scratch[c, s, SC_LAST_PX] = math.nan
        scratch[c, s, SC_TARGET] = math.nan

    cash = init_cash
    pending = False
    n_orders = 0
    costs = 0.0
    turnover = 0.0
    equity = init_cash

    for t in range(n_bars):
        # phase 0: the open (a pending next_open rebalance fills here); phase 1: the close
        for phase in range(2):
            execute = False
            for s in range(n_sym):
                p = open_[t, s] if phase == 0 else close[t, s]
                if not math.isnan(p):
                    scratch[c, s, SC_LAST_PX] = p
            if phase == 0:
                execute = pending
                pending = False
            elif rebalance[t, c]:
                for s in range(n_sym):
                    w = weights[t, s, c]
                    if not math.isnan(w):
                        scratch[c, s, SC_TARGET] = w
                if fill_close:
                    execute = True
                else:
                    pending = True
            if not execute:
                continue

            value = cash
            for s in range(n_sym):
                q = scratch[c, s, SC_POS]
                if q != 0.0:
                    value += q * scratch[c, s, SC_LAST_PX]
            if not value > 0.0:
                continue
            # every order is sized before any fills, from this one value
            for s in range(n_sym):
                p = open_[t, s] if phase == 0 else close[t, s]
                w = scratch[c, s, SC_TARGET]
                delta = math.nan
                if not (math.isnan(p) or math.isnan(w)):
                    if w < 0.0:
                        w = 0.0
                    target = w * value / p
                    if not fractional:
                        target = math.floor(target)
                    delta = target - scratch[c, s, SC_POS]
                scratch[c, s, SC_DELTA] = delta
            # side 0: sells, side 1: buys; each in symbol order
            for side in range(2):
                for s in range(n_sym):
                    p = open_[t, s] if phase == 0 else close[t, s]
                    delta = scratch[c, s, SC_DELTA]
                    q = scratch[c, s, SC_POS]
                    if side == 0:
                        if not delta < 0.0:
                            continue
                        units = -delta
                        if units * p < min_trade:
                            continue
                        f = p * (1.0 - slippage)
                        cash += units * f * (1.0 - fees) - fixed_fee
                        scratch[c, s, SC_POS] = q - units
                    else:
                        if not delta > 0.0:
                            continue
                        units = delta
                        f = p * (1.0 + slippage)
                        if units * f * (1.0 + fees) + fixed_fee > cash:
                            units = (cash - fixed_fee) / (f * (1.0 + fees))
                            if not fractional:
                                units = math.floor(units)
                        if not units > 0.0 or units * p < min_trade:
                            continue
                        cash -= units * f * (1.0 + fees) + fixed_fee
                        scratch[c, s, SC_POS] = q + units
                    n_orders += 1
                    costs += units * f * fees + fixed_fee + units * p * slippage
                    turnover += units * p

        equity = cash
        for s in range(n_sym):
            q = scratch[c, s, SC_POS]
            if q != 0.0:
                equity += q * scratch[c, s, SC_LAST_PX]
        if write_equity:
            equity_out[t, c] = equity

    acc[c, PA_FINAL_EQUITY] = equity
    acc[c, PA_N_ORDERS] = n_orders
    acc[c, PA_COSTS] = costs
    acc[c, PA_TURNOVER] = turnover


_LAUNCH_LOCK = threading.Lock()
_column = njit(nogil=True, cache=False)(simulate_portfolio)


@njit(parallel=True, nogil=True, cache=False)
def _run_all(open_, close, weights, rebalance, fopts, iopts, scratch, acc, equity_out):  # pragma: no cover - compiled
    for c in prange(rebalance.shape[1]):
        _column(c, open_, close, weights, rebalance, fopts, iopts, scratch, acc, equity_out)


def run_portfolio_cpu(
    open_: np.ndarray,
    close: np.ndarray,
    weights: np.ndarray,
    rebalance: np.ndarray,
    fopts: np.ndarray,
    iopts: np.ndarray,
    want_equity: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run every portfolio column on the CPU; returns ``(acc (C, N_PACC), equity (T, C) or None)``.

    Shapes as in `simulate_portfolio`: prices (T, S), weights (T, S, C), rebalance (T, C).
    """
    open_ = np.ascontiguousarray(open_, dtype=np.float64)
    close = np.ascontiguousarray(close, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    rebalance = np.ascontiguousarray(rebalance, dtype=np.bool_)
    fopts = np.ascontiguousarray(fopts, dtype=np.float64)
    iopts = np.ascontiguousarray(iopts, dtype=np.int64)
    n_bars, n_sym = close.shape
    n_cols = rebalance.shape[1]
    if open_.shape != close.shape or weights.shape != (n_bars, n_sym, n_cols) or rebalance.shape[0] != n_bars:
        raise ValueError(
            f"shapes: open {open_.shape}, close {close.shape}, weights {weights.shape}, rebalance {rebalance.shape}"
        )
    scratch = np.empty((n_cols, n_sym, N_SCRATCH), dtype=np.float64)
    acc = np.empty((n_cols, N_PACC), dtype=np.float64)
    equity = np.empty((n_bars, n_cols) if want_equity else (1, 1), dtype=np.float64)
    with _LAUNCH_LOCK:  # see cpu.py: one parallel launch at a time per process
        _run_all(open_, close, weights, rebalance, fopts, iopts, scratch, acc, equity)
    return acc, (equity if want_equity else None)
