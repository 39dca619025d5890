"""An example third-party gpu_backtest plugin: one strategy, ``example_always_long``.

Registered through the entry point ``[project.entry-points.gpu_backtest]`` of this
package's pyproject.toml; gpu_backtest's plugin manager loads this module and calls its
``register_strategies`` hook.
"""

from __future__ import annotations

import numpy as np

from gpu_backtest.core.strategy import Param, SignalContext, Signals, Strategy
from gpu_backtest.plugins.hookspecs import hookimpl


def signals(ctx: SignalContext) -> Signals:
    """Enter long from bar ``start_bar`` on (every bar is an entry; the simulator does not
    pyramid), never exit. Written against ``ctx.xp`` so it runs on numpy and CuPy alike."""
    xp = ctx.xp
    bar = xp.arange(ctx.n_bars).reshape(-1, 1)  # (T, 1)
    start = ctx.column_values("start_bar", np.int64)  # (1, C): this column's parameter
    entries = bar >= start  # broadcasts to (T, C), symbol-major columns
    exits = xp.zeros((ctx.n_bars, ctx.n_columns), dtype=bool)
    return Signals(entries=entries, exits=exits)


STRATEGY = Strategy(
    name="example_always_long",
    description="Example plugin: go long at bar `start_bar` and hold to the end.",
    params=(Param("start_bar", int, 0, min=0, max=1_000_000, description="first bar with an entry"),),
    signals=signals,
    shorts=False,
)


@hookimpl
def register_strategies() -> list[Strategy]:
    return [STRATEGY]
