"""The portfolio kernel equals vectorbt's cash-sharing target-percent rebalancing on fixed examples.

`vbt.Portfolio.from_orders(close, size=W, size_type="targetpercent", group_by=True,
cash_sharing=True, call_seq="auto", ...)` is vectorbt's version of docs/semantics.md
"Portfolio mode" with fill at close: the orders of a rebalance fill in ascending order of
`w × value − position × P` (sells first, the largest buy last), a buy that does not fit is cut
to the cash left, `(cash − fixed_fee) / (F × (1 + fees))`, as ours. The cut-order cases have
their largest buy on an early symbol, so a symbol-order rule would cut a different buy.
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


def vectorbt_run(close: np.ndarray, weights: np.ndarray, opt) -> vbt.Portfolio:
    return vbt.Portfolio.from_orders(
        pd.DataFrame(close), size=pd.DataFrame(weights), size_type="targetpercent",
        group_by=True, cash_sharing=True, call_seq="auto", init_cash=opt.init_cash,
        fees=opt.fees, fixed_fees=opt.fixed_fee, slippage=opt.slippage, freq="1D",
    )


def cut_order_example(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """5 symbols, 30 bars, a rebalance every 5 bars to weights summing to 1 whose largest weight is
    on symbol 0 or 1 (an early symbol), so with costs the buy vectorbt cuts is not the last symbol's."""
    rng = np.random.default_rng(seed)
    n_bars, n_sym = 30, 5
    close = rng.uniform(5.0, 200.0, n_sym) * np.exp(np.cumsum(rng.normal(0, 0.04, (n_bars, n_sym)), axis=0))
    weights = np.full((n_bars, n_sym), np.nan)
    for t in range(0, n_bars, 5):
        w = rng.dirichlet(np.ones(n_sym))
        big = int(rng.integers(0, 2))
        w[[big, int(np.argmax(w))]] = w[[int(np.argmax(w)), big]]  # the largest weight on symbol 0 or 1
        weights[t] = w
    return close, weights


def orders_set(bars, symbols, units) -> dict[tuple[int, int], float]:
    return {(int(b), int(s)): float(u) for b, s, u in zip(bars, symbols, units, strict=True)}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("costs", [{"fees": 0.001}, {"fees": 0.002, "fixed_fee": 1.5},
                                   {"fees": 0.001, "fixed_fee": 2.0, "slippage": 0.002}])
def test_cut_buy_is_vectorbts_largest_buy_not_the_last_symbol(seed: int, costs: dict) -> None:
    close, weights = cut_order_example(seed)
    case = tp.one_column(close, weights, ~np.isnan(weights).all(axis=1), init_cash=10_000.0, **costs)
    tp.assert_matches_reference(case, max_records=500)
    run = tp.run_kernel(case, max_records=500)
    pf = vectorbt_run(close, weights, case.opt)
    n = int(run.n_orders[0])
    rec = run.orders[0, :n]
    ours = orders_set(rec[:, P.O_BAR], rec[:, P.O_SYMBOL], rec[:, P.O_UNITS])
    vr = pf.orders.records
    theirs = orders_set(vr["idx"], vr["col"], np.where(vr["side"] == 0, vr["size"], -vr["size"]))
    assert ours.keys() == theirs.keys()
    for k, u in ours.items():
        assert u == pytest.approx(theirs[k], rel=1e-9), k
    value = pf.value().to_numpy()
    np.testing.assert_allclose(run.equity[:, 0], value, rtol=1e-9)
    assert abs(run.equity[-1, 0] - value[-1]) < 0.005
    # the first rebalance: the one buy short of its target is the largest weight's (symbol 0 or 1)
    big = int(np.argmax(weights[0]))
    assert big in (0, 1)
    first = {s: u for (b, s), u in ours.items() if b == 0}
    wanted = {s: weights[0, s] * 10_000.0 / close[0, s] for s in first}
    short = [s for s in first if first[s] < wanted[s] * (1 - 1e-12)]
    assert short == [big]


def test_cut_buy_by_hand_is_the_largest() -> None:
    # weights 0.5 / 0.2 / 0.3 of 1000 with fees 0.1 %: the buys fill 200 (B), 300 (C), then A, the
    # largest, is cut to the 499.5 left: 499.5 / (10 × 1.001) units (vectorbt: 49.9001)
    close = np.array([[10.0, 20.0, 5.0], [11.0, 19.0, 5.5]])
    weights = np.array([[0.5, 0.2, 0.3], [np.nan] * 3])
    case = tp.one_column(close, weights, [1, 0], init_cash=1_000.0, fees=0.001)
    (ref,) = tp.assert_matches_reference(case, max_records=10)
    assert [(o["symbol"], o["units"]) for o in ref.orders] == [
        (1, pytest.approx(10.0)), (2, pytest.approx(60.0)), (0, pytest.approx((1_000.0 - 200.2 - 300.3) / 10.01))]
    pf = vectorbt_run(close, weights, case.opt)
    assert pf.orders.records["col"].tolist() == [1, 2, 0]
    np.testing.assert_allclose(ref.equity, pf.value().to_numpy(), rtol=1e-12)
