"""GPU status: what ``GET /gpu/status`` reports about the device the engine computes on.

On a machine with a usable CUDA device: backend, device name, compute capability, memory
total/used/free, utilisation (NVML through nvidia-ml-py, when installed) and the CUDA
runtime version. Without one: ``{"available": false, "backend": "cpu", "reason": …}``.
"""

from __future__ import annotations

from typing import Any

from .config import Settings


def gpu_status(settings: Settings | None = None) -> dict[str, Any]:
    """The status document; never raises (a failure is reported as the reason)."""
    from .backend import CudaUnavailable, cuda_device_count  # lazily: this module stays light

    settings = settings or Settings.from_env()
    if settings.backend == "cpu":
        return {"available": False, "backend": "cpu", "reason": "GPU_BACKTEST_BACKEND=cpu"}
    try:
        n = cuda_device_count()
    except CudaUnavailable as exc:
        reason = f"CuPy is not importable ({type(exc.cause).__name__})" if exc.stage == "import" else str(exc)
        return {"available": False, "backend": "cpu", "reason": reason}
    import cupy  # imported by the probe: this only binds the name

    if n == 0 or settings.gpu_device >= n:
        return {"available": False, "backend": "cpu",
                "reason": f"GPU_DEVICE={settings.gpu_device} but {n} device(s) visible"}
    dev = cupy.cuda.Device(settings.gpu_device)
    props = cupy.cuda.runtime.getDeviceProperties(settings.gpu_device)
    with dev:
        free, total = cupy.cuda.runtime.memGetInfo()
    name = props.get("name", b"")
    out: dict[str, Any] = {
        "available": True,
        "backend": "cuda",
        "device": settings.gpu_device,
        "device_count": n,
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": f"{props.get('major')}.{props.get('minor')}",
        "memory": {"total": int(total), "free": int(free), "used": int(total - free)},
        "memory_limit_fraction": settings.gpu_memory_limit,
        "cuda_runtime_version": cupy.cuda.runtime.runtimeGetVersion(),
        "utilization": None,
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(settings.gpu_device)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            out["utilization"] = {"gpu_percent": util.gpu, "memory_percent": util.memory}
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # nvidia-ml-py missing or NVML unavailable
        out["utilization_error"] = f"{type(exc).__name__}: {exc}"
    return out
