"""The compiled portfolio kernel agrees with the plain reference and with docs/semantics.md.

Property tests (hypothesis) draw universes of 1–6 symbols over 5–60 bars with NaN price
gaps, several columns of target weights (with NaNs, negatives, sums above 1) and rebalance
schedules, and random costs, fills and unit modes; every column's equity curve, order count,
costs and turnover from `core.simulate.portfolio.run_portfolio_cpu` must equal
`tests/portfolio_reference.py`. Example tests pin the rules of "Portfolio mode" to
hand-computed numbers.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from portfolio_reference import PortfolioOptions, simulate_portfolio_reference

from gpu_backtest.core.simulate import layout as L
from gpu_backtest.core.simulate import portfolio_layout as P
from gpu_backtest.core.simulate.portfolio import run_portfolio_cpu

NAN = math.nan
RTOL = 1e-9


@dataclass
class PortfolioCase:
    open_: np.ndarray      # (T, S)
    close: np.ndarray      # (T, S)
    weights: np.ndarray    # (T, S, C)
    rebalance: np.ndarray  # (T, C)
    opt: PortfolioOptions


def pack(opt: PortfolioOptions) -> tuple[np.ndarray, np.ndarray]:
    fopts = np.zeros(P.N_PFOPTS)
    fopts[P.PF_INIT_CASH] = opt.init_cash
    fopts[P.PF_FEES] = opt.fees
    fopts[P.PF_FIXED_FEE] = opt.fixed_fee
    fopts[P.PF_SLIPPAGE] = opt.slippage
    fopts[P.PF_MIN_TRADE] = opt.min_trade
    iopts = np.zeros(P.N_PIOPTS, dtype=np.int64)
    iopts[P.PI_FILL] = L.FILL_CLOSE if opt.fill == "close" else L.FILL_NEXT_OPEN
    iopts[P.PI_FRACTIONAL] = int(opt.fractional)
    return fopts, iopts


def run_kernel(case: PortfolioCase):
    fopts, iopts = pack(case.opt)
    return run_portfolio_cpu(case.open_, case.close, case.weights, case.rebalance, fopts, iopts)


def reference(case: PortfolioCase, c: int):
    return simulate_portfolio_reference(
        case.open_.tolist(), case.close.tolist(), case.weights[:, :, c].tolist(),
        [bool(x) for x in case.rebalance[:, c]], case.opt,
    )


def assert_matches_reference(case: PortfolioCase) -> list:
    acc, equity = run_kernel(case)
    refs = []
    scale = case.opt.init_cash
    for c in range(case.rebalance.shape[1]):
        ref = reference(case, c)
        np.testing.assert_allclose(equity[:, c], ref.equity, rtol=RTOL, atol=RTOL * scale, err_msg=f"column {c}")
        assert int(acc[c, P.PA_N_ORDERS]) == len(ref.orders), f"column {c}"
        assert acc[c, P.PA_FINAL_EQUITY] == pytest.approx(ref.final_equity, rel=RTOL, abs=RTOL * scale)
        assert acc[c, P.PA_COSTS] == pytest.approx(ref.costs, rel=RTOL, abs=RTOL * scale)
        assert acc[c, P.PA_TURNOVER] == pytest.approx(ref.turnover, rel=RTOL, abs=RTOL * scale)
        refs.append(ref)
    return refs


# --- generators -------------------------------------------------------------------------------

WEIGHT_CHOICES = [0.0, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.75, 1.0, -0.2]


@st.composite
def portfolio_cases(draw, max_sym: int = 6, max_bars: int = 60, max_cols: int = 3) -> PortfolioCase:
    n_sym = draw(st.integers(1, max_sym))
    n_bars = draw(st.integers(5, max_bars))
    n_cols = draw(st.integers(1, max_cols))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # positive random-walk prices, never all zero; opens near the previous close
    base = rng.uniform(1.0, 500.0, n_sym)
    steps = rng.normal(0.0, draw(st.sampled_from([0.005, 0.03, 0.1])), (n_bars, n_sym))
    close = base * np.exp(np.cumsum(steps, axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.01, (n_bars, n_sym)))
    gap = draw(st.sampled_from([0.0, 0.1, 0.3]))
    close[rng.random((n_bars, n_sym)) < gap] = NAN
    open_[rng.random((n_bars, n_sym)) < gap] = NAN
    if draw(st.booleans()):  # a symbol that only starts trading later
        late = rng.integers(0, n_sym)
        start = rng.integers(1, n_bars)
        close[:start, late] = NAN
        open_[:start, late] = NAN
    weights = rng.choice(WEIGHT_CHOICES, (n_bars, n_sym, n_cols))
    weights = np.where(rng.random(weights.shape) < 0.2, rng.uniform(0.0, 0.6, weights.shape), weights)
    weights[rng.random(weights.shape) < draw(st.sampled_from([0.0, 0.2, 0.5]))] = NAN
    rebalance = rng.random((n_bars, n_cols)) < draw(st.sampled_from([0.1, 0.3, 1.0]))
    rebalance[0] = draw(st.booleans()) or rebalance[0]
    opt = PortfolioOptions(
        init_cash=draw(st.sampled_from([1_000.0, 10_000.0, 100_000.0])),
        fees=draw(st.sampled_from([0.0, 0.001, 0.01])),
        fixed_fee=draw(st.sampled_from([0.0, 1.0, 5.0])),
        slippage=draw(st.sampled_from([0.0, 0.0005, 0.02])),
        min_trade=draw(st.sampled_from([0.0, 0.0, 50.0, 500.0])),
        fill=draw(st.sampled_from(["close", "next_open"])),
        fractional=draw(st.booleans()),
    )
    return PortfolioCase(open_, close, weights, rebalance, opt)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(portfolio_cases())
def test_kernel_matches_reference(case: PortfolioCase) -> None:
    assert_matches_reference(case)


# --- hand-computed examples ---------------------------------------------------------------


def one_column(close, weights, rebalance, open_=None, **opt) -> PortfolioCase:
    close = np.array(close, dtype=float)
    open_ = close.copy() if open_ is None else np.array(open_, dtype=float)
    w = np.array(weights, dtype=float)[:, :, None]
    r = np.array(rebalance, dtype=bool)[:, None]
    return PortfolioCase(open_, close, w, r, PortfolioOptions(**opt))


def test_equal_weights_no_costs_by_hand() -> None:
    # 1000 split 50/50 at 10 and 20: 50 and 25 units; then prices 12 and 18 → 600 + 450
    case = one_column([[10, 20], [12, 18]], [[0.5, 0.5], [NAN, NAN]], [1, 0], init_cash=1_000.0)
    (ref,) = assert_matches_reference(case)
    assert ref.equity == pytest.approx([1_000.0, 1_050.0])
    assert len(ref.orders) == 2 and ref.turnover == pytest.approx(1_000.0)


def test_buy_cut_to_cash_left_after_fees() -> None:
    # weights 0.6 + 0.6 with 1% fees: A buys 60 @10 for 606; B wants 30 @20 (606) but only 394
    # is left, so it buys 394 / (20 × 1.01) units and cash ends at 0
    case = one_column([[10, 20]], [[0.6, 0.6]], [1], init_cash=1_000.0, fees=0.01)
    (ref,) = assert_matches_reference(case)
    b_units = 394.0 / 20.2
    assert ref.orders[1]["units"] == pytest.approx(b_units)
    assert ref.equity == pytest.approx([600.0 + b_units * 20.0])
    assert ref.costs == pytest.approx(6.0 + b_units * 20.0 * 0.01)
    # whole units: floor(394 / 20.2) = 19
    case = one_column([[10, 20]], [[0.6, 0.6]], [1], init_cash=1_000.0, fees=0.01, fractional=False)
    (ref,) = assert_matches_reference(case)
    assert ref.orders[1]["units"] == 19.0


def test_sells_first_fund_buys_and_missing_bar_holds() -> None:
    # bar 0: all in A (100 @10). bar 1: A → 0, B → 1 and C has no bar (its target is set but
    # it cannot trade). The sale of A (1000) funds B's buy in the same rebalance.
    case = one_column(
        [[10, 50, 5], [10, 25, NAN], [11, 30, 6]],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.5], [NAN, NAN, NAN]],
        [1, 1, 0], init_cash=1_000.0,
    )
    (ref,) = assert_matches_reference(case)
    assert [(o["bar"], o["symbol"], o["units"]) for o in ref.orders] == [(0, 0, 100.0), (1, 0, -100.0), (1, 1, 40.0)]
    assert ref.equity == pytest.approx([1_000.0, 1_000.0, 1_200.0])


def test_position_in_gap_is_marked_at_last_price_and_nan_weight_keeps_target() -> None:
    # 50/50 in A and B; B has no bar on bar 1 (marked at 20); on bar 2 the NaN weight of B keeps
    # its 0.5 target, so both are rebalanced back to 50/50 of value 1100
    case = one_column(
        [[10, 20], [12, NAN], [12, 20]],
        [[0.5, 0.5], [NAN, NAN], [0.5, NAN]],
        [1, 0, 1], init_cash=1_000.0,
    )
    (ref,) = assert_matches_reference(case)
    assert ref.equity == pytest.approx([1_000.0, 1_100.0, 1_100.0])
    assert [(o["symbol"], o["units"]) for o in ref.orders[2:]] == [
        (0, pytest.approx(550 / 12 - 50)), (1, pytest.approx(27.5 - 25))]


def test_next_open_fills_at_the_next_bars_open() -> None:
    case = one_column([[10], [12], [15]], [[1.0], [NAN], [NAN]], [1, 0, 0],
                      open_=[[9], [11], [14]], init_cash=1_100.0, fill="next_open")
    (ref,) = assert_matches_reference(case)
    assert [(o["bar"], o["price"]) for o in ref.orders] == [(1, 11.0)]
    assert ref.equity == pytest.approx([1_100.0, 1_200.0, 1_500.0])


def test_min_trade_skips_small_orders() -> None:
    # A rises 10%, then a rebalance to the same weights: two orders of 25 each, below min_trade 60
    case = one_column([[10, 10], [11, 10], [11, 10]], [[0.5, 0.5], [0.5, 0.5], [NAN, NAN]], [1, 1, 0],
                      init_cash=1_000.0, min_trade=60.0)
    (ref,) = assert_matches_reference(case)
    assert len(ref.orders) == 2
    case.opt.min_trade = 20.0
    (ref,) = assert_matches_reference(case)
    assert len(ref.orders) == 4


def test_columns_are_independent() -> None:
    case = one_column([[10, 20], [12, 18]], [[0.5, 0.5], [NAN, NAN]], [1, 0], init_cash=1_000.0)
    w = np.concatenate([case.weights, np.array([[[1.0], [0.0]], [[NAN], [NAN]]])], axis=2)
    r = np.concatenate([case.rebalance, np.array([[1], [0]], dtype=bool)], axis=1)
    two = PortfolioCase(case.open_, case.close, w, r, case.opt)
    refs = assert_matches_reference(two)
    assert refs[0].equity[-1] == pytest.approx(1_050.0) and refs[1].equity[-1] == pytest.approx(1_200.0)


def test_shape_mismatch_is_a_clear_error() -> None:
    case = one_column([[10, 20]], [[0.5, 0.5]], [1])
    fopts, iopts = pack(case.opt)
    with pytest.raises(ValueError, match="shapes"):
        run_portfolio_cpu(case.open_, case.close, case.weights[:, :1], case.rebalance, fopts, iopts)
