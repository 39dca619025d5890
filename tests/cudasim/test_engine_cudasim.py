"""The whole engine on the CUDA backend (kernel under the simulator) equals the CPU engine,
and a sweep 4× larger than the memory budget runs in chunks with identical results.

Only collected when NUMBA_ENABLE_CUDASIM=1 (see conftest.py); tests/test_cudasim.py runs it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gpu_backtest.core.backend import cpu_backend, select_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import BYTES_PER_CELL, BYTES_PER_CELL_SERIES, Engine
from gpu_backtest.core.synthetic import gbm_panel_frame

SPEC = {
    "strategy": "sma_crossover",
    "params": {"fast": [3, 5], "slow": [8, 12]},
    "costs": {"fees": 0.001, "slippage": 0.0005},
    "execution": {"direction": "both", "sl_stop": 0.03, "fill": "next_open"},
    "output": {"top_k": 3},
}


def frame() -> pd.DataFrame:
    return gbm_panel_frame(3, 60, seed=int(np.random.default_rng().integers(2**31)))


def test_cuda_backend_is_the_simulator() -> None:
    be = select_backend(Settings.from_env({}), "cuda")
    assert be.name == "cuda" and be.simulated and be.xp is np


def test_cuda_engine_equals_cpu_engine_and_chunks() -> None:
    settings = Settings.from_env({})
    data = frame()
    cpu = Engine(settings, cpu_backend(settings)).run(SPEC, data)
    gpu_be = select_backend(settings, "cuda")
    n_cols = 3 * 4
    # a budget of a quarter of the sweep: the run must take at least 4 chunks
    gpu_be.memory_budget = (60 * (BYTES_PER_CELL + BYTES_PER_CELL_SERIES) * n_cols) // 4
    gpu = Engine(settings, gpu_be).run(SPEC, data)
    assert gpu.info["backend"] == "cuda" and gpu.info["chunks"] >= 4 and cpu.info["chunks"] == 1
    pd.testing.assert_frame_equal(gpu.table, cpu.table, rtol=1e-9, atol=1e-12)
    for a, b in zip(gpu.details, cpu.details, strict=True):
        assert a["column"] == b["column"] and a["trades"] == b["trades"]
        np.testing.assert_allclose(a["equity"]["value"], b["equity"]["value"], rtol=1e-12)
