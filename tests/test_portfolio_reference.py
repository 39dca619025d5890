"""The compiled portfolio kernel agrees with the plain reference and with docs/semantics.md.

Property tests (hypothesis) draw universes of 1–6 symbols over 5–60 bars with NaN price
gaps, late starts and delistings, a shared rebalance schedule with several columns of target
weights (NaNs, negatives, sums above 1), shorts on or off, stops, and random costs, fills and
unit modes; every column's equity curve, accumulator slots and order records from
`core.simulate.portfolio.run_portfolio_cpu` must equal `tests/portfolio_reference.py`.
Example tests pin the rules of "Portfolio mode" to hand-computed numbers.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from portfolio_reference import PortfolioOptions, PortfolioResult, simulate_portfolio_reference

from gpu_backtest.core.simulate import portfolio_layout as P
from gpu_backtest.core.simulate.portfolio import run_portfolio_cpu
from gpu_backtest.core.simulate.portfolio_trades import final_last_px, position_trades

NAN = math.nan
RTOL = 1e-9


@dataclass
class PortfolioCase:
    open_: np.ndarray      # (T, S)
    close: np.ndarray      # (T, S)
    weights: np.ndarray    # (R, S, C)
    rebalance: np.ndarray  # (T,) int64 rows of weights, -1 = none
    ended: np.ndarray      # (S,) int64 delisting bars, -1 = none
    opt: PortfolioOptions


def run_kernel(case: PortfolioCase, max_records: int = 0):
    return run_portfolio_cpu(case.open_, case.close, case.weights, case.rebalance, case.ended, case.opt,
                             max_records=max_records)


def reference(case: PortfolioCase, c: int) -> PortfolioResult:
    return simulate_portfolio_reference(
        case.open_.tolist(), case.close.tolist(), case.weights[:, :, c].tolist(),
        [int(x) for x in case.rebalance], [int(x) for x in case.ended], case.opt,
    )


def expected_acc(ref: PortfolioResult) -> dict[int, float]:
    """The accumulator slots, computed from the reference's lists by their definitions."""
    closed = ref.closed
    pnls = [tr["pnl"] for tr in closed]
    rets = [tr["ret"] for tr in closed]
    mean = sum(pnls) / len(pnls) if pnls else 0.0
    pos = [i for i, e in enumerate(ref.equity) if e > 0.0]
    return {
        P.PA_FINAL_EQUITY: ref.final_equity,
        P.PA_N_ORDERS: len(ref.orders),
        P.PA_COSTS: ref.costs,
        P.PA_TURNOVER: ref.turnover,
        P.PA_N_CLOSED: len(closed),
        P.PA_N_WINS: sum(p > 0 for p in pnls),
        P.PA_N_LOSSES: sum(p < 0 for p in pnls),
        P.PA_GROSS_PROFIT: sum(p for p in pnls if p > 0),
        P.PA_GROSS_LOSS: sum(p for p in pnls if p < 0),
        P.PA_PNL_MEAN: mean,
        P.PA_PNL_M2: sum((p - mean) ** 2 for p in pnls),
        P.PA_BEST_RET: max(rets) if rets else NAN,
        P.PA_WORST_RET: min(rets) if rets else NAN,
        P.PA_HOLD_BARS: sum(tr["bars"] for tr in closed),
        P.PA_N_OPEN: len(ref.open_trades),
        P.PA_OPEN_PNL: sum(tr["pnl"] for tr in ref.open_trades),
        P.PA_EXPOSURE_BARS: sum(h > 0 for h in ref.holdings),
        P.PA_HOLDINGS_SUM: sum(ref.holdings),
        P.PA_GROSS_SUM: sum(ref.gross[i] / ref.equity[i] for i in pos),
        P.PA_NET_SUM: sum(ref.net[i] / ref.equity[i] for i in pos),
        P.PA_EXPO_BARS_POS: len(pos),
        P.PA_TURNOVER_REL: ref.turnover_rel,
    }


def _close(a: float, b: float, scale: float) -> bool:
    if math.isnan(b):
        return math.isnan(a)
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=RTOL * scale)


def assert_column_matches(acc_row, equity_col, orders, n_orders, ref: PortfolioResult, scale: float, c: int) -> None:
    np.testing.assert_allclose(equity_col, ref.equity, rtol=RTOL, atol=RTOL * scale, err_msg=f"column {c}")
    pnl_scale = max(scale, max((abs(tr["pnl"]) for tr in ref.closed), default=0.0))
    for k, want in expected_acc(ref).items():
        tol_scale = {P.PA_PNL_M2: pnl_scale * pnl_scale, P.PA_BEST_RET: 1.0, P.PA_WORST_RET: 1.0,
                     P.PA_GROSS_SUM: len(ref.equity), P.PA_NET_SUM: len(ref.equity),
                     P.PA_TURNOVER_REL: len(ref.equity)}.get(k, scale)
        assert _close(float(acc_row[k]), float(want), tol_scale), f"column {c} slot {k}: {acc_row[k]} != {want}"
    if orders is not None:
        assert int(n_orders) == len(ref.orders)
        for i, o in enumerate(ref.orders[: orders.shape[0]]):
            got = orders[i]
            assert (int(got[P.O_BAR]), int(got[P.O_SYMBOL])) == (o["bar"], o["symbol"]), f"column {c} order {i}"
            assert P.ORDER_REASONS[int(got[P.O_REASON])] == o["reason"], f"column {c} order {i}"
            assert _close(got[P.O_UNITS], o["units"], scale / max(o["px"], 1e-300) * 1e-3 + 1e-6)
            assert _close(got[P.O_PRICE], o["price"], 1.0)
            assert _close(got[P.O_COSTS], o["costs"], scale)


def assert_matches_reference(case: PortfolioCase, max_records: int = 0) -> list[PortfolioResult]:
    run = run_kernel(case, max_records=max_records)
    refs = []
    scale = case.opt.init_cash
    for c in range(case.weights.shape[2]):
        ref = reference(case, c)
        orders = None if run.orders is None else run.orders[c]
        n = None if run.n_orders is None else run.n_orders[c]
        assert_column_matches(run.acc[c], run.equity[:, c], orders, n, ref, scale, c)
        refs.append(ref)
    return refs


# --- generators -------------------------------------------------------------------------------

WEIGHT_CHOICES = [0.0, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.75, 1.0, -0.2, -0.5]


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
    ended = np.full(n_sym, -1, dtype=np.int64)
    if draw(st.booleans()):  # delistings; usually no bars after, sometimes a stray one
        for s in np.flatnonzero(rng.random(n_sym) < 0.5):
            ended[s] = rng.integers(0, n_bars)
            if rng.random() < 0.8:
                close[ended[s] + 1:, s] = NAN
                open_[ended[s] + 1:, s] = NAN
    flags = rng.random(n_bars) < draw(st.sampled_from([0.1, 0.3, 1.0]))
    flags[0] = draw(st.booleans()) or flags[0]
    rebalance = np.full(n_bars, -1, dtype=np.int64)
    rebalance[flags] = np.arange(int(flags.sum()))
    n_rows = int(flags.sum())
    weights = rng.choice(WEIGHT_CHOICES, (n_rows, n_sym, n_cols))
    weights = np.where(rng.random(weights.shape) < 0.2, rng.uniform(-0.3, 0.6, weights.shape), weights)
    weights[rng.random(weights.shape) < draw(st.sampled_from([0.0, 0.2, 0.5]))] = NAN
    opt = PortfolioOptions(
        init_cash=draw(st.sampled_from([1_000.0, 10_000.0, 100_000.0])),
        fees=draw(st.sampled_from([0.0, 0.001, 0.01])),
        fixed_fee=draw(st.sampled_from([0.0, 1.0, 5.0])),
        slippage=draw(st.sampled_from([0.0, 0.0005, 0.02])),
        min_trade=draw(st.sampled_from([0.0, 0.0, 50.0, 500.0])),
        fill=draw(st.sampled_from(["close", "next_open"])),
        fractional=draw(st.booleans()),
        shorts=draw(st.booleans()),
        sl_stop=draw(st.sampled_from([0.0, 0.0, 0.02, 0.1])),
        tp_stop=draw(st.sampled_from([0.0, 0.0, 0.03, 0.15])),
    )
    return PortfolioCase(open_, close, weights, rebalance, ended, opt)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(portfolio_cases(), st.sampled_from([0, 500]))
def test_kernel_matches_reference(case: PortfolioCase, max_records: int) -> None:
    refs = assert_matches_reference(case, max_records=max_records)
    for ref in refs:  # final equity − init_cash = Σ closed pnl + Σ open pnl
        total = sum(tr["pnl"] for tr in ref.trades)
        assert ref.final_equity - case.opt.init_cash == pytest.approx(total, rel=1e-9, abs=1e-7 * case.opt.init_cash)


# --- hand-computed examples ---------------------------------------------------------------


def one_column(close, weights, rebalance, open_=None, ended=None, **opt) -> PortfolioCase:
    """``weights`` and ``rebalance`` per bar (T × S and T flags), packed into rows as the kernel wants."""
    close = np.array(close, dtype=float)
    open_ = close.copy() if open_ is None else np.array(open_, dtype=float)
    flags = np.array(rebalance, dtype=bool)
    rows = np.full(len(flags), -1, dtype=np.int64)
    rows[flags] = np.arange(int(flags.sum()))
    w = np.array(weights, dtype=float)[flags][:, :, None]
    ended = np.full(close.shape[1], -1, dtype=np.int64) if ended is None else np.array(ended, dtype=np.int64)
    return PortfolioCase(open_, close, w, rows, ended, PortfolioOptions(**opt))


def orders_of(ref: PortfolioResult) -> list[tuple]:
    return [(o["bar"], o["symbol"], pytest.approx(o["units"]), o["reason"]) for o in ref.orders]


def test_equal_weights_no_costs_by_hand() -> None:
    # 1000 split 50/50 at 10 and 20: 50 and 25 units; then prices 12 and 18 → 600 + 450
    case = one_column([[10, 20], [12, 18]], [[0.5, 0.5], [NAN, NAN]], [1, 0], init_cash=1_000.0)
    (ref,) = assert_matches_reference(case, max_records=10)
    assert ref.equity == pytest.approx([1_000.0, 1_050.0])
    assert len(ref.orders) == 2 and ref.turnover == pytest.approx(1_000.0)
    assert ref.turnover_rel == pytest.approx(1.0)
    assert ref.holdings == [2, 2] and ref.gross == pytest.approx([1_000.0, 1_050.0])
    # two open trades: 600 − 500 and 450 − 500
    assert [tr["pnl"] for tr in ref.open_trades] == pytest.approx([100.0, -50.0])


def test_buy_cut_to_cash_left_after_fees() -> None:
    # weights 0.6 + 0.6 with 1% fees: A buys 60 @10 for 606; B wants 30 @20 (606) but only 394
    # is left, so it buys 394 / (20 × 1.01) units and cash ends at 0
    case = one_column([[10, 20]], [[0.6, 0.6]], [1], init_cash=1_000.0, fees=0.01)
    (ref,) = assert_matches_reference(case, max_records=10)
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
    (ref,) = assert_matches_reference(case, max_records=10)
    assert orders_of(ref) == [(0, 0, 100.0, "rebalance"), (1, 0, -100.0, "rebalance"), (1, 1, 40.0, "rebalance")]
    assert ref.equity == pytest.approx([1_000.0, 1_000.0, 1_200.0])
    # A's trade closed flat: pnl 0, held 1 bar
    assert [(tr["pnl"], tr["bars"]) for tr in ref.closed] == [(0.0, 1)]


def test_position_in_gap_is_marked_at_last_price_and_nan_weight_keeps_target() -> None:
    case = one_column(
        [[10, 20], [12, NAN], [12, 20]],
        [[0.5, 0.5], [NAN, NAN], [0.5, NAN]],
        [1, 0, 1], init_cash=1_000.0,
    )
    (ref,) = assert_matches_reference(case, max_records=10)
    assert ref.equity == pytest.approx([1_000.0, 1_100.0, 1_100.0])
    assert [(o["symbol"], o["units"]) for o in ref.orders[2:]] == [
        (0, pytest.approx(550 / 12 - 50)), (1, pytest.approx(27.5 - 25))]


def test_next_open_fills_at_the_next_bars_open() -> None:
    case = one_column([[10], [12], [15]], [[1.0], [NAN], [NAN]], [1, 0, 0],
                      open_=[[9], [11], [14]], init_cash=1_100.0, fill="next_open")
    (ref,) = assert_matches_reference(case, max_records=10)
    assert [(o["bar"], o["price"]) for o in ref.orders] == [(1, 11.0)]
    assert ref.equity == pytest.approx([1_100.0, 1_200.0, 1_500.0])


def test_min_trade_skips_small_orders() -> None:
    # A rises 10%, then a rebalance to the same weights: two orders of 25 each, below min_trade 60
    case = one_column([[10, 10], [11, 10], [11, 10]], [[0.5, 0.5], [0.5, 0.5], [NAN, NAN]], [1, 1, 0],
                      init_cash=1_000.0, min_trade=60.0)
    (ref,) = assert_matches_reference(case)
    assert len(ref.orders) == 2
    case.opt = replace(case.opt, min_trade=20.0)
    (ref,) = assert_matches_reference(case)
    assert len(ref.orders) == 4


def test_short_by_hand_and_negative_weight_is_zero_without_shorts() -> None:
    # weight −0.5 of 1000 at 10: short 50 units, cash 1500; at 8 equity = 1500 − 400 = 1100;
    # weight 0 at 8 buys 50 back for 400: pnl 100, return 100 / 500
    case = one_column([[10], [8], [8]], [[-0.5], [NAN], [0.0]], [1, 0, 1], init_cash=1_000.0, shorts=True)
    (ref,) = assert_matches_reference(case, max_records=10)
    assert orders_of(ref) == [(0, 0, -50.0, "rebalance"), (2, 0, 50.0, "rebalance")]
    assert ref.equity == pytest.approx([1_000.0, 1_100.0, 1_100.0])
    assert ref.net == pytest.approx([-500.0, -400.0, 0.0])
    (tr,) = ref.closed
    assert (tr["pnl"], tr["ret"], tr["bars"]) == (pytest.approx(100.0), pytest.approx(0.2), 2)
    case.opt = replace(case.opt, shorts=False)
    (ref,) = assert_matches_reference(case)
    assert ref.orders == [] and ref.equity == pytest.approx([1_000.0] * 3)


def test_flip_splits_the_fill_and_its_fixed_fee() -> None:
    # long 100 @10 (fixed fee 2: cash 0 − 2 → buy cut to 99.8 units); then weight −0.5 at 10:
    # value 998 → target −49.9; one sell of 149.7 units: 99.8 close the long, 49.9 open the short
    case = one_column([[10], [10], [12]], [[1.0], [-0.5], [NAN]], [1, 1, 0], init_cash=1_000.0, fixed_fee=2.0,
                      shorts=True)
    (ref,) = assert_matches_reference(case, max_records=10)
    assert orders_of(ref) == [(0, 0, 99.8, "rebalance"), (1, 0, -149.7, "rebalance")]
    (closed,) = ref.closed
    # long pnl: −1000 + 99.8 × 10 − 2 × 99.8 / 149.7
    assert closed["pnl"] == pytest.approx(-1000.0 + 998.0 - 2.0 * 99.8 / 149.7)
    (open_tr,) = ref.open_trades
    # short: proceeds 499 − its fee share, marked at 12
    assert open_tr["pnl"] == pytest.approx(499.0 - 2.0 * 49.9 / 149.7 - 49.9 * 12.0)
    assert open_tr["ret"] == pytest.approx(open_tr["pnl"] / (499.0 + 2.0 * 49.9 / 149.7))


def test_stop_loss_exits_at_the_close_and_zeroes_the_target() -> None:
    # long 100 @10 with sl 10%: 9.5 holds, 8.9 ≤ 9 exits at 8.9; the NaN weight of bar 3 keeps
    # target 0, the weight 1.0 of bar 4 buys again
    case = one_column([[10], [9.5], [8.9], [10], [10]], [[1.0], [NAN], [NAN], [NAN], [1.0]], [1, 0, 0, 1, 1],
                      init_cash=1_000.0, sl_stop=0.1)
    (ref,) = assert_matches_reference(case, max_records=10)
    assert orders_of(ref) == [(0, 0, 100.0, "rebalance"), (2, 0, -100.0, "stop_loss"),
                              (4, 0, pytest.approx(89.0), "rebalance")]
    assert ref.equity == pytest.approx([1_000.0, 950.0, 890.0, 890.0, 890.0])
    assert ref.closed[0]["pnl"] == pytest.approx(-110.0)


def test_take_profit_on_a_short_and_average_entry_on_adds() -> None:
    # short 50 @10 (−0.5), add to −0.75 of 1000 at 10 → 75 units, average entry 10; at 8.4
    # the tp of 15% (≤ 8.5) covers all 75 at 8.4, reason take_profit
    case = one_column([[10], [10], [9], [8.4]], [[-0.5], [-0.75], [NAN], [NAN]], [1, 1, 0, 0],
                      init_cash=1_000.0, shorts=True, tp_stop=0.15)
    (ref,) = assert_matches_reference(case, max_records=10)
    assert orders_of(ref)[-1] == (3, 0, pytest.approx(75.0), "take_profit")
    assert ref.closed[0]["pnl"] == pytest.approx(75 * (10 - 8.4))


def test_delisting_closes_at_the_close_or_last_price_and_never_trades_again() -> None:
    # A holds 50 @10 (B is cut by the fees); A ends at bar 1 whose close is NaN: sold at its last price, the open 11;
    # the rebalance of bar 2 cannot buy A again
    case = one_column([[10, 20], [NAN, 20], [NAN, 20]], [[0.5, 0.5], [NAN, NAN], [0.5, 0.5]], [1, 0, 1],
                      open_=[[10, 20], [11, 20], [12, 20]], ended=[1, -1], init_cash=1_000.0, fees=0.01)
    (ref,) = assert_matches_reference(case, max_records=10)
    delist = [o for o in ref.orders if o["reason"] == "delisted"]
    assert [(o["bar"], o["symbol"], o["units"], o["price"]) for o in delist] == [(1, 0, -50.0, 11.0)]
    assert all(o["symbol"] == 1 for o in ref.orders if o["bar"] == 2)


def test_record_truncation_keeps_the_count() -> None:
    case = one_column([[10, 20], [12, 18]], [[0.5, 0.5], [NAN, NAN]], [1, 0], init_cash=1_000.0)
    run = run_kernel(case, max_records=1)
    assert run.n_orders.tolist() == [2] and run.orders.shape == (1, 1, P.N_OFIELDS)
    assert run.orders[0, 0, P.O_UNITS] == pytest.approx(50.0)
    assert run_kernel(case).orders is None


def test_columns_are_independent() -> None:
    case = one_column([[10, 20], [12, 18]], [[0.5, 0.5], [NAN, NAN]], [1, 0], init_cash=1_000.0)
    w = np.concatenate([case.weights, np.array([[[1.0], [0.0]]])], axis=2)
    two = PortfolioCase(case.open_, case.close, w, case.rebalance, case.ended, case.opt)
    refs = assert_matches_reference(two)
    assert refs[0].equity[-1] == pytest.approx(1_050.0) and refs[1].equity[-1] == pytest.approx(1_200.0)


def test_shape_mismatch_and_bad_options_are_clear_errors() -> None:
    case = one_column([[10, 20]], [[0.5, 0.5]], [1])
    with pytest.raises(ValueError, match="shapes"):
        run_portfolio_cpu(case.open_, case.close, case.weights[:, :1], case.rebalance, case.ended, case.opt)
    with pytest.raises(ValueError, match="shapes"):
        run_portfolio_cpu(case.open_, case.close, case.weights, case.rebalance, case.ended[:1], case.opt)
    with pytest.raises(ValueError, match="row"):
        run_portfolio_cpu(case.open_, case.close, case.weights, case.rebalance + 1, case.ended, case.opt)
    with pytest.raises(ValueError, match="fill"):
        PortfolioOptions(fill="open")
    with pytest.raises(ValueError, match="sl_stop"):
        PortfolioOptions(sl_stop=-0.1)


def test_options_arrays_are_named_slots() -> None:
    fopts, iopts = PortfolioOptions(init_cash=5.0, fees=0.1, sl_stop=0.2, tp_stop=0.3, shorts=True,
                                    fill="next_open", fractional=False).arrays()
    assert fopts.shape == (P.N_PFOPTS,) and iopts.shape == (P.N_PIOPTS,)
    assert (fopts[P.PF_INIT_CASH], fopts[P.PF_FEES], fopts[P.PF_SL_STOP], fopts[P.PF_TP_STOP]) == (5.0, 0.1, 0.2, 0.3)
    assert (iopts[P.PI_SHORTS], iopts[P.PI_FRACTIONAL], iopts[P.PI_FILL]) == (1, 0, 1)


# --- position trades rebuilt from the records ---------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(portfolio_cases())
def test_trades_from_records_equal_the_reference_trades(case: PortfolioCase) -> None:
    run = run_kernel(case, max_records=1_000)
    last_px = final_last_px(case.open_, case.close)
    for c in range(case.weights.shape[2]):
        got = position_trades(run.orders[c, : run.n_orders[c]], case.opt, last_px, case.close.shape[0])
        want = reference(case, c).trades
        key = [(t["symbol"], t["entry_bar"], t["exit_bar"], t["open"]) for t in want]
        assert [(t["symbol"], t["entry_bar"], t["exit_bar"], t["open"]) for t in got] == key
        for g, w in zip(got, want, strict=True):
            assert _close(g["pnl"], w["pnl"], case.opt.init_cash)
            assert _close(g["return"], w["ret"], 1.0)
        closed = [t for t in got if not t["open"]]
        assert run.acc[c, P.PA_N_CLOSED] == len(closed)
        assert _close(run.acc[c, P.PA_OPEN_PNL], sum(t["pnl"] for t in got if t["open"]), case.opt.init_cash)


def test_trades_from_records_by_hand() -> None:
    # the flip example: a long closed by the flip, then an open short marked at 12
    case = one_column([[10], [10], [12]], [[1.0], [-0.5], [NAN]], [1, 1, 0], init_cash=1_000.0, fixed_fee=2.0,
                      shorts=True)
    run = run_kernel(case, max_records=10)
    trades = position_trades(run.orders[0, : run.n_orders[0]], case.opt, final_last_px(case.open_, case.close), 3)
    assert [(t["direction"], t["entry_bar"], t["exit_bar"], t["exit_reason"]) for t in trades] == [
        (1, 0, 1, "rebalance"), (-1, 1, 2, "open")]
    assert trades[0]["size"] == pytest.approx(99.8) and trades[1]["size"] == pytest.approx(49.9)
    assert trades[1]["exit_price"] == 12.0
    assert final_last_px(np.array([[1.0, NAN], [3.0, NAN]]), np.array([[2.0, NAN], [NAN, NAN]])).tolist()[0] == 3.0
