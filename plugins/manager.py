"""Build the plugin manager: built-ins registered like any third party, then entry points.

``GPU_BACKTEST_LOAD_PLUGINS`` (comma-separated plugin names) restricts which plugins load,
built-ins included; unset loads all. ``GPU_BACKTEST_TRACE_PLUGINS=1`` logs every hook call.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from functools import lru_cache
from typing import Any

import pluggy

from ..core.errors import NotFoundError
from ..core.strategy import Strategy
from . import hookspecs

log = logging.getLogger(__name__)

# name -> module path, registered in this order
DEFAULT_PLUGINS = {
    "buy_and_hold": "gpu_backtest.plugins.strategies.buy_and_hold",
    "sma_crossover": "gpu_backtest.plugins.strategies.sma_crossover",
    "ema_crossover": "gpu_backtest.plugins.strategies.ema_crossover",
    "macd_crossover": "gpu_backtest.plugins.strategies.macd_crossover",
    "rsi_reversion": "gpu_backtest.plugins.strategies.rsi_reversion",
    "bollinger_reversion": "gpu_backtest.plugins.strategies.bollinger_reversion",
    "donchian_breakout": "gpu_backtest.plugins.strategies.donchian_breakout",
    "momentum": "gpu_backtest.plugins.strategies.momentum",
    "xs_momentum": "gpu_backtest.plugins.strategies.xs_momentum",
    "low_volatility": "gpu_backtest.plugins.strategies.low_volatility",
    "short_term_reversal": "gpu_backtest.plugins.strategies.short_term_reversal",
    "equal_weight": "gpu_backtest.plugins.strategies.equal_weight",
    "inverse_volatility": "gpu_backtest.plugins.strategies.inverse_volatility",
    "synthetic": "gpu_backtest.plugins.datasources.synthetic",
    "tiingo": "gpu_backtest.plugins.datasources.tiingo",
    "upload": "gpu_backtest.plugins.datasources.upload",
}


def _allowed() -> set[str] | None:
    raw = os.environ.get("GPU_BACKTEST_LOAD_PLUGINS")
    if raw is None or not raw.strip():
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def build_plugin_manager(allowed: set[str] | None = None, entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh PluginManager with the built-ins and (unless disabled) the entry-point plugins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if allowed is None:
        allowed = _allowed()
    for name, modpath in DEFAULT_PLUGINS.items():
        if allowed is not None and name not in allowed:
            continue
        try:
            module = importlib.import_module(modpath)
        except ModuleNotFoundError as exc:
            if exc.name != modpath:
                raise
            continue  # a built-in not present in this version
        pm.register(module, name=name)
    if entry_points:
        if allowed is None:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        else:
            for name in allowed - set(DEFAULT_PLUGINS):
                pm.load_setuptools_entrypoints(hookspecs.PROJECT, name=name)
    if os.environ.get("GPU_BACKTEST_TRACE_PLUGINS"):
        pm.trace.root.setwriter(log.debug)
        pm.enable_tracing()
    return pm


@lru_cache(maxsize=1)
def default_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built once)."""
    return build_plugin_manager()


def strategies(pm: pluggy.PluginManager | None = None) -> dict[str, Strategy]:
    """All registered strategies by name (a later registration does not replace an earlier one)."""
    pm = pm or default_plugin_manager()
    out: dict[str, Strategy] = {}
    # pluggy calls the most recently registered first; reverse for registration order
    for batch in reversed(pm.hook.register_strategies()):
        for strat in batch or []:
            if strat.name in out:
                log.warning("strategy %r registered twice; keeping the first", strat.name)
                continue
            out[strat.name] = strat
    return out


def get_strategy(name: str, pm: pluggy.PluginManager | None = None) -> Strategy:
    """The strategy called ``name``; NotFoundError listing the known names otherwise."""
    known = strategies(pm)
    if name not in known:
        raise NotFoundError(f"unknown strategy {name!r}; known: {', '.join(sorted(known))}", {"strategy": name})
    return known[name]


def strategy_provenance(name: str, pm: pluggy.PluginManager | None = None) -> dict[str, str | None]:
    """Which plugin registered strategy ``name``, and the distribution and version it came from
    (the built-ins: this package's); Nones when the strategy is unknown."""
    pm = pm or default_plugin_manager()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    for impl in pm.hook.register_strategies.get_hookimpls():  # registration order: first wins
        names = [s.name for s in (impl.function() or [])]
        if name not in names:
            continue
        dist = dists.get(id(impl.plugin))
        if dist is not None:
            return {"plugin": impl.plugin_name, "distribution": dist.project_name, "version": dist.version}
        if impl.plugin_name in DEFAULT_PLUGINS:
            return {"plugin": impl.plugin_name, "distribution": "gpu-backtest", "version": _own_version()}
        return {"plugin": impl.plugin_name, "distribution": None, "version": None}
    return {"plugin": None, "distribution": None, "version": None}


def _own_version() -> str | None:
    try:
        return importlib.metadata.version("gpu-backtest")
    except importlib.metadata.PackageNotFoundError:
        return None


class PluginRegistry:
    """The `core.registry.Registry` of a pluggy manager (what core is handed)."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        self.pm = pm or default_plugin_manager()

    def strategies(self) -> dict[str, Strategy]:
        return strategies(self.pm)

    def provenance(self, name: str) -> dict[str, str | None]:
        return strategy_provenance(name, self.pm)

    def data_sources(self) -> dict[str, Any]:
        return data_sources(self.pm)


@lru_cache(maxsize=1)
def default_registry() -> PluginRegistry:
    """The registry of the process-wide plugin manager."""
    return PluginRegistry(default_plugin_manager())


def data_sources(pm: pluggy.PluginManager | None = None) -> dict[str, Any]:
    """All registered data sources by name."""
    pm = pm or default_plugin_manager()
    out: dict[str, Any] = {}
    for batch in reversed(pm.hook.register_data_sources()):
        for src in batch or []:
            out.setdefault(src.name, src)
    return out
