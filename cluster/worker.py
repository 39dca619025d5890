"""The stage context of a cluster worker process, built once from the worker's own environment.

Passed to the executors as the context factory (`core/executors.py` sends it with every task;
it pickles by reference): the worker's settings (`core.worker.worker_settings`: its own
device under dask-cuda), its backend, and the strategies installed on it.
"""

from __future__ import annotations

import threading

from ..core.backend import select_backend
from ..core.worker import StageContext, in_dask_worker, worker_settings
from ..plugins.manager import build_plugin_manager, strategies

_context: StageContext | None = None
_lock = threading.Lock()


def worker_context() -> StageContext:
    """This process's stage context (built on first use)."""
    global _context
    with _lock:
        if _context is None:
            settings = worker_settings()
            _context = StageContext(settings, select_backend(settings), strategies(build_plugin_manager()),
                                    in_dask_worker())
        return _context
