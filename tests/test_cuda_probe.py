"""The one CuPy device probe (core/backend.py `cuda_device_count`) and its callers, with a fake CuPy.

Runs on any machine: ``cupy`` in ``sys.modules`` is replaced by None (not importable) or by a
small stand-in whose runtime answers what each case needs.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gpu_backtest.core.backend import CudaUnavailable, cuda_backend, cuda_device_count, select_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.gpustatus import gpu_status

GIB = 1024**3


def fake_cupy(count: Any) -> SimpleNamespace:
    """A stand-in for CuPy: ``count`` devices (an exception instance: getDeviceCount raises it)."""

    def get_device_count() -> int:
        if isinstance(count, BaseException):
            raise count
        return count

    class Device:
        def __init__(self, i: int) -> None:
            self.i = i

        def use(self) -> None:
            pass

        def __enter__(self) -> Device:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    runtime = SimpleNamespace(
        getDeviceCount=get_device_count, memGetInfo=lambda: (6 * GIB, 8 * GIB), runtimeGetVersion=lambda: 12040,
        getDeviceProperties=lambda i: {"name": b"Fake GPU", "major": 9, "minor": 0})
    return SimpleNamespace(cuda=SimpleNamespace(runtime=runtime, Device=Device))


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML: utilisation reported as an error
    return Settings(backend="auto", gpu_device=0, gpu_memory_limit=0.5)


def test_no_cupy(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(CudaUnavailable) as info:
        cuda_device_count()
    assert info.value.stage == "import" and isinstance(info.value.cause, ImportError)
    assert str(info.value).startswith("CuPy is not importable (ModuleNotFoundError: ")
    with pytest.raises(RuntimeError) as err:
        cuda_backend(settings)
    assert type(err.value) is RuntimeError and str(err.value) == str(info.value)
    backend = select_backend(settings)
    assert backend.name == "cpu" and backend.reason == str(info.value)
    assert gpu_status(settings) == {"available": False, "backend": "cpu",
                                    "reason": "CuPy is not importable (ModuleNotFoundError)"}


def test_cupy_cannot_count(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(RuntimeError("cudaErrorNoDevice")))
    with pytest.raises(CudaUnavailable) as info:
        cuda_device_count()
    assert info.value.stage == "count" and str(info.value) == "no CUDA device visible (cudaErrorNoDevice)"
    with pytest.raises(RuntimeError, match=r"^no CUDA device visible \(cudaErrorNoDevice\)$"):
        cuda_backend(settings)
    assert gpu_status(settings)["reason"] == "no CUDA device visible (cudaErrorNoDevice)"


def test_zero_devices(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(0))
    assert cuda_device_count() == 0
    with pytest.raises(RuntimeError, match=r"^no CUDA device visible$"):
        cuda_backend(settings)
    assert gpu_status(settings)["reason"] == "GPU_DEVICE=0 but 0 device(s) visible"


def test_devices(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    cupy = fake_cupy(2)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    assert cuda_device_count() == 2
    backend = cuda_backend(settings)
    assert (backend.name, backend.xp, backend.device, backend.memory_budget) == ("cuda", cupy, 0, 4 * GIB)
    status = gpu_status(settings)
    assert status["available"] is True and status["device_count"] == 2 and status["name"] == "Fake GPU"
    assert status["memory"] == {"total": 8 * GIB, "free": 6 * GIB, "used": 2 * GIB}
    assert status["compute_capability"] == "9.0" and status["cuda_runtime_version"] == 12040
    with pytest.raises(RuntimeError, match="GPU_DEVICE=3 but only 2"):
        cuda_backend(Settings(backend="auto", gpu_device=3))
    assert select_backend(Settings(backend="cpu")).xp is np
