"""sma_crossover: long when the fast SMA of the close crosses above the slow one; shorts mirror it."""

from __future__ import annotations

from ...core import indicators
from ...core.strategy import Param, SignalContext, Signals, Strategy, crossings
from ..hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """Entry on a golden cross, exit on a death cross; short entry/exit the other way round."""
    xp = ctx.xp

    def sma(window: int):
        return indicators.sma(xp, ctx.close, window)

    fast = ctx.per_combo("sma", sma, "fast")
    slow = ctx.per_combo("sma", sma, "slow")
    up, down = crossings(xp, fast, slow)
    return Signals(entries=up, exits=down, short_entries=down, short_exits=up)


STRATEGY = Strategy(
    name="sma_crossover",
    description="Simple moving-average crossover: long when the fast SMA of the close crosses above "
    "the slow SMA, exit when it crosses below; shorts are the mirror image.",
    params=(
        Param("fast", int, 10, min=1, max=10_000, description="fast SMA window (bars)"),
        Param("slow", int, 50, min=2, max=10_000, description="slow SMA window (bars)"),
    ),
    signals=signals,
    constraint=lambda p: p["fast"] < p["slow"],
    constraint_text="fast < slow",
)


@hookimpl
def register_strategies():
    return [STRATEGY]
