"""The numba.cuda build of the portfolio kernel, run under the CUDA simulator, agrees with the
reference (tests/portfolio_reference.py) exactly as tests/test_portfolio_reference.py checks
the CPU build. Only collected when NUMBA_ENABLE_CUDASIM=1 (see conftest.py).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import test_portfolio_reference as tp

from gpu_backtest.core.simulate import portfolio_layout as P
from gpu_backtest.core.simulate.portfolio_cuda import run_portfolio_cuda


def run_cuda(case: tp.PortfolioCase):
    fopts, iopts = tp.pack(case.opt)
    return run_portfolio_cuda(np, case.open_, case.close, case.weights, case.rebalance.astype(np.bool_), fopts, iopts)


def assert_cuda_matches_reference(case: tp.PortfolioCase) -> None:
    acc, equity = run_cuda(case)
    scale = case.opt.init_cash
    for c in range(case.rebalance.shape[1]):
        ref = tp.reference(case, c)
        np.testing.assert_allclose(equity[:, c], ref.equity, rtol=tp.RTOL, atol=tp.RTOL * scale)
        assert int(acc[c, P.PA_N_ORDERS]) == len(ref.orders)
        assert acc[c, P.PA_COSTS] == pytest.approx(ref.costs, rel=tp.RTOL, abs=tp.RTOL * scale)
        assert acc[c, P.PA_TURNOVER] == pytest.approx(ref.turnover, rel=tp.RTOL, abs=tp.RTOL * scale)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tp.portfolio_cases(max_sym=4, max_bars=30, max_cols=3))
def test_cuda_portfolio_kernel_matches_reference(case: tp.PortfolioCase) -> None:
    assert_cuda_matches_reference(case)


def test_cuda_portfolio_cut_buy_by_hand() -> None:
    case = tp.one_column([[10, 20]], [[0.6, 0.6]], [1], init_cash=1_000.0, fees=0.01)
    acc, equity = run_cuda(case)
    assert equity[0, 0] == pytest.approx(600.0 + 394.0 / 20.2 * 20.0)
    assert int(acc[0, P.PA_N_ORDERS]) == 2
