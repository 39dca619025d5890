"""Position trades rebuilt from the portfolio kernel's order records (docs/semantics.md,
"Portfolio mode" → "Position trades"), with the kernel's own definitions.

A record holds the fill's signed units and fill price `F`; with the run's options that fixes
its cash flow exactly as the kernel booked it (``+ u × F × (1 − fees) − fixed_fee`` for a sell,
``− (u × F × (1 + fees) + fixed_fee)`` for a buy), so the trades' pnl, return and bars equal the
ones the kernel accumulated in the ``PA_*`` trade slots. Plain numpy/Python, host side.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .portfolio_layout import O_BAR, O_PRICE, O_REASON, O_SYMBOL, O_UNITS, ORDER_REASONS
from .portfolio_options import PortfolioOptions


def final_last_px(open_: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Each symbol's ``last_px`` after the last bar: its last valid price, a bar's close after its open."""
    n_bars, n_sym = close.shape
    both = np.empty((2 * n_bars, n_sym), dtype=np.float64)
    both[0::2] = open_
    both[1::2] = close
    out = np.full(n_sym, np.nan)
    valid = ~np.isnan(both)
    has = valid.any(axis=0)
    last = 2 * n_bars - 1 - np.argmax(valid[::-1], axis=0)
    out[has] = both[last[has], np.flatnonzero(has)]
    return out


def position_trades(
    orders: np.ndarray, opts: PortfolioOptions, last_px: np.ndarray, n_bars: int
) -> list[dict[str, Any]]:
    """The position trades of one column from its order records ``orders`` (n, N_OFIELDS).

    Closed trades in the order they close, then the open ones by symbol. Each trade:
    ``symbol``, ``direction`` (+1 long, −1 short), ``entry_bar``, ``exit_bar`` (the last bar for an
    open trade), ``size`` (units entered), ``entry_price`` / ``exit_price`` (unit-weighted fill
    prices `F`; for an open trade the exit price is ``last_px``), ``fees`` (fees and fixed fees of
    its fills; ``entry_fees``: of its entry fills), ``pnl``, ``return``, ``bars``,
    ``exit_reason`` (the closing fill's reason, or ``open``) and ``open``.
    """
    fees, fixed = opts.fees, opts.fixed_fee
    pos: dict[int, float] = {}
    live: dict[int, dict[str, Any]] = {}
    trades: list[dict[str, Any]] = []

    def start(s: int, bar: int, side: float) -> dict[str, Any]:
        return {"symbol": s, "direction": int(side), "entry_bar": bar, "size": 0.0, "entry_value": 0.0,
                "exit_units": 0.0, "exit_value": 0.0, "fees": 0.0, "flow": 0.0, "entry_cost": 0.0}

    def finish(tr: dict[str, Any], bar: int, reason: str, is_open: bool, exit_price: float) -> None:
        trades.append({
            "symbol": tr["symbol"], "direction": tr["direction"], "entry_bar": tr["entry_bar"], "exit_bar": bar,
            "size": tr["size"], "entry_price": tr["entry_value"] / tr["size"], "exit_price": exit_price,
            "fees": tr["fees"], "entry_fees": tr["entry_cost"] - tr["entry_value"],
            "pnl": tr["pnl"], "return": tr["pnl"] / tr["entry_cost"],
            "bars": bar - tr["entry_bar"], "exit_reason": reason, "open": is_open,
        })

    for r in orders:
        s, bar, signed, f = int(r[O_SYMBOL]), int(r[O_BAR]), float(r[O_UNITS]), float(r[O_PRICE])
        reason = ORDER_REASONS[int(r[O_REASON])]
        u = abs(signed)
        if signed > 0:
            flow = -(u * f * (1.0 + fees) + fixed)
        else:
            flow = u * f * (1.0 - fees) - fixed
        fee = u * f * fees + fixed
        q = pos.get(s, 0.0)
        qn = q + signed
        pos[s] = qn
        if q == 0.0 or (q > 0.0) == (qn > q):  # opens or adds
            tr = live.setdefault(s, start(s, bar, math.copysign(1.0, signed)))
            tr["size"] += u
            tr["entry_value"] += u * f
            tr["fees"] += fee
            tr["flow"] += flow
            tr["entry_cost"] += u * f * (1.0 + fees) + fixed
            continue
        flipped = qn != 0.0 and (qn > 0.0) != (q > 0.0)
        u_close = abs(q) if flipped else u
        tr = live[s]
        tr["exit_units"] += u_close
        tr["exit_value"] += u_close * f
        tr["fees"] += fee * (u_close / u)
        tr["flow"] += flow * (u_close / u)
        if qn == 0.0 or flipped:
            tr["pnl"] = tr["flow"]
            finish(tr, bar, reason, False, tr["exit_value"] / tr["exit_units"])
            del live[s]
        if flipped:
            u_open = u - u_close
            tr = live[s] = start(s, bar, math.copysign(1.0, signed))
            tr["size"] = u_open
            tr["entry_value"] = u_open * f
            tr["fees"] = fee * (u_open / u)
            tr["flow"] = flow * (u_open / u)
            tr["entry_cost"] = u_open * f * (1.0 + fees) + fixed * (u_open / u)
    for s in sorted(live):
        tr = live[s]
        tr["pnl"] = tr["flow"] + pos[s] * last_px[s]
        finish(tr, n_bars - 1, "open", True, float(last_px[s]))
    return trades
