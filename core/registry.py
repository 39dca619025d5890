"""Registry: what the core asks of the plugin system, as an interface the callers pass in.

Core modules never import `gpu_backtest.plugins`: the composition roots — `gpu_backtest.api`
(`run_backtest`), the web app, the command line and the cluster workers — build a registry
(`plugins.manager.PluginRegistry` over a pluggy manager) and hand it to the engine, the data
service and the stage contexts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .errors import NotFoundError
from .strategy import Strategy


class Registry(Protocol):
    """Strategies and data sources by name, and where each strategy comes from."""

    def strategies(self) -> Mapping[str, Strategy]:
        """Every registered strategy by name."""
        ...

    def provenance(self, name: str) -> dict[str, str | None]:
        """``{"plugin", "distribution", "version"}`` of strategy ``name`` (Nones if unknown)."""
        ...

    def data_sources(self) -> Mapping[str, Any]:
        """Every registered data source by name."""
        ...


def get_strategy(registry: Registry, name: str) -> Strategy:
    """The strategy called ``name``; NotFoundError listing the known names otherwise."""
    known = registry.strategies()
    if name not in known:
        raise NotFoundError(f"unknown strategy {name!r}; known: {', '.join(sorted(known))}", {"strategy": name})
    return known[name]
