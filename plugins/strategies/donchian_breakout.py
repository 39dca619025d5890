"""donchian_breakout: long when the close breaks above the previous `window` bars' highest high; shorts mirror it."""

from __future__ import annotations

from ...core import indicators
from ...core.strategy import Param, SignalContext, Signals, Strategy
from ..hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """Donchian channel breakout (turtle style).

    With ``HH_n[t] = max(high[t−n .. t−1])`` and ``LL_n[t] = min(low[t−n .. t−1])`` — the
    channel of the *previous* ``n`` bars, bar ``t`` excluded, so a bar can break out of it:

    - long entry: ``close[t] > HH_window[t]``; long exit: ``close[t] < LL_exit_window[t]``;
    - short entry: ``close[t] < LL_window[t]``; short exit: ``close[t] > HH_exit_window[t]``.

    Entry and exit channels of the same length share one computation.
    """
    xp = ctx.xp

    def highest(n: int):
        return indicators.shift(xp, indicators.rolling_max(xp, ctx.high, n), 1)

    def lowest(n: int):
        return indicators.shift(xp, indicators.rolling_min(xp, ctx.low, n), 1)

    close = ctx.per_symbol(ctx.close)
    return Signals(
        entries=close > ctx.per_combo("donchian_high", highest, "window"),
        exits=close < ctx.per_combo("donchian_low", lowest, "exit_window"),
        short_entries=close < ctx.per_combo("donchian_low", lowest, "window"),
        short_exits=close > ctx.per_combo("donchian_high", highest, "exit_window"),
    )


STRATEGY = Strategy(
    name="donchian_breakout",
    description="Donchian channel breakout: long when the close rises above the highest high of the "
    "previous `window` bars, exit when it falls below the lowest low of the previous `exit_window` bars; "
    "short when the close falls below the lowest low of the previous `window` bars, cover above the "
    "highest high of the previous `exit_window` bars.",
    params=(
        Param("window", int, 20, min=1, max=10_000, description="entry channel length (bars before t)"),
        Param("exit_window", int, 10, min=1, max=10_000, description="exit channel length (bars before t)"),
    ),
    signals=signals,
    tags=("trend", "breakout"),
)


@hookimpl
def register_strategies() -> list[Strategy]:
    return [STRATEGY]
