"""The whole plugin API of gpu_backtest, as pluggy hook specifications.

A plugin is a module (or object) with functions decorated by ``gpu_backtest.plugins.hookspecs.hookimpl``
and named after the hooks below. Third-party packages register their module under the
entry-point group ``gpu_backtest`` in their own pyproject::

    [project.entry-points.gpu_backtest]
    my_strategies = "my_package.strategies"
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "gpu_backtest"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_strategies() -> list[Any]:
    """Return a list of strategies this plugin provides: single-asset
    `gpu_backtest.core.strategy.Strategy` objects and/or portfolio
    `gpu_backtest.core.portfolio_strategy.PortfolioStrategy` objects."""


@hookspec
def register_data_sources() -> list[Any]:
    """Return a list of data-source objects (see `gpu_backtest.plugins.datasources`) this plugin provides."""
