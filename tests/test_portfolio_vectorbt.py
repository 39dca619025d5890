"""The portfolio kernel equals vectorbt's cash-sharing target-percent rebalancing on fixed examples.

`vbt.Portfolio.from_orders(close, size=W, size_type="targetpercent", group_by=True,
cash_sharing=True, call_seq="auto", ...)` is vectorbt's version of docs/semantics.md
"Portfolio mode" with fill at close: sells first, buys cut to the cash left (with fees and a
fixed fee, a buy that does not fit is cut to `(cash − fixed_fee) / (F × (1 + fees))`, as ours).
Rule differences, not exercised here: a NaN weight in vectorbt means "no order" for that
symbol, ours keeps the earlier target in force; vectorbt has no NaN-price gaps rule of ours
(held, marked at the last price) and no `min_trade` (its `min_size` is in units).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_portfolio_reference as tp

from gpu_backtest.core.simulate import portfolio_layout as P

vbt = pytest.importorskip("vectorbt")


def example() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.03, (12, 3)), axis=0)) * np.array([1.0, 2.0, 0.5])
    weights = np.full((12, 3), np.nan)
    weights[0] = [0.3, 0.3, 0.4]   # sums to 1: with fees the last buy is cut
    weights[4] = [0.6, 0.1, 0.3]
    weights[8] = [0.0, 0.5, 0.7]   # sums to 1.2: the buys are cut by the cash
    return close, weights


@pytest.mark.parametrize("costs", [{"fees": 0.001}, {"fees": 0.001, "fixed_fee": 2.0, "slippage": 0.001}])
def test_portfolio_kernel_equals_vectorbt_targetpercent(costs: dict) -> None:
    close, weights = example()
    case = tp.one_column(close, weights, ~np.isnan(weights).all(axis=1), init_cash=10_000.0, **costs)
    opt = case.opt
    run = tp.run_kernel(case)
    acc, equity = run.acc, run.equity
    tp.assert_matches_reference(case)
    pf = vbt.Portfolio.from_orders(
        pd.DataFrame(close), size=pd.DataFrame(weights), size_type="targetpercent",
        group_by=True, cash_sharing=True, call_seq="auto", init_cash=opt.init_cash,
        fees=opt.fees, fixed_fees=opt.fixed_fee, slippage=opt.slippage, freq="1D",
    )
    np.testing.assert_allclose(equity[:, 0], pf.value().to_numpy(), rtol=1e-10)
    assert int(acc[0, P.PA_N_ORDERS]) == int(pf.orders.count())
