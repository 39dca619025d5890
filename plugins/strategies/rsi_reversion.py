"""rsi_reversion: long when RSI recovers up through `lower`, out when it rises up through `upper`; shorts mirror it."""

from __future__ import annotations

import numpy as np

from ...core import indicators
from ...core.strategy import Param, SignalContext, Signals, Strategy, crossed_above, crossed_below
from ..hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """Mean reversion on Wilder's RSI of the close.

    - long entry: RSI crosses up through ``lower`` (leaves the oversold zone);
    - long exit: RSI crosses up through ``upper`` (reaches the overbought zone);
    - short entry: RSI crosses down through ``upper``; short exit: RSI crosses down through ``lower``.
    """
    xp = ctx.xp
    rsi = ctx.per_combo("rsi", lambda window: indicators.rsi(xp, ctx.close, window), "window")
    lower = xp.broadcast_to(ctx.column_values("lower", np.float64), rsi.shape)
    upper = xp.broadcast_to(ctx.column_values("upper", np.float64), rsi.shape)
    return Signals(
        entries=crossed_above(xp, rsi, lower),
        exits=crossed_above(xp, rsi, upper),
        short_entries=crossed_below(xp, rsi, upper),
        short_exits=crossed_below(xp, rsi, lower),
    )


STRATEGY = Strategy(
    name="rsi_reversion",
    description="RSI mean reversion: long when Wilder's RSI crosses up through `lower` (out of oversold), "
    "exit when it crosses up through `upper`; short when it crosses down through `upper` (out of "
    "overbought), cover when it crosses down through `lower`.",
    params=(
        Param("window", int, 14, min=2, max=10_000, description="RSI window (bars, Wilder smoothing)"),
        Param("lower", float, 30.0, min=0.0, max=100.0, description="oversold level"),
        Param("upper", float, 70.0, min=0.0, max=100.0, description="overbought level"),
    ),
    signals=signals,
    constraint=lambda p: p["lower"] < p["upper"],
    constraint_text="lower < upper",
    tags=("mean-reversion", "oscillator"),
)


@hookimpl
def register_strategies() -> list[Strategy]:
    return [STRATEGY]
