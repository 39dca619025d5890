"""The Dask cluster the service runs jobs on, and the chunk map that sends chunks to it.

- ``DASK_SCHEDULER_ADDRESS`` set: connect to that scheduler (the user's cluster).
- else, GPUs present (CuPy sees a device and dask-cuda is installed): ``LocalCUDACluster``,
  one worker per device of ``GPU_DEVICE`` / ``CUDA_VISIBLE_DEVICES``, device memory limit
  from ``GPU_MEMORY_LIMIT``.
- else: ``distributed.LocalCluster`` sized to the machine — one worker process whose
  threads the numba kernel's ``prange`` already spreads over the cores.

GPU-ness is configuration: the callers get a ``distributed.Client`` either way, and each
worker builds its own `Backend` (`worker_engine`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..core.config import Settings
from ..core.engine import CancelFn, Cancelled, ChunkTask, Engine

log = logging.getLogger(__name__)


@dataclass
class ClusterHandle:
    """A started (or connected) cluster: the client, what kind it is, and its dashboard."""

    client: Any
    cluster: Any | None
    kind: str  # "external" | "local-cuda" | "local"

    def info(self) -> dict[str, Any]:
        """Scheduler address, workers and dashboard link (for GET /gpu/status)."""
        try:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        except TypeError:  # older distributed without n_workers
            workers = self.client.scheduler_info().get("workers", {})
        except Exception:  # scheduler gone
            workers = {}
        return {
            "kind": self.kind,
            "scheduler": self.client.scheduler.address if self.client.scheduler else None,
            "dashboard": self.client.dashboard_link,
            "workers": [{"address": a, "name": str(w.get("name")), "nthreads": w.get("nthreads"),
                         "memory_limit": w.get("memory_limit")} for a, w in workers.items()],
        }

    def close(self) -> None:
        """Close the client, and the cluster when we started it."""
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _gpus_present() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def start_cluster(settings: Settings, processes: bool = True, dashboard_address: str | None = ":8787",
                  n_workers: int | None = None) -> ClusterHandle:
    """Connect to ``DASK_SCHEDULER_ADDRESS`` or start a local (CUDA) cluster."""
    from distributed import Client, LocalCluster

    if settings.dask_scheduler_address:
        client = Client(settings.dask_scheduler_address, timeout="30s")
        return ClusterHandle(client, None, "external")
    if settings.backend != "cpu" and _gpus_present():
        try:
            from dask_cuda import LocalCUDACluster

            devices = os.environ.get("CUDA_VISIBLE_DEVICES") or str(settings.gpu_device)
            cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=devices, dashboard_address=dashboard_address,
                                       device_memory_limit=settings.gpu_memory_limit)
            return ClusterHandle(Client(cluster), cluster, "local-cuda")
        except ImportError:
            log.warning("GPUs present but dask-cuda is not installed; using a CPU LocalCluster")
    cores = os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n_workers or 1, threads_per_worker=max(1, min(cores, 4)),
                           processes=processes, dashboard_address=dashboard_address)
    return ClusterHandle(Client(cluster), cluster, "local")


@lru_cache(maxsize=1)
def worker_engine() -> Engine:
    """The engine of this worker process (built once: backend, plugins)."""
    return Engine(Settings.from_env())


def run_chunk_task(task: ChunkTask) -> dict[str, np.ndarray]:
    """What a Dask worker runs for one chunk."""
    return worker_engine().run_chunk(task)


def dask_chunk_map(client: Any, window: int = 8):
    """A chunk map for `Engine.run` that runs each chunk as a Dask task.

    At most ``window`` chunks are in flight (bounded memory); results are yielded as they
    complete; cancelling stops submitting and cancels what is in flight.
    """
    from distributed import as_completed

    def run(tasks: Iterable[ChunkTask], cancel: CancelFn | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        it = iter(tasks)
        pending = as_completed()
        index = {}
        for task in it:
            fut = client.submit(run_chunk_task, task, pure=False)
            index[fut.key] = task.index
            pending.add(fut)
            if pending.count() >= window:
                break
        for fut in pending:
            if cancel is not None and cancel():
                for f in list(pending.futures):
                    f.cancel()
                raise Cancelled("cancelled")
            yield index.pop(fut.key), fut.result()
            fut.release()
            nxt = next(it, None)
            if nxt is not None:
                f2 = client.submit(run_chunk_task, nxt, pure=False)
                index[f2.key] = nxt.index
                pending.add(f2)

    return run
