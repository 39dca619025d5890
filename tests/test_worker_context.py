"""A worker's stage context comes from the worker's own environment: a dask-cuda worker (its
CUDA_VISIBLE_DEVICES lists its own device first) uses device 0 of its view, not the server's
GPU_DEVICE; outside a worker the settings are the environment's as they are."""

from __future__ import annotations

import pytest

from gpu_backtest.core.worker import in_dask_worker, worker_settings


def test_outside_a_worker_gpu_device_is_the_environments() -> None:
    assert in_dask_worker() is None
    s = worker_settings({"GPU_DEVICE": "3", "CUDA_VISIBLE_DEVICES": "3,0,1,2"})
    assert s.gpu_device == 3


def test_in_a_dask_worker_with_its_own_devices_first_it_uses_device_0() -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        env = {"GPU_DEVICE": "3", "CUDA_VISIBLE_DEVICES": "3,0,1,2"}
        inside = client.submit(lambda: (in_dask_worker(), worker_settings(env).gpu_device)).result()
        plain = client.submit(lambda: worker_settings({"GPU_DEVICE": "2"}).gpu_device).result()
    assert inside[0] is not None and inside[1] == 0
    assert plain == 2  # no CUDA_VISIBLE_DEVICES: not a dask-cuda worker, the variable stands
