"""The Dask cluster the service runs jobs on, and the chunk map that sends chunks to it.

- ``DASK_SCHEDULER_ADDRESS`` set: connect to that scheduler (the user's cluster).
- else, GPUs present (CuPy sees a device and dask-cuda is installed): ``LocalCUDACluster``,
  one worker per device of ``GPU_DEVICE`` / ``CUDA_VISIBLE_DEVICES``, device memory limit
  from ``GPU_MEMORY_LIMIT``.
- else: ``distributed.LocalCluster`` sized to the machine — one worker process whose
  threads the numba kernel's ``prange`` already spreads over the cores.

GPU-ness is configuration: the callers get a ``distributed.Client`` either way; each worker
builds its own stage context — backend, device, budget, plugins — from its own environment
(`core/worker.py`), and jobs run on it through `DaskExecutor` (`core/executors.py`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from ..core.backend import CudaUnavailable, cuda_device_count
from ..core.config import Settings
from ..core.executors import DaskExecutor
from .worker import worker_context

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
            "dashboard": self.dashboard_link(),
            "workers": [{"address": a, "name": str(w.get("name")), "nthreads": w.get("nthreads"),
                         "memory_limit": w.get("memory_limit")} for a, w in workers.items()],
        }

    def dashboard_link(self) -> str | None:
        """The dashboard's URL: for a cluster we started, where its HTTP server really listens
        (``client.dashboard_link`` names the scheduler's host even when the dashboard is bound to
        loopback); for an external one, what the client reports."""
        server = getattr(getattr(self.cluster, "scheduler", None), "http_server", None)
        sockets = list(getattr(server, "_sockets", {}).values())
        if not sockets:
            try:
                return self.client.dashboard_link
            except Exception:
                return None
        host, port = sockets[0].getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            return self.client.dashboard_link  # every interface: the scheduler's host reaches it
        return f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"

    def close(self) -> None:
        """Close the client, and the cluster when we started it."""
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _gpus_present() -> bool:
    try:
        return cuda_device_count() > 0
    except CudaUnavailable:
        return False


def start_cluster(settings: Settings, processes: bool = True, dashboard_address: str | None = None,
                  n_workers: int | None = None) -> ClusterHandle:
    """Connect to ``DASK_SCHEDULER_ADDRESS`` or start a local (CUDA) cluster.

    A local cluster's dashboard (and the scheduler's HTTP endpoints, which have no
    authentication) listens on ``dashboard_address``, default ``GPU_BACKTEST_DASHBOARD_ADDRESS``
    (127.0.0.1:8787: this machine only)."""
    from distributed import Client, LocalCluster

    from .warmup import WarmupPlugin

    # a local cluster's workers start their warm-up as soon as they start (cluster/warmup.py); the
    # server registers the same plugin on an external cluster once connected (web/warmup.py)
    plugins = {WarmupPlugin(settings.warmup)}
    if dashboard_address is None:
        dashboard_address = settings.dashboard_address

    if settings.dask_scheduler_address:
        client = Client(settings.dask_scheduler_address, timeout="30s")
        return ClusterHandle(client, None, "external")
    if settings.backend != "cpu" and _gpus_present():
        try:
            from dask_cuda import LocalCUDACluster

            devices = os.environ.get("CUDA_VISIBLE_DEVICES") or str(settings.gpu_device)
            cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=devices, dashboard_address=dashboard_address,
                                       device_memory_limit=settings.gpu_memory_limit, plugins=plugins)
            return ClusterHandle(Client(cluster), cluster, "local-cuda")
        except ImportError:
            log.warning("GPUs present but dask-cuda is not installed; using a CPU LocalCluster")
    cores = os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n_workers or 1, threads_per_worker=max(1, min(cores, 4)),
                           processes=processes, dashboard_address=dashboard_address, plugins=plugins)
    return ClusterHandle(Client(cluster), cluster, "local")


def executor(handle: ClusterHandle, settings: Settings) -> DaskExecutor:
    """The executor that runs a job's stages on this cluster."""
    return DaskExecutor(handle.client, worker_context, retries=settings.task_retries,
                        stall_timeout_s=settings.task_timeout_s)
