"""A walk-forward with the CUDA backend (kernel under the simulator) equals the slow reference
(tests/walkforward_reference.py: plain loops over run_backtest on the CPU).

Only collected when NUMBA_ENABLE_CUDASIM=1 (see conftest.py); tests/test_cudasim.py runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from walkforward_reference import reference_walk_forward

from gpu_backtest.core.backend import select_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import Engine
from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.plugins.manager import default_registry

GRID = {"fast": [3, 5], "slow": [8, 12]}


def test_walk_forward_cuda_equals_reference() -> None:
    frame = gbm_panel_frame(2, 90, seed=int(np.random.default_rng().integers(2**31)))
    spec = {"strategy": "sma_crossover", "params": GRID, "metrics": {"periods_per_year": 252},
            "costs": {"fees": 0.001}, "execution": {"direction": "both"},
            "validation": {"train": 40, "test": 20, "anchored": False, "choose": "per_symbol"}}
    settings = Settings.from_env({})
    res = Engine(settings, select_backend(settings, "cuda"), default_registry()).run(spec, frame)
    assert res.info["backend"] == "cuda"
    wf = res.info["walk_forward"]
    ref = reference_walk_forward(spec, frame, GRID)
    assert wf["n_folds"] == len(ref["folds"]) == 3
    for got, want in zip(wf["folds"], ref["folds"], strict=True):
        assert got["test_start"] == want["times"][2].isoformat()
        for g, w in zip(got["symbols"], want["rows"], strict=True):
            assert g["params"] == w["params"]
            sharpe = g["out_of_sample"]["sharpe"]
            assert (np.nan if sharpe is None else sharpe) == pytest.approx(w["oos"]["sharpe"], rel=1e-9, nan_ok=True)
    for s in wf["symbols"]:
        np.testing.assert_allclose(s["equity"]["value"], ref["curves"][s["symbol"]], rtol=1e-10)
