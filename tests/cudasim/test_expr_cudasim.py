"""Expression strategies on the CUDA backend (kernel under the simulator) equal the built-ins.

Only collected when NUMBA_ENABLE_CUDASIM=1 (see conftest.py); tests/test_cudasim.py runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpu_backtest.core.backend import select_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import Engine
from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.plugins.manager import default_registry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from expr_cases import CASES


@pytest.mark.parametrize("name", ["sma_crossover", "rsi_reversion", "bollinger_reversion"])
def test_expression_equals_builtin_on_cuda(name: str) -> None:
    settings = Settings.from_env({})
    engine = Engine(settings, select_backend(settings, "cuda"), default_registry())
    doc, grid = CASES[name]
    data = gbm_panel_frame(2, 80, seed=int(np.random.default_rng().integers(2**31)))
    base = {"params": {k: v[:2] for k, v in grid.items()}, "execution": {"direction": "both"},
            "output": {"top_k": 2, "trades": True}}
    builtin = engine.run({**base, "strategy": name}, data)
    expr = engine.run({**base, "strategy": doc}, data)
    assert expr.info["backend"] == "cuda"
    pd.testing.assert_frame_equal(builtin.table, expr.table)
    assert [d["trades"] for d in builtin.details] == [d["trades"] for d in expr.details]
