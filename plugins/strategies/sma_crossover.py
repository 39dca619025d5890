"""sma_crossover: long when the fast SMA of the close crosses above the slow one; shorts mirror it."""

from __future__ import annotations

from ...core import indicators
from ...core.fused import FusedLines, FusedSignals
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


def fused(ctx: SignalContext) -> FusedSignals:
    """The same signals as crossings the sweep kernel computes in its loop (core/fused.py)."""
    lines = FusedLines(ctx)
    fast = lines.per_combo("sma", lambda window: indicators.sma(ctx.xp, ctx.close, window), "fast")
    slow = lines.per_combo("sma", lambda window: indicators.sma(ctx.xp, ctx.close, window), "slow")
    return lines.signals((fast, slow), (slow, fast), (slow, fast), (fast, slow), order=ctx.order)


STRATEGY = Strategy(
    name="sma_crossover",
    description="Simple moving-average crossover: long when the fast SMA of the close crosses above "
    "the slow SMA, exit when it crosses below; shorts are the mirror image.",
    params=(
        Param("fast", int, 10, min=1, max=10_000, description="fast SMA window (bars)"),
        Param("slow", int, 50, min=2, max=10_000, description="slow SMA window (bars)"),
    ),
    signals=signals,
    fused=fused,
    constraint=lambda p: p["fast"] < p["slow"],
    constraint_text="fast < slow",
)


@hookimpl
def register_strategies():
    return [STRATEGY]
