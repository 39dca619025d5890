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
from gpu_backtest.plugins.manager import default_registry

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
    cpu = Engine(settings, cpu_backend(settings), default_registry()).run(SPEC, data)
    gpu_be = select_backend(settings, "cuda")
    n_cols = 3 * 4
    # a budget of a quarter of the sweep: the run must take at least 4 chunks
    gpu_be.memory_budget = (60 * (BYTES_PER_CELL + BYTES_PER_CELL_SERIES) * n_cols) // 4
    gpu = Engine(settings, gpu_be, default_registry()).run(SPEC, data)
    assert gpu.info["backend"] == "cuda" and gpu.info["chunks"] >= 4 and cpu.info["chunks"] == 1
    pd.testing.assert_frame_equal(gpu.table, cpu.table, rtol=1e-9, atol=1e-12)
    for a, b in zip(gpu.details, cpu.details, strict=True):
        assert a["column"] == b["column"] and a["trades"] == b["trades"]
        np.testing.assert_allclose(a["equity"]["value"], b["equity"]["value"], rtol=1e-12)


def test_partition_task_on_the_cuda_backend_equals_cpu(tmp_path) -> None:
    """The cluster's partition task (load from the store → signals → kernel → metrics → piece)
    on a CUDA worker context equals the same task on a CPU context, piece for piece."""
    from gpu_backtest.core import artifacts
    from gpu_backtest.core.loaders import Calendar
    from gpu_backtest.core.marketdata import MarketDataStore
    from gpu_backtest.core.plan import DataSelection, Partition, RunPlan
    from gpu_backtest.core.spec import BacktestSpec, expand_grid
    from gpu_backtest.core.stages import calendar_stage, details_stage, partition_stage
    from gpu_backtest.core.worker import StageContext
    from gpu_backtest.plugins.manager import strategies

    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    frame = gbm_panel_frame(3, 60, seed=3)
    for sym, g in frame.groupby("symbol"):
        store.write("upload", str(sym), "1d", g.drop(columns="symbol"))
    symbols = tuple(sorted(frame["symbol"].unique()))
    spec = BacktestSpec.from_dict({**SPEC, "source": "upload"})
    known = strategies()
    grid = expand_grid(known["sma_crossover"], spec.params)
    ref = Engine(Settings.from_env({}), cpu_backend(), default_registry()).strategy_ref("sma_crossover")
    plan = RunPlan(strategy=ref,
                   spec=spec.to_dict(), grid={k: v.tolist() for k, v in grid.items()},
                   data=DataSelection("upload", "1d", True, symbols, None, None, None, root=str(tmp_path / "market"),
                                      files=tuple((s, store.entry("upload", s, "1d").file) for s in symbols)),
                   partitions=(Partition(0, 0, 3),), hash="h")
    task = plan.task(plan.partitions[0])
    cal = Calendar.build(calendar_stage(task), None)
    settings = Settings.from_env({})
    gpu_ctx = StageContext(settings, select_backend(settings, "cuda"), known)
    cpu_ctx = StageContext(settings, cpu_backend(settings), known)
    gpu = partition_stage(task, cal, str(tmp_path / "gpu"), 5, gpu_ctx)
    cpu = partition_stage(task, cal, str(tmp_path / "cpu"), 5, cpu_ctx)
    assert gpu.ran_on["backend"] == "cuda" and cpu.ran_on["backend"] == "cpu"
    a = pd.read_parquet(artifacts.job_dir(str(tmp_path), "gpu") + "/part-00000.parquet")
    b = pd.read_parquet(artifacts.job_dir(str(tmp_path), "cpu") + "/part-00000.parquet")
    pd.testing.assert_frame_equal(a, b, rtol=1e-9, atol=1e-12)
    one = plan.task(Partition(-1, 1, 2))
    (dg, _), (dc, _) = details_stage(one, cal, [0, 2], gpu_ctx), details_stage(one, cal, [0, 2], cpu_ctx)
    assert [d["trades"] for d in dg] == [d["trades"] for d in dc]


PORTFOLIO_SPEC = {
    "strategy": "short_term_reversal",
    "params": {"lookback": [3, 5, 8], "n": [1, 2]},
    "portfolio": {"rebalance": 4, "select": "long_short", "max_weight": 0.4},
    "costs": {"fees": 0.001, "slippage": 0.0005},
    "execution": {"sl_stop": 0.05, "fill": "next_open"},
    "output": {"top_k": 2},
}


def test_cuda_portfolio_engine_equals_cpu_in_chunks() -> None:
    """Portfolio mode through the engine: one simulated CUDA thread per combination, in chunks
    of combinations, equals the CPU engine (metrics, orders, trades, holdings)."""
    from gpu_backtest.core.portfolio_engine import BYTES_PER_BAR_COLUMN, BYTES_PER_ROW_CELL

    settings = Settings.from_env({})
    data = gbm_panel_frame(5, 60, seed=int(np.random.default_rng().integers(2**31)))
    cpu = Engine(settings, cpu_backend(settings), default_registry()).run(PORTFOLIO_SPEC, data)
    gpu_be = select_backend(settings, "cuda")
    gpu_be.memory_budget = 2 * (15 * 5 * BYTES_PER_ROW_CELL + 60 * BYTES_PER_BAR_COLUMN)  # 2 combinations a chunk
    gpu = Engine(settings, gpu_be, default_registry()).run(PORTFOLIO_SPEC, data)
    assert gpu.info["backend"] == "cuda" and gpu.info["chunks"] >= 3 and cpu.info["chunks"] == 1
    pd.testing.assert_frame_equal(gpu.table, cpu.table, rtol=1e-9, atol=1e-12)
    for a, b in zip(gpu.details, cpu.details, strict=True):
        assert a["column"] == b["column"] and a["orders"] == b["orders"] and a["holdings"] == b["holdings"]
        np.testing.assert_allclose(a["equity"]["value"], b["equity"]["value"], rtol=1e-12)


def test_cuda_fused_form_equals_array_form() -> None:
    data = frame()
    for strategy, params in (("sma_crossover", {"fast": [3, 5], "slow": [8, 12]}),
                             ("bollinger_reversion", {"window": [4, 8], "k": [0.5, 1.5]})):
        spec = {**SPEC, "strategy": strategy, "params": params}
        tables = []
        for fused in (True, False):
            settings = Settings(fused_signals=fused)
            be = select_backend(settings, "cuda")
            tables.append(Engine(settings, be, default_registry()).run(spec, data).table
                          .sort_values("column").reset_index(drop=True))
        pd.testing.assert_frame_equal(tables[0], tables[1])
