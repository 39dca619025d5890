"""momentum: long while the `lookback`-bar return is above `threshold`; short while it is below −`threshold`."""

from __future__ import annotations

import numpy as np

from ...core import indicators
from ...core.strategy import Param, SignalContext, Signals, Strategy
from ..hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """Time-series momentum on ``R[t] = close[t] / close[t − lookback] − 1`` (level signals).

    - long entry: ``R > threshold``; long exit: ``R < threshold``;
    - short entry: ``R < −threshold``; short exit: ``R > −threshold``.

    The conditions are levels, not crossings: a position is taken on the first bar where
    the condition holds (already at the end of the warm-up if it holds there); repeated
    entries while in the position are ignored by the simulator (no pyramiding).
    """
    xp = ctx.xp
    ret = ctx.per_combo("roc", lambda lookback: indicators.roc(xp, ctx.close, lookback), "lookback")
    th = ctx.column_values("threshold", np.float64)
    return Signals(entries=ret > th, exits=ret < th, short_entries=ret < -th, short_exits=ret > -th)


STRATEGY = Strategy(
    name="momentum",
    description="Time-series momentum: long while the `lookback`-bar return of the close is above "
    "`threshold`, exit when it falls below; short while it is below −`threshold`, cover when it rises "
    "above −`threshold` (between the two levels: flat).",
    params=(
        Param("lookback", int, 20, min=1, max=10_000, description="return horizon (bars)"),
        Param("threshold", float, 0.0, min=0.0, max=10.0, description="return level (fraction, e.g. 0.02 = 2%)"),
    ),
    signals=signals,
    tags=("trend", "momentum"),
)


@hookimpl
def register_strategies() -> list[Strategy]:
    return [STRATEGY]
