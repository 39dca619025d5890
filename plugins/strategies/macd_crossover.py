"""macd_crossover: long when the MACD line crosses above its signal line; shorts mirror it."""

from __future__ import annotations

from ...core import indicators
from ...core.strategy import Param, SignalContext, Signals, Strategy, crossings
from ..hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """Entry when MACD crosses above its signal line, exit when it crosses below; shorts the other way.

    Shared work: each EMA span of the close is computed once (key ``"ema"``), each
    (fast, slow) MACD line once (key ``"macd"``), each (fast, slow, signal) signal line once.
    """
    xp = ctx.xp

    def ema(span: int):
        return ctx.cached(("ema", (span,)), lambda: indicators.ema(xp, ctx.close, span))

    def line(fast: int, slow: int):
        return ema(fast) - ema(slow)

    def signal_line(fast: int, slow: int, signal: int):
        return indicators.ema(xp, ctx.cached(("macd", (fast, slow)), lambda: line(fast, slow)), signal)

    macd = ctx.per_combo("macd", line, "fast", "slow")
    sig = ctx.per_combo("macd_signal", signal_line, "fast", "slow", "signal")
    up, down = crossings(xp, macd, sig)
    return Signals(entries=up, exits=down, short_entries=down, short_exits=up)


STRATEGY = Strategy(
    name="macd_crossover",
    description="MACD signal-line crossover: MACD = EMA(fast) − EMA(slow) of the close, signal = "
    "EMA(signal) of MACD; long when MACD crosses above the signal line, exit when it crosses below; "
    "shorts are the mirror image.",
    params=(
        Param("fast", int, 12, min=1, max=10_000, description="fast EMA span (bars)"),
        Param("slow", int, 26, min=2, max=10_000, description="slow EMA span (bars)"),
        Param("signal", int, 9, min=1, max=10_000, description="signal-line EMA span (bars)"),
    ),
    signals=signals,
    constraint=lambda p: p["fast"] < p["slow"],
    constraint_text="fast < slow",
    tags=("trend", "crossover"),
)


@hookimpl
def register_strategies() -> list[Strategy]:
    return [STRATEGY]
