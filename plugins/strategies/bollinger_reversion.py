"""bollinger_reversion: long when the close crosses below the lower band, out at the middle band; shorts mirror it."""

from __future__ import annotations

import numpy as np

from ...core import indicators
from ...core.fused import FusedLines, FusedSignals
from ...core.strategy import Param, SignalContext, Signals, Strategy, crossed_above, crossed_below
from ..hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """Mean reversion on Bollinger bands ``mid ± k·σ`` (``mid`` the SMA, ``σ`` the population std).

    - long entry: close crosses below the lower band; long exit: close crosses back above ``mid``;
    - short entry: close crosses above the upper band; short exit: close crosses back below ``mid``.

    The SMA and σ depend on ``window`` only, so they are computed once per window and the
    bands of every ``k`` are derived from them.
    """
    xp = ctx.xp
    mid = ctx.per_combo("sma", lambda window: indicators.sma(xp, ctx.close, window), "window")
    sd = ctx.per_combo("std", lambda window: indicators.rolling_std(xp, ctx.close, window), "window")
    k = ctx.column_values("k", np.float64)
    upper = mid + k * sd
    lower = mid - k * sd
    close = ctx.per_symbol(ctx.close)
    return Signals(
        entries=crossed_below(xp, close, lower),
        exits=crossed_above(xp, close, mid),
        short_entries=crossed_above(xp, close, upper),
        short_exits=crossed_below(xp, close, mid),
    )


def fused(ctx: SignalContext) -> FusedSignals:
    """The same signals as crossings the sweep kernel computes in its loop (core/fused.py): the bands
    ``mid ± k·σ`` as ``mid + (±k)·σ`` per combination, the same float arithmetic as above."""
    xp = ctx.xp
    lines = FusedLines(ctx)
    mid = lines.per_combo("sma", lambda window: indicators.sma(xp, ctx.close, window), "window")
    sd = lines.per_combo("std", lambda window: indicators.rolling_std(xp, ctx.close, window), "window")
    k = np.asarray(ctx.params["k"], dtype=np.float64)
    lower, upper, close = lines.affine(mid, -k, sd), lines.affine(mid, k, sd), lines.close
    # crossed_below(close, lower) = crossed_above(lower, close), and so on
    return lines.signals((lower, close), (close, mid), (close, upper), (mid, close), order=ctx.order)


STRATEGY = Strategy(
    name="bollinger_reversion",
    description="Bollinger-band mean reversion: long when the close crosses below the lower band "
    "(SMA − k·σ), exit when it crosses back above the middle band (the SMA); short when it crosses "
    "above the upper band, cover when it crosses back below the middle band.",
    params=(
        Param("window", int, 20, min=2, max=10_000, description="SMA / standard-deviation window (bars)"),
        Param("k", float, 2.0, min=0.1, max=10.0, description="band width in standard deviations"),
    ),
    signals=signals,
    fused=fused,
    tags=("mean-reversion", "bands"),
)


@hookimpl
def register_strategies() -> list[Strategy]:
    return [STRATEGY]
