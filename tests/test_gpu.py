"""GPU parity on a real device (marked ``gpu``; skipped without CuPy and a CUDA device).

The CuPy + numba.cuda engine must give the CPU engine's numbers to 1e-9 relative (float64),
with every output slot poisoned with NaN first so an unwritten result cannot pass.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpu_backtest.core.backend import cpu_backend, select_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import Engine
from gpu_backtest.core.simulate import cpu as cpu_build
from gpu_backtest.core.simulate import layout as L
from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.plugins.manager import default_registry

cupy = pytest.importorskip("cupy")
pytestmark = pytest.mark.gpu
try:
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device", allow_module_level=True)
except Exception:  # pragma: no cover - driver missing
    pytest.skip("no CUDA device", allow_module_level=True)


def test_kernel_parity_with_poisoned_outputs() -> None:
    from gpu_backtest.core.simulate import cuda as cuda_build

    rng = np.random.default_rng()
    T, S, C = 500, 7, 300
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (T, S)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, (T, S)))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    close[rng.random((T, S)) < 0.02] = np.nan
    sym = rng.integers(0, S, C).astype(np.int64)
    sig = [rng.random((T, C)) < 0.05 for _ in range(4)]
    f = np.zeros(L.N_FOPTS)
    f[[L.F_INIT_CASH, L.F_FEES, L.F_SIZE, L.F_SL_STOP, L.F_TSL_STOP]] = [1e5, 0.001, 0.9, 0.05, 0.1]
    i = np.zeros(L.N_IOPTS, np.int64)
    i[[L.I_FILL, L.I_DIRECTION, L.I_FRACTIONAL, L.I_WANT_RETURNS, L.I_RECORD]] = [1, 2, 1, 1, 1]
    bufs = lambda xp: (xp.full((T, C), xp.nan), xp.full((T, C), xp.nan),  # noqa: E731
                       xp.full((C, T + 1, L.N_TFIELDS), xp.nan), xp.full(C, -1, dtype=xp.int64))
    h = bufs(np)
    acc_cpu = cpu_build.simulate(open_, high, low, close, sym, *sig, f, i, *h)
    d = bufs(cupy)
    dev = [cupy.asarray(a) for a in (open_, high, low, close, sym, *sig, f, i)]
    acc_gpu = cuda_build.simulate(cupy, *dev, *d, acc=cupy.full((C, L.N_ACC), cupy.nan))
    np.testing.assert_allclose(cupy.asnumpy(acc_gpu), acc_cpu, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert not np.isnan(cupy.asnumpy(acc_gpu)[:, L.A_FINAL_EQUITY]).any()
    for hb, db in zip(h, d, strict=True):
        np.testing.assert_allclose(cupy.asnumpy(db), hb, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_kernel_block_sums_parity() -> None:
    from gpu_backtest.core.simulate import cuda as cuda_build

    rng = np.random.default_rng()
    T, S, C, B = 700, 5, 200, 16
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (T, S)), axis=0))
    open_, high, low = close * 1.001, close * 1.01, close * 0.99
    sym = rng.integers(0, S, C).astype(np.int64)
    sig = [rng.random((T, C)) < 0.05 for _ in range(4)]
    f = np.zeros(L.N_FOPTS)
    f[[L.F_INIT_CASH, L.F_FEES, L.F_SIZE]] = [1e5, 0.001, 1.0]
    i = np.zeros(L.N_IOPTS, np.int64)
    i[[L.I_DIRECTION, L.I_FRACTIONAL, L.I_N_BLOCKS]] = [2, 1, B]
    dummies = lambda xp: (xp.zeros((1, 1)), xp.zeros((1, 1)), xp.zeros((1, 1, 1)), xp.zeros(1, xp.int64))  # noqa: E731
    blocks_cpu = np.full((C, B, L.N_BLOCK_ACC), np.nan)
    cpu_build.simulate(open_, high, low, close, sym, *sig, f, i, *dummies(np), blocks_out=blocks_cpu)
    dev = [cupy.asarray(a) for a in (open_, high, low, close, sym, *sig, f, i)]
    blocks_gpu = cupy.full((C, B, L.N_BLOCK_ACC), cupy.nan)
    cuda_build.simulate(cupy, *dev, *dummies(cupy), blocks_out=blocks_gpu, n_blocks=B)
    np.testing.assert_allclose(cupy.asnumpy(blocks_gpu), blocks_cpu, rtol=1e-9, atol=1e-12)


def test_engine_parity_and_chunking() -> None:
    settings = Settings.from_env({})
    data = gbm_panel_frame(20, 600, seed=int(np.random.default_rng().integers(2**31)))
    spec = {"strategy": "sma_crossover", "params": {"fast": {"start": 5, "stop": 30, "step": 5},
                                                    "slow": {"start": 40, "stop": 120, "step": 20}},
            "execution": {"direction": "both", "tp_stop": 0.2}, "costs": {"fees": 0.0005}}
    cpu = Engine(settings, cpu_backend(settings), default_registry()).run(spec, data)
    be = select_backend(settings, "cuda")
    big = Engine(settings, be, default_registry()).run(spec, data)
    pd.testing.assert_frame_equal(big.table, cpu.table, rtol=1e-9, atol=1e-12)
    be.memory_budget = max(1, be.memory_budget // 10**6)  # force many chunks
    small = Engine(settings, be, default_registry()).run(spec, data)
    assert small.info["chunks"] >= 4
    pd.testing.assert_frame_equal(small.table, big.table, rtol=1e-12, atol=0)
