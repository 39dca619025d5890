"""Expression strategies equal the built-ins they restate: same ranked table, same trades (CPU).

Random GBM panels (some with missing bars); both directions traded so the short signals count.
The portfolio form ``-pct_change(close, lb)`` equals the built-in short_term_reversal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from expr_cases import CASES

from gpu_backtest.core.backend import cpu_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import BYTES_PER_CELL, Engine
from gpu_backtest.core.expr import expression_strategy
from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.plugins.manager import default_registry


@pytest.fixture(scope="module")
def engine() -> Engine:
    settings = Settings.from_env({})
    return Engine(settings, cpu_backend(settings), default_registry())


def _data(seed: int, gaps: bool) -> pd.DataFrame:
    df = gbm_panel_frame(4, 300, seed=seed)
    if gaps:  # a few missing closes: indicators restart, crossings see NaN
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(df), size=12, replace=False)
        df.loc[df.index[idx], "close"] = np.nan
    return df


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.table, b.table)
    assert [d["column"] for d in a.details] == [d["column"] for d in b.details]
    assert [d["trades"] for d in a.details] == [d["trades"] for d in b.details]
    assert any(d["trades"] for d in a.details)  # the comparison is not vacuous


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(("seed", "gaps"), [(11, False), (int(np.random.default_rng().integers(2**31)), True)])
def test_expression_equals_builtin(engine: Engine, name: str, seed: int, gaps: bool) -> None:
    doc, grid = CASES[name]
    data = _data(seed, gaps)
    base = {"params": grid, "execution": {"direction": "both"}, "costs": {"fees": 0.001},
            "output": {"top_k": 3, "trades": True}}
    builtin = engine.run({**base, "strategy": name}, data)
    expr = engine.run({**base, "strategy": doc}, data)
    _same(builtin, expr)
    assert expr.info["strategy"] == doc.get("name", "expression")
    src = expr.info["strategy_source"]
    assert src["kind"] == "expression" and len(src["digest"]) == 64 and src["text"]["signals"] == doc["signals"]


def test_portfolio_score_equals_short_term_reversal(engine: Engine) -> None:
    data = gbm_panel_frame(12, 260, seed=5)
    doc = {"score": "-pct_change(close, lookback)",
           "params": {"lookback": {"type": "int", "default": 5}, "n": {"type": "int", "default": 3, "min": 1}}}
    base = {"params": {"lookback": [3, 5, 10], "n": [2, 4]}, "portfolio": {"rebalance": "1w"},
            "output": {"top_k": 2, "trades": True}}
    builtin = engine.run({**base, "strategy": "short_term_reversal"}, data)
    expr = engine.run({**base, "strategy": doc}, data)
    assert expr.info["mode"] == "portfolio"
    pd.testing.assert_frame_equal(builtin.table, expr.table)
    assert [d["trades"] for d in builtin.details] == [d["trades"] for d in expr.details]


def test_portfolio_rank_zscore_and_weights_run(engine: Engine) -> None:
    data = gbm_panel_frame(6, 200, seed=9)
    for doc in ({"score": "rank(pct_change(close, lb)) + zscore(sma(close, 5))",
                 "params": {"lb": {"type": "int", "default": 20}}},
                {"weights": "where(cross_above(close, sma(close, lb)), 0.1, 0)",
                 "params": {"lb": {"type": "int", "default": 20}}}):
        res = engine.run({"strategy": doc, "params": {"lb": [10, 20]}, "portfolio": {"rebalance": "1w"}}, data)
        assert len(res.table) == 2 and res.info["mode"] == "portfolio"


def test_memory_estimate_grows_with_the_expression(engine: Engine) -> None:
    """A sweep sizes its chunks by the expression's blocks: the simple crossover costs what the
    built-in costs per cell; one holding many gathered indicators gets smaller chunks."""
    simple = expression_strategy(CASES["sma_crossover"][0])
    assert simple.bytes_per_cell == BYTES_PER_CELL
    big = {"signals": {"entry": "cross_above(sma(close, a), sma(close, b)) and ema(close, a) > ema(close, b) "
                                "and rsi(close, a) > rsi(close, b) and stdev(close, a) > stdev(close, b)",
                       "exit": "cross_below(sma(close, a), sma(close, b))"},
           "params": {"a": {"type": "int", "default": 5}, "b": {"type": "int", "default": 20}}}
    strat = expression_strategy(big)
    assert strat.bytes_per_cell > BYTES_PER_CELL + 40
    data = gbm_panel_frame(6, 200, seed=2)
    spec = {"strategy": big, "params": {"a": [3, 5], "b": [10, 20]}}
    budget = engine.backend.memory_budget
    try:
        engine.backend.memory_budget = 200 * BYTES_PER_CELL * 12  # two symbols' 4 combinations per chunk at 40 B
        res = engine.run(spec, data)
    finally:
        engine.backend.memory_budget = budget
    assert res.info["chunks"] > 3
