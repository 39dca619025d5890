"""The Python API's composition root: `run_backtest` wires the core to the installed plugins.

Core modules take their registry (strategies, data sources) from their caller; this module is
where a library user's call gets the default one (`plugins.manager.default_registry`), and a
cluster run gets the workers' context factory (`cluster/worker.py`).
"""

from __future__ import annotations

from typing import Any

import pluggy

from .core.backend import Backend, select_backend
from .core.config import Settings
from .core.engine import BacktestResult, Engine
from .core.executors import CancelFn, DaskExecutor, ProgressFn


def run_backtest(spec: Any, data: Any = None, *, settings: Settings | None = None, backend: Backend | str | None = None,
                 progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                 pm: pluggy.PluginManager | None = None, client: Any = None) -> BacktestResult:
    """Run one backtest or a parameter sweep.

    ``spec``: a dict (the POST /backtest document) or a `BacktestSpec`. ``data``: a long
    DataFrame (timestamp/date, symbol, open, high, low, close, volume), a dict of per-symbol
    DataFrames, a `MarketPanel`, CSV/Parquet path(s), or None: the spec's ``source`` (default
    ``synthetic``) through the market-data store, fetching what is missing. ``pm``: a pluggy
    manager to take strategies and sources from (default: every installed plugin). ``client``:
    a ``distributed.Client`` — the stages then run on its cluster (workers read the store, or
    the in-memory bars scattered to them). Raises `SpecError` / `DataError` (subclasses of
    `GpuBacktestError`) naming the bad field or file.
    """
    from .cluster.worker import worker_context
    from .plugins.manager import PluginRegistry, default_registry

    settings = settings or Settings.from_env()
    if isinstance(backend, str):
        backend = select_backend(settings, backend)
    registry = PluginRegistry(pm) if pm is not None else default_registry()
    executor = DaskExecutor(client, worker_context, retries=settings.task_retries) if client is not None else None
    return Engine(settings, backend, registry).run(spec, data, progress=progress, cancel=cancel, executor=executor)
