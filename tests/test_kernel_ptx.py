"""The single-asset kernel compiles for a real GPU: `simulate_column` lowered to PTX by numba.cuda.

Needs libNVVM, not a GPU (skipped where NVVM is missing or under the CUDA simulator, which
never compiles): catches device-unsupported constructs the simulator and the CPU build accept,
such as a shared `orders.py` / `accumulators.py` function that does not inline.
"""

from __future__ import annotations

import os

import pytest


def test_single_asset_device_function_compiles_to_ptx() -> None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("the CUDA simulator does not compile")
    from numba import cuda, types

    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as exc:  # no CUDA toolkit on this machine
        pytest.skip(f"libNVVM unavailable: {exc}")
    from gpu_backtest.core.simulate.kernel import simulate_column

    # the GPU backend hands the kernel row-major (C-contiguous) arrays
    f1, f2, f3 = types.float64[::1], types.float64[:, ::1], types.float64[:, :, ::1]
    i1, i2, b2 = types.int64[::1], types.int64[:, ::1], types.boolean[:, ::1]
    sig = (types.int64, f2, f2, f2, f2, i1, b2, b2, b2, b2, f1, i1, f2, f2, f2, f3, i1, f3, f3, f3, i2, f2)
    ptx, _ = cuda.compile_ptx(simulate_column, sig, device=True, cc=(9, 0))
    assert ".func" in ptx
    # the shared device functions are inlined: the only function in the module is the kernel's
    assert ptx.count(".func") == 1
