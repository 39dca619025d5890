"""The fused signal form (issue 18, core/fused.py): every built-in with a fused form gives the same
sweep table as its array form — long, short and both, with costs, stops and missing bars — and a
fused form that is wrong is seen (the switch really changes the path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpu_backtest import run_backtest
from gpu_backtest.core import indicators
from gpu_backtest.core.config import Settings
from gpu_backtest.core.fused import FusedLines
from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.plugins.manager import default_registry

CASES = [
    ("sma_crossover", {"fast": [2, 3, 5, 10], "slow": [8, 20, 30]}),
    ("ema_crossover", {"fast": [2, 5, 9], "slow": [12, 26]}),
    ("bollinger_reversion", {"window": [3, 5, 10, 20], "k": [0.25, 1.0, 2.0]}),
]


def _frame(seed: int) -> pd.DataFrame:
    f = gbm_panel_frame(7, 420, seed=seed)
    f.loc[f.sample(frac=0.03, random_state=seed).index, ["open", "high", "low", "close"]] = np.nan
    return f


def _table(spec: dict, frame: pd.DataFrame, fused: bool) -> pd.DataFrame:
    res = run_backtest(spec, frame, settings=Settings(fused_signals=fused), backend="cpu")
    return res.table.sort_values("column").reset_index(drop=True)


def test_every_fused_builtin_is_listed():
    have = {s.name for s in default_registry().strategies().values() if getattr(s, "fused", None) is not None}
    assert have == {name for name, _ in CASES}


@pytest.mark.parametrize("name,params", CASES)
@pytest.mark.parametrize("direction,seed", [("long", 1), ("short", 2), ("both", 3)])
def test_fused_equals_array_form(name, params, direction, seed):
    spec = {"strategy": name, "params": params, "costs": {"fees": 0.001, "slippage": 0.0005},
            "execution": {"direction": direction, "fill": "next_open" if seed % 2 else "close",
                          "sl_stop": 0.05 if seed == 3 else 0.0},
            "output": {"top_k": 0}}
    frame = _frame(seed)
    a, b = _table(spec, frame, True), _table(spec, frame, False)
    assert a["num_trades"].sum() > 0
    pd.testing.assert_frame_equal(a, b)


def test_a_wrong_fused_form_is_seen(monkeypatch):
    from gpu_backtest.plugins.strategies import sma_crossover as m

    def swapped(ctx):
        lines = FusedLines(ctx)
        fast = lines.per_combo("sma", lambda w: indicators.sma(ctx.xp, ctx.close, w), "fast")
        slow = lines.per_combo("sma", lambda w: indicators.sma(ctx.xp, ctx.close, w), "slow")
        return lines.signals((slow, fast), (fast, slow), order=ctx.order)

    spec = {"strategy": "sma_crossover", "params": {"fast": [3, 5], "slow": [20, 30]}, "output": {"top_k": 0}}
    frame = _frame(4)
    good = _table(spec, frame, True)
    monkeypatch.setattr(m.STRATEGY, "fused", swapped)
    assert not np.allclose(_table(spec, frame, True)["total_return"], good["total_return"])
    pd.testing.assert_frame_equal(_table(spec, frame, False), good)  # the array form is untouched
