"""buy_and_hold: enter on the first bar with a price and hold to the end."""

from __future__ import annotations

from ...core.strategy import SignalContext, Signals, Strategy
from ..hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """An entry on every bar (only the first valid one opens a position; no pyramiding), never an exit."""
    xp = ctx.xp
    entries = xp.ones((ctx.n_bars, ctx.n_columns), dtype=bool)
    exits = xp.zeros((ctx.n_bars, ctx.n_columns), dtype=bool)
    return Signals(entries=entries, exits=exits, short_entries=exits, short_exits=exits)


STRATEGY = Strategy(
    name="buy_and_hold",
    description="Buy on the first bar with a price and hold to the end (the usual benchmark).",
    params=(),
    signals=signals,
    shorts=False,
)


@hookimpl
def register_strategies():
    return [STRATEGY]
