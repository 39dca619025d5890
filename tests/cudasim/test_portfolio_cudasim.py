"""The numba.cuda build of the portfolio kernel, run under the CUDA simulator, agrees with the
reference (tests/portfolio_reference.py) exactly as tests/test_portfolio_reference.py checks
the CPU build: equity, accumulator slots and order records, with shorts, stops and delistings.
Only collected when NUMBA_ENABLE_CUDASIM=1 (see conftest.py).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import test_portfolio_reference as tp

from gpu_backtest.core.simulate import portfolio_layout as P
from gpu_backtest.core.simulate.portfolio_cuda import run_portfolio_cuda

NAN = np.nan


def run_cuda(case: tp.PortfolioCase, max_records: int = 0):
    return run_portfolio_cuda(np, case.open_, case.close, case.weights, case.rebalance, case.ended, case.opt,
                              max_records=max_records)


def assert_cuda_matches_reference(case: tp.PortfolioCase, max_records: int) -> None:
    run = run_cuda(case, max_records)
    for c in range(case.weights.shape[2]):
        ref = tp.reference(case, c)
        orders = None if run.orders is None else run.orders[c]
        n = None if run.n_orders is None else run.n_orders[c]
        tp.assert_column_matches(run.acc[c], run.equity[:, c], orders, n, ref, case.opt.init_cash, c)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tp.portfolio_cases(max_sym=4, max_bars=30, max_cols=3), st.sampled_from([0, 200]))
def test_cuda_portfolio_kernel_matches_reference(case: tp.PortfolioCase, max_records: int) -> None:
    assert_cuda_matches_reference(case, max_records)


def test_cuda_portfolio_cut_buy_by_hand() -> None:
    case = tp.one_column([[10, 20]], [[0.6, 0.6]], [1], init_cash=1_000.0, fees=0.01)
    run = run_cuda(case)
    assert run.equity[0, 0] == pytest.approx(600.0 + 394.0 / 20.2 * 20.0)
    assert int(run.acc[0, P.PA_N_ORDERS]) == 2


def test_cuda_portfolio_stop_short_delisting_by_hand() -> None:
    case = tp.one_column([[10, 10], [8.9, 12], [9, NAN]], [[0.5, -0.4], [NAN, NAN], [NAN, NAN]], [1, 0, 0],
                         ended=[-1, 2], init_cash=1_000.0, sl_stop=0.1, shorts=True)
    assert_cuda_matches_reference(case, 10)
    run = run_cuda(case, 10)
    reasons = [P.ORDER_REASONS[int(r)] for r in run.orders[0, : run.n_orders[0], P.O_REASON]]
    assert reasons == ["rebalance", "rebalance", "stop_loss", "stop_loss"]


def test_cuda_portfolio_without_rebalance_rows() -> None:
    case = tp.one_column([[10], [11]], [[NAN], [NAN]], [0, 0], init_cash=1_000.0)
    run = run_cuda(case)
    assert run.equity[:, 0].tolist() == [1_000.0, 1_000.0]
