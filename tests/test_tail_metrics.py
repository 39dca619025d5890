"""Quantile metrics without the (T, C) return series (issue 18): the kernel keeps per column the m
smallest and m largest returns in two heaps; var_95, cvar_95 and tail_ratio from them equal numpy's
percentile / sort on the whole series exactly, on random kernel runs and at every series length."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_cases as sc
import tail_cases as tc

from gpu_backtest import run_backtest
from gpu_backtest.core import metrics as M
from gpu_backtest.core.simulate import cpu
from gpu_backtest.core.synthetic import gbm_panel_frame


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc.cases(max_bars=150, max_cols=5), st.integers(1, 40))
def test_heaps_hold_the_smallest_and_largest_returns(case, n_tail):
    out, tails = tc.run_tails(cpu.simulate, case, min(n_tail, case.n_bars))
    tc.assert_tails_exact(out, tails)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc.cases(max_bars=150, max_cols=4))
def test_metrics_from_heaps_equal_whole_series(case):
    out, tails = tc.run_tails(cpu.simulate, case, M.tail_size(case.n_bars))
    tc.assert_tails_exact(out, tails)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 19, 20, 21, 39, 40, 41, 101, 252, 2519, 2520, 2521, 10_007])
def test_tail_metrics_equal_numpy_at_every_length(n):
    rng = np.random.default_rng(n)
    x = rng.standard_t(3, size=(n, 6)) * 0.01
    x[:, 2] = np.round(x[:, 2], 3)  # ties
    x[:, 4] = 0.01  # constant
    m = M.tail_size(n)
    assert 1 <= m <= n and (n < 40 or m <= 0.06 * n + 2)
    s = np.sort(x, axis=0)
    tails = np.stack([s[:m].T, -s[::-1][:m].T], axis=1)
    got, want = M.tail_metrics(tails, n), M.series_metrics(x, 252.0)
    for k in ("var_95", "tail_ratio"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    np.testing.assert_allclose(got["cvar_95"], want["cvar_95"], rtol=1e-14, atol=1e-300)


def test_sweep_table_equals_record_mode_details():
    frame = gbm_panel_frame(6, 700, seed=4)
    spec = {"strategy": "bollinger_reversion", "params": {"window": [10, 20, 30], "k": [1.5, 2.0]},
            "output": {"top_k": 36, "trades": False, "overfitting": None}}
    res = run_backtest(spec, frame, backend="cpu")
    by_col = {d["column"]: d["metrics"] for d in res.details}
    for _, row in res.table.iterrows():
        rec = by_col[int(row["column"])]
        for k in M.TAIL_METRICS:
            assert row[k] == pytest.approx(rec[k], rel=1e-12, abs=1e-15, nan_ok=True), k
