"""The warm-up on the cluster's workers: a Dask worker plugin, and the server's wait for it.

`WarmupPlugin` is given to a local cluster's workers when they are created (`cluster/dask.py`:
they start warming before the server says "serving on") and registered by the server on an
external cluster once connected (a worker that joins later gets it too). On each worker's start it

- points ``NUMBA_CACHE_DIR`` at ``<the worker's GPU_BACKTEST_DATA_DIR>/numba-cache`` when the
  worker has none (a local cluster's workers inherit the server's; `core/jitcache.py`);
- when asked to warm (``GPU_BACKTEST_WARMUP``, the server's), starts a daemon thread that runs
  `core.warmup.run_warmup` (sweep signatures first) on the worker's own backend
  (`cluster/worker.py`), once per worker process.

`wait_for_workers` (the server, on a thread) waits until every worker's warm-up has ended and
returns what each reported.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger(__name__)

PLUGIN_NAME = "gpu-backtest-warmup"

_started = threading.Event()
_done = threading.Event()
_result: dict[str, Any] = {}
_lock = threading.Lock()


def _run(parts: tuple[str, ...]) -> None:
    try:
        from ..core.warmup import run_warmup
        from .worker import worker_context

        _result.update(run_warmup(parts, worker_context().backend, background=True))
    except Exception as exc:  # the context itself failed: the first job will report it
        _result.update({"seconds": None, "failed": {"context": f"{type(exc).__name__}: {exc}"[:300]}})
    finally:
        _done.set()


def start_worker_warmup(parts: tuple[str, ...]) -> bool:
    """Start this process's warm-up thread unless one was started already; True when started."""
    with _lock:
        if _started.is_set():
            return False
        _started.set()
    threading.Thread(target=_run, args=(parts,), name="gbt-warmup", daemon=True).start()
    return True


class WarmupPlugin(WorkerPlugin):
    """Numba cache directory and background warm-up for each worker (see the module's docstring)."""

    name = PLUGIN_NAME

    def __init__(self, warm: bool = True, parts: tuple[str, ...] | None = None) -> None:
        from ..core.warmup import WORKER_ORDER

        self.warm = warm
        self.parts = tuple(parts or WORKER_ORDER)

    def setup(self, worker: Any) -> None:
        from ..core.config import Settings
        from ..core.jitcache import configure_numba_cache

        try:
            configure_numba_cache(Settings.from_env().data_dir)
        except Exception as exc:  # a bad setting on this worker: its tasks report it
            log.warning("numba cache on worker %s not configured: %s", getattr(worker, "address", "?"), exc)
        if self.warm:
            start_worker_warmup(self.parts)


async def _warmup_report(timeout_s: float) -> dict[str, Any]:
    """On a worker (its event loop): wait for its warm-up without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not _done.is_set() and loop.time() < deadline:
        await asyncio.sleep(0.1)
    if not _started.is_set():
        return {"seconds": None, "started": False}
    return {**_result, "done": _done.is_set()}


def worker_numba_cache_dir() -> str | None:
    """This process's numba cache directory (``NUMBA_CACHE_DIR``), for tests and diagnostics."""
    from numba.core import config

    return config.CACHE_DIR or None


def register(client: Any, warm: bool) -> None:
    """Register the plugin on ``client``'s cluster (blocking: call it on a thread)."""
    client.register_plugin(WarmupPlugin(warm), name=PLUGIN_NAME)


def wait_for_workers(client: Any, timeout_s: float = 900.0) -> dict[str, dict[str, Any]]:
    """{worker address: its warm-up report} once every worker's warm-up ended (blocking)."""
    return client.run(_warmup_report, timeout_s)
