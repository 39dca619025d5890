"""Array backend: numpy + the njit kernel on the CPU, or CuPy + the numba.cuda kernel on a GPU.

The engine's code path is the same for both; only the `Backend` object handed down differs
(the dask-cuda idea: GPU-ness is configuration). GPU packages are imported lazily, so nothing
breaks when they are absent. ``GPU_BACKTEST_BACKEND`` = auto | cpu | cuda.

`cuda_device_count` is the one CuPy device probe: the backend, ``GET /gpu/status``
(core/gpustatus.py) and the Dask cluster start all ask it how many devices there are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .config import Settings
from .errors import ConfigError

log = logging.getLogger(__name__)


class CudaUnavailable(RuntimeError):
    """CuPy cannot count CUDA devices. ``stage``: ``"import"`` (CuPy is not importable, e.g. not
    installed or its CUDA libraries are missing) or ``"count"`` (the runtime call failed, e.g. no
    driver); ``cause``: the exception. The message says which, with the cause."""

    def __init__(self, stage: Literal["import", "count"], cause: BaseException) -> None:
        self.stage = stage
        self.cause = cause
        if stage == "import":
            message = f"CuPy is not importable ({type(cause).__name__}: {cause})"
        else:
            message = f"no CUDA device visible ({cause})"
        super().__init__(message)


def cuda_device_count() -> int:
    """How many CUDA devices CuPy sees (0 is possible). CuPy is imported here, lazily.

    Raises `CudaUnavailable` when CuPy cannot be imported or cannot count (never anything else).
    """
    try:
        import cupy
    except Exception as exc:  # ImportError, or CUDA libraries missing
        raise CudaUnavailable("import", exc) from None
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise CudaUnavailable("count", exc) from None


@dataclass
class Backend:
    """What the engine computes with: ``xp`` array module, kernel launcher, chunk memory budget."""

    name: str  # "cpu" or "cuda"
    xp: Any
    memory_budget: int  # bytes one chunk of columns may use
    device: int | None = None
    reason: str = ""
    simulated: bool = False  # CUDA kernel under NUMBA_ENABLE_CUDASIM (numpy arrays)

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Move a host array to the backend."""
        return self.xp.asarray(a, dtype=dtype)

    def kernel_layout(self, a: Any) -> Any:
        """``a`` (T, N) in the layout the kernel reads fastest: column-major on the CPU (one
        column's bars contiguous for its loop), row-major on a GPU (coalesced across threads)."""
        if self.name == "cpu":
            return np.asfortranarray(a)
        return self.xp.ascontiguousarray(a)

    def to_host(self, a: Any) -> np.ndarray:
        """Move a backend array to the host."""
        if self.xp is np:
            return np.asarray(a)
        return self.xp.asnumpy(a)

    def simulate(self, *args: Any, blocks_out: Any = None, n_blocks: int = 0, tails_out: Any = None,
                 n_tail: int = 0, fused: Any = None) -> Any:
        """Run the simulation kernel over all columns (arguments as `cpu.simulate`).

        ``n_blocks`` must equal the ``I_N_BLOCKS`` slot of the iopts passed, with ``blocks_out``
        its (C, B, N_BLOCK_ACC) buffer when B > 0; ``n_tail`` the ``I_N_TAIL`` slot, with
        ``tails_out`` its (C, 2, m) buffer when m > 0; ``fused`` the fused form's (bank, idx, w)
        when the ``I_FUSED`` slot is set.
        """
        if self.name == "cpu":
            from .simulate import cpu

            return cpu.simulate(*args, blocks_out=blocks_out, tails_out=tails_out, fused=fused)
        from .simulate import cuda

        return cuda.simulate(self.xp, *args, blocks_out=blocks_out, n_blocks=n_blocks, tails_out=tails_out,
                             n_tail=n_tail, fused=fused)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""
        if self.name == "cuda" and not self.simulated:
            self.xp.cuda.runtime.deviceSynchronize()


def cpu_backend(settings: Settings | None = None, reason: str = "") -> Backend:
    """The CPU backend with the chunk budget from GPU_BACKTEST_CPU_MEMORY_LIMIT."""
    budget = (settings or Settings()).cpu_memory_limit
    return Backend("cpu", np, budget, None, reason or "CPU backend selected")


def cuda_backend(settings: Settings) -> Backend:
    """The CUDA backend on GPU_DEVICE; raises RuntimeError with the reason when unavailable."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        # The CUDA kernel on the numba simulator: numpy arrays, small budget to force chunking paths.
        return Backend("cuda", np, settings.cpu_memory_limit, settings.gpu_device,
                       "NUMBA_ENABLE_CUDASIM=1: CUDA kernel on the simulator", simulated=True)
    try:
        n = cuda_device_count()
    except CudaUnavailable as exc:
        raise RuntimeError(str(exc)) from None
    import cupy  # imported by the probe: this only binds the name

    if n == 0:
        raise RuntimeError("no CUDA device visible")
    if settings.gpu_device >= n:
        raise RuntimeError(f"GPU_DEVICE={settings.gpu_device} but only {n} device(s) visible")
    cupy.cuda.Device(settings.gpu_device).use()
    free, total = cupy.cuda.runtime.memGetInfo()
    budget = int(min(free, total * settings.gpu_memory_limit))
    return Backend("cuda", cupy, budget, settings.gpu_device, f"CUDA device {settings.gpu_device}")


def select_backend(settings: Settings | None = None, name: str | None = None) -> Backend:
    """auto: CUDA when CuPy sees a device, else CPU with the reason logged; or as named."""
    settings = settings or Settings.from_env()
    choice = name or settings.backend
    if choice == "cpu":
        return cpu_backend(settings)
    try:
        return cuda_backend(settings)
    except RuntimeError as exc:
        if choice == "cuda":
            raise ConfigError(f"GPU_BACKTEST_BACKEND=cuda but {exc}", {"variable": "GPU_BACKTEST_BACKEND"}) from None
        log.info("using the CPU backend: %s", exc)
        return cpu_backend(settings, reason=str(exc))
