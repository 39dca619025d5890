"""ema_crossover: long when the fast EMA of the close crosses above the slow one; shorts mirror it."""

from __future__ import annotations

from ...core import indicators
from ...core.fused import FusedLines, FusedSignals
from ...core.strategy import Param, SignalContext, Signals, Strategy, crossings
from ..hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """Entry when the fast EMA crosses above the slow EMA, exit when it crosses below; shorts the other way."""
    xp = ctx.xp

    def ema(span: int):
        return indicators.ema(xp, ctx.close, span)

    # one key for both parameters: an EMA of span 20 is computed once even if both grids hold 20
    fast = ctx.per_combo("ema", ema, "fast")
    slow = ctx.per_combo("ema", ema, "slow")
    up, down = crossings(xp, fast, slow)
    return Signals(entries=up, exits=down, short_entries=down, short_exits=up)


def fused(ctx: SignalContext) -> FusedSignals:
    """The same signals as crossings the sweep kernel computes in its loop (core/fused.py)."""
    lines = FusedLines(ctx)
    fast = lines.per_combo("ema", lambda span: indicators.ema(ctx.xp, ctx.close, span), "fast")
    slow = lines.per_combo("ema", lambda span: indicators.ema(ctx.xp, ctx.close, span), "slow")
    return lines.signals((fast, slow), (slow, fast), (slow, fast), (fast, slow), order=ctx.order)


STRATEGY = Strategy(
    name="ema_crossover",
    description="Exponential moving-average crossover: long when the fast EMA of the close crosses above "
    "the slow EMA, exit when it crosses below; shorts are the mirror image. EMAs are seeded with the SMA "
    "of their first `span` closes.",
    params=(
        Param("fast", int, 12, min=1, max=10_000, description="fast EMA span (bars)"),
        Param("slow", int, 26, min=2, max=10_000, description="slow EMA span (bars)"),
    ),
    signals=signals,
    fused=fused,
    constraint=lambda p: p["fast"] < p["slow"],
    constraint_text="fast < slow",
    tags=("trend", "crossover"),
)


@hookimpl
def register_strategies() -> list[Strategy]:
    return [STRATEGY]
