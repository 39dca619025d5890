"""The compiled CPU kernel agrees with the plain reference simulator and with docs/semantics.md.

Property tests (hypothesis, fresh random inputs each run) run `core.simulate.cpu.simulate` on
several columns over several symbols with random prices, signals and options and compare
every column's equity, returns, trades and accumulators with `tests/reference_sim.py`.
Example tests pin each rule of docs/semantics.md to a hand-computed case (and check that
kernel and reference agree on it too).
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_cases as sc
from reference_sim import Options, simulate_reference

from gpu_backtest.core.simulate import layout as L
from gpu_backtest.core.simulate.cpu import simulate as cpu_simulate


def prop(max_examples: int) -> settings:
    """Hypothesis settings of the property tests: no deadline (the first call compiles)."""
    return settings(max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_both(case: sc.Case, **kw):
    """Run the kernel on a one-column case, assert it matches the reference, return both."""
    out = sc.run_kernel(cpu_simulate, case, **kw)
    (ref,) = sc.assert_matches_reference(case, out)
    return ref, out


def approx(x):
    return pytest.approx(x, rel=1e-12, abs=1e-9)


def bar(o, h=None, lo=None, c=None):
    """An OHLC bar; missing high/low/close default to a flat bar at ``o``."""
    c = o if c is None else c
    h = max(o, c) if h is None else h
    lo = min(o, c) if lo is None else lo
    return (o, h, lo, c)


NAN_BAR = (math.nan, math.nan, math.nan, math.nan)


def kernel_trades(out: sc.KernelOutput, c: int = 0) -> list[dict]:
    rows = []
    for i in range(int(out.ntrades[c])):
        r = out.trades[c, i]
        rows.append(
            {
                "entry_idx": int(r[L.T_ENTRY_IDX]),
                "exit_idx": int(r[L.T_EXIT_IDX]),
                "direction": "long" if r[L.T_DIRECTION] > 0 else "short",
                "size": r[L.T_SIZE],
                "entry_price": r[L.T_ENTRY_PRICE],
                "exit_price": r[L.T_EXIT_PRICE],
                "entry_fees": r[L.T_ENTRY_FEES],
                "exit_fees": r[L.T_EXIT_FEES],
                "pnl": r[L.T_PNL],
                "ret": r[L.T_RETURN],
                "exit_reason": L.EXIT_REASONS[int(r[L.T_EXIT_REASON])],
            }
        )
    return rows


def expect_trades(ref, out, expected: list[dict]) -> None:
    """Both the reference's and the kernel's trade lists have exactly the expected trades."""
    got_k = kernel_trades(out)
    assert len(ref.trades) == len(expected) == len(got_k), (ref.trades, got_k)
    for tr, row, exp in zip(ref.trades, got_k, expected, strict=True):
        for key, value in exp.items():
            if isinstance(value, str | int) and not isinstance(value, bool):
                assert getattr(tr, key) == value, (key, tr)
                assert row[key] == value, (key, row)
            else:
                assert getattr(tr, key) == approx(value), (key, tr)
                assert row[key] == approx(value), (key, row)


# ---------------------------------------------------------------------------------------
# property tests
# ---------------------------------------------------------------------------------------


@prop(3000)
@given(sc.cases())
def test_kernel_matches_reference(case):
    out = sc.run_kernel(cpu_simulate, case)
    sc.assert_matches_reference(case, out)


@prop(150)
@given(sc.cases(max_bars=3_000, max_cols=3, max_syms=2))
def test_kernel_matches_reference_long_series(case):
    out = sc.run_kernel(cpu_simulate, case)
    sc.assert_matches_reference(case, out)


@prop(300)
@given(sc.cases(max_bars=120), st.booleans())
def test_sweep_mode_accumulators_equal_record_mode(case, want_returns):
    """Sweep mode (no records) runs the same code path: identical accumulators, bit for bit."""
    full = sc.run_kernel(cpu_simulate, case)
    sweep = sc.run_kernel(cpu_simulate, case, want_returns=want_returns, record=False)
    np.testing.assert_array_equal(sweep.acc, full.acc)
    if want_returns:
        np.testing.assert_array_equal(sweep.returns, full.returns)
    sc.assert_matches_reference(case, sweep)


@prop(500)
@given(sc.cases(max_bars=150))
def test_closed_plus_open_pnl_is_equity_change(case):
    """final equity − init_cash = Σ closed pnl (+ the open trade's pnl, when one is open)."""
    out = sc.run_kernel(cpu_simulate, case)
    for c in range(case.n_cols):
        trades = kernel_trades(out, c)
        closed = sum(t["pnl"] for t in trades if t["exit_reason"] != "open")
        open_pnl = sum(t["pnl"] for t in trades if t["exit_reason"] == "open")
        acc = out.acc[c]
        assert acc[L.A_OPEN_PNL] == open_pnl
        scale = max(case.opts.init_cash, *(t["size"] * (t["entry_price"] + t["exit_price"]) for t in trades), 0.0)
        change = acc[L.A_FINAL_EQUITY] - case.opts.init_cash
        if acc[L.A_N_OPEN] == 0:
            assert closed == pytest.approx(change, rel=1e-9, abs=1e-9 * scale)
        assert closed + open_pnl == pytest.approx(change, rel=1e-9, abs=1e-9 * scale)


# ---------------------------------------------------------------------------------------
# one hand-computed example per rule of docs/semantics.md
# ---------------------------------------------------------------------------------------


def test_long_round_trip_with_fees():
    case = sc.single_column_case(
        [bar(100, 101, 99, 100), bar(105, 111, 104, 110)],
        entries=[0], exits=[1], init_cash=10_000.0, fees=0.01, fixed_fee=0.5, fractional=False,
    )
    ref, out = run_both(case)
    # units = floor((10000 - 0.5) / (100 * 1.01)) = floor(99.0049) = 99
    # entry fees = 99 * 100 * 0.01 + 0.5 = 99.5; cash = 10000 - 9900 - 99.5 = 0.5
    # exit: proceeds 99 * 110 = 10890, fees 108.9 + 0.5 = 109.4; cash = 0.5 + 10890 - 109.4
    expect_trades(ref, out, [dict(
        entry_idx=0, exit_idx=1, direction="long", size=99.0, entry_price=100.0, exit_price=110.0,
        entry_fees=99.5, exit_fees=109.4, pnl=781.1, ret=781.1 / 9999.5, exit_reason="signal",
    )])
    np.testing.assert_allclose(out.equity[:, 0], [9900.5, 10781.1], rtol=1e-12)
    np.testing.assert_allclose(out.returns[:, 0], [9900.5 / 10_000 - 1, 10781.1 / 9900.5 - 1], rtol=1e-12)
    assert out.acc[0, L.A_FINAL_EQUITY] == approx(10_781.1)
    assert out.acc[0, L.A_EXPOSURE_BARS] == 1
    assert out.acc[0, L.A_N_WINS] == 1 and out.acc[0, L.A_GROSS_PROFIT] == approx(781.1)


def test_short_round_trip_with_slippage():
    case = sc.single_column_case(
        [bar(100, 101, 99, 100), bar(96, 97, 94, 95), bar(92, 93, 89, 90)],
        short_entries=[0], short_exits=[2], direction="short", size_type="units", size=10.0,
        slippage=0.01, init_cash=10_000.0,
    )
    ref, out = run_both(case)
    # sell 10 at 100 * 0.99 = 99: cash 10990; buy back at 90 * 1.01 = 90.9: cash 10990 - 909
    expect_trades(ref, out, [dict(
        entry_idx=0, exit_idx=2, direction="short", size=10.0, entry_price=99.0, exit_price=90.9,
        entry_fees=0.0, exit_fees=0.0, pnl=81.0, ret=81.0 / 990.0, exit_reason="signal",
    )])
    np.testing.assert_allclose(out.equity[:, 0], [9990.0, 10040.0, 10081.0], rtol=1e-12)


def test_reversal_closes_then_opens_with_the_freed_cash():
    case = sc.single_column_case(
        [bar(10), bar(12), bar(9)], entries=[0, 2], short_entries=[1], direction="both", init_cash=1_000.0,
    )
    ref, out = run_both(case)
    # t0 buy 100 @10; t1 sell 100 @12 (+200), short 1200/12 = 100 @12; t2 cover @9 (+300), buy 1500/9
    expect_trades(ref, out, [
        dict(entry_idx=0, exit_idx=1, direction="long", size=100.0, pnl=200.0, exit_reason="reverse"),
        dict(entry_idx=1, exit_idx=2, direction="short", size=100.0, pnl=300.0, exit_reason="reverse"),
        dict(entry_idx=2, exit_idx=2, direction="long", size=1500.0 / 9, pnl=0.0, exit_reason="open"),
    ])
    np.testing.assert_allclose(out.equity[:, 0], [1000.0, 1200.0, 1500.0], rtol=1e-12)
    acc = out.acc[0]
    assert (acc[L.A_N_CLOSED], acc[L.A_N_WINS], acc[L.A_N_OPEN], acc[L.A_HOLD_BARS]) == (2, 2, 1, 2)
    assert acc[L.A_PNL_MEAN] == approx(250.0)
    assert acc[L.A_PNL_M2] == approx(2 * 50.0**2)


@pytest.mark.parametrize(
    ("direction", "exit_price"),
    [("long", 95.0), ("short", 105.0)],
)
def test_stop_loss_wins_when_sl_and_tp_touched_in_one_bar(direction, exit_price):
    entry = {"entries": [0]} if direction == "long" else {"short_entries": [0]}
    case = sc.single_column_case(
        [bar(100), bar(100, 106, 94, 100)], direction=direction, sl_stop=0.05, tp_stop=0.05,
        init_cash=1_000.0, **entry,
    )
    ref, out = run_both(case)
    expect_trades(ref, out, [dict(exit_idx=1, exit_price=exit_price, pnl=-50.0, exit_reason="sl")])


@pytest.mark.parametrize(
    ("direction", "stops", "next_bar", "exit_price", "reason"),
    [
        ("long", {"sl_stop": 0.05}, bar(90, 92, 88, 91), 90.0, "sl"),
        ("long", {"tp_stop": 0.10}, bar(115, 118, 112, 116), 115.0, "tp"),
        ("short", {"sl_stop": 0.05}, bar(110, 112, 108, 111), 110.0, "sl"),
        ("short", {"tp_stop": 0.10}, bar(85, 87, 83, 86), 85.0, "tp"),
        # not gapped: the level itself
        ("long", {"sl_stop": 0.05}, bar(99, 99, 94, 96), 95.0, "sl"),
        ("long", {"tp_stop": 0.10}, bar(101, 112, 100, 108), 110.0, "tp"),
        # touching the level exactly counts
        ("long", {"sl_stop": 0.5}, bar(60, 60, 50, 55), 50.0, "sl"),
    ],
)
def test_gap_through_a_stop_fills_at_the_open(direction, stops, next_bar, exit_price, reason):
    entry = {"entries": [0]} if direction == "long" else {"short_entries": [0]}
    case = sc.single_column_case([bar(100), next_bar], direction=direction, init_cash=1_000.0, **stops, **entry)
    ref, out = run_both(case)
    units = 10.0
    pnl = units * (exit_price - 100.0) * (1 if direction == "long" else -1)
    expect_trades(ref, out, [dict(exit_idx=1, exit_price=exit_price, pnl=pnl, exit_reason=reason)])


def test_stop_levels_use_the_price_before_slippage_and_stop_fills_pay_slippage():
    case = sc.single_column_case(
        [bar(100), bar(96, 97, 94.5, 95.5)], entries=[0], sl_stop=0.05, slippage=0.01, init_cash=1_010.0,
    )
    ref, out = run_both(case)
    # base 100 → level 95 (from the fill 101 it would be 95.95); sell at 95 * 0.99
    expect_trades(ref, out, [dict(entry_price=101.0, exit_price=95.0 * 0.99, size=10.0, exit_reason="sl")])


def test_trailing_stop_long():
    bars = [
        bar(100, 130, 95, 100),  # entry at the close; this bar's high must not raise the peak
        bar(101, 120, 100, 118),  # level 90: no hit; peak → 120
        bar(117, 119, 110, 112),  # level 108: no hit
        bar(111, 112, 105, 106),  # level 108: hit, fill min(111, 108)
    ]
    case = sc.single_column_case(bars, entries=[0], tsl_stop=0.1, sl_stop=0.05, init_cash=1_000.0)
    ref, out = run_both(case)
    expect_trades(ref, out, [dict(entry_idx=0, exit_idx=3, exit_price=108.0, pnl=80.0, exit_reason="tsl")])


def test_trailing_stop_short():
    bars = [bar(100, 105, 99, 100), bar(99, 100, 80, 82), bar(85, 89, 84, 88)]
    case = sc.single_column_case(bars, short_entries=[0], direction="short", tsl_stop=0.1, init_cash=1_000.0)
    ref, out = run_both(case)
    # trough 80 → level 88; bar 2's high 89 hits it, fill max(85, 88)
    expect_trades(ref, out, [dict(exit_idx=2, exit_price=88.0, pnl=120.0, exit_reason="tsl")])


def test_equal_sl_and_tsl_levels_report_sl():
    case = sc.single_column_case(
        [bar(100), bar(100, 100, 89, 90)], entries=[0], sl_stop=0.1, tsl_stop=0.1, init_cash=1_000.0,
    )
    ref, out = run_both(case)
    expect_trades(ref, out, [dict(exit_price=90.0, exit_reason="sl")])


def test_next_open_fill_across_nan_bars():
    bars = [
        bar(100, 101, 99, 100),  # 0: entry signal
        NAN_BAR,  # 1: invalid, its signal ignored
        bar(102, 103, 99, 102.5),  # 2: entry at the open 102; no stop check on the entry bar
        bar(104, 105, 103, 104),  # 3: exit signal
        (math.nan, 110, 100, 105),  # 4: one NaN price makes the bar invalid
        bar(106, 107, 105, 106),  # 5: exit at the open 106; the entry signal here is dropped
    ]
    case = sc.single_column_case(
        bars, entries=[0, 1, 5], exits=[3], fill="next_open", sl_stop=0.02, init_cash=1_000.0,
    )
    ref, out = run_both(case)
    units = 1_000.0 / 102
    expect_trades(ref, out, [dict(
        entry_idx=2, exit_idx=5, entry_price=102.0, exit_price=106.0, size=units, pnl=units * 106 - 1_000.0,
        exit_reason="signal",
    )])
    eq = [1_000.0, 1_000.0, units * 102.5, units * 104, units * 104, units * 106]
    np.testing.assert_allclose(out.equity[:, 0], eq, rtol=1e-12)
    assert out.returns[1, 0] == 0.0 and out.returns[4, 0] == 0.0
    assert out.acc[0, L.A_EXPOSURE_BARS] == 3  # bars 2, 3 and the invalid bar 4 held the position
    assert out.acc[0, L.A_N_OPEN] == 0


@pytest.mark.parametrize(
    ("opts", "units"),
    [
        ({"fractional": False, "fixed_fee": 5.0}, 33.0),  # floor(995 / 30)
        ({"fractional": True, "fixed_fee": 5.0}, 995.0 / 30),
        ({"fractional": False, "size_type": "units", "size": 2.7}, 2.0),
        ({"fractional": True, "size_type": "units", "size": 2.7}, 2.7),
        ({"fractional": True, "size_type": "units", "size": 1e6}, 1_000.0 / 30),  # capped by cash
        ({"fractional": True, "size_type": "value", "size": 5_000.0}, 1_000.0 / 30),  # capped by equity
        ({"fractional": True, "size_type": "value", "size": 300.0}, 10.0),
        ({"fractional": False, "size_type": "percent", "size": 0.5}, 16.0),
    ],
)
def test_sizing(opts, units):
    case = sc.single_column_case([bar(30), bar(31)], entries=[0], init_cash=1_000.0, **opts)
    ref, out = run_both(case)
    expect_trades(ref, out, [dict(size=units, exit_reason="open")])


def test_entry_skipped_when_not_even_one_whole_unit_is_affordable():
    case = sc.single_column_case([bar(30), bar(31)], entries=[0], init_cash=20.0, fractional=False)
    ref, out = run_both(case)
    assert ref.trades == [] and int(out.ntrades[0]) == 0
    np.testing.assert_array_equal(out.equity[:, 0], [20.0, 20.0])


@pytest.mark.parametrize("direction", ["long", "short"])
def test_open_trade_at_end(direction):
    bars = [bar(100), bar(105, 111, 104, 110), NAN_BAR]
    entry = {"entries": [0]} if direction == "long" else {"short_entries": [0]}
    case = sc.single_column_case(
        bars, direction=direction, fees=0.01, fixed_fee=1.0, init_cash=1_000.0, **entry,
    )
    ref, out = run_both(case)
    if direction == "long":
        units = (1_000.0 - 1.0) / (100 * 1.01)
        entry_fees = units * 100 * 0.01 + 1.0
        pnl = units * 110 - (units * 100 + entry_fees)
    else:
        units = (1_000.0 - 1.0) / (100 * 1.01)
        entry_fees = units * 100 * 0.01 + 1.0
        pnl = (units * 100 - entry_fees) - units * 110
    expect_trades(ref, out, [dict(
        entry_idx=0, exit_idx=1, size=units, exit_price=110.0, entry_fees=entry_fees, exit_fees=0.0,
        pnl=pnl, ret=pnl / (units * 100 + entry_fees), exit_reason="open",
    )])
    acc = out.acc[0]
    assert acc[L.A_N_OPEN] == 1 and acc[L.A_OPEN_PNL] == approx(pnl)
    assert acc[L.A_N_CLOSED] == 0 and math.isnan(acc[L.A_BEST_RET]) and math.isnan(acc[L.A_WORST_RET])
    assert acc[L.A_FINAL_EQUITY] == approx(1_000.0 + pnl)


def test_conflicting_and_repeated_signals():
    bars = [bar(10), bar(11), bar(12), bar(13), bar(14)]
    case = sc.single_column_case(
        bars,
        entries=[0, 1, 2], exits=[0],  # 0: entry+exit → neither; 1: entry; 2: entry while long → ignored
        short_entries=[3, 4], short_exits=[3],  # 3: short pair cancels; 4: reverse to short
        direction="both", init_cash=1_100.0,
    )
    ref, out = run_both(case)
    expect_trades(ref, out, [
        dict(entry_idx=1, exit_idx=4, direction="long", size=100.0, exit_reason="reverse"),
        dict(entry_idx=4, exit_idx=4, direction="short", exit_reason="open"),
    ])


def test_long_and_short_entry_on_one_bar_count_as_neither():
    case = sc.single_column_case([bar(10), bar(11)], entries=[0], short_entries=[0], direction="both")
    ref, out = run_both(case)
    assert ref.trades == [] and int(out.ntrades[0]) == 0


def test_pair_cancellation_comes_before_the_both_entries_rule():
    """Kernel's reading of an ambiguity: entries+exits cancel first, so the short entry counts."""
    case = sc.single_column_case(
        [bar(10), bar(11)], entries=[0], exits=[0], short_entries=[0], direction="both", init_cash=1_000.0,
    )
    ref, out = run_both(case)
    expect_trades(ref, out, [dict(entry_idx=0, direction="short", size=100.0, exit_reason="open")])


@pytest.mark.parametrize("direction", ["long", "short"])
def test_a_direction_ignores_the_other_sides_signals(direction):
    case = sc.single_column_case(
        [bar(10), bar(11), bar(12)], entries=[1], exits=[2], short_entries=[0], short_exits=[1],
        direction=direction, init_cash=1_000.0,
    )
    ref, out = run_both(case)
    if direction == "long":
        expect_trades(ref, out, [dict(entry_idx=1, exit_idx=2, direction="long", exit_reason="signal")])
    else:
        expect_trades(ref, out, [dict(entry_idx=0, exit_idx=1, direction="short", exit_reason="signal")])


def test_signal_on_the_stop_bar_is_honoured():
    case = sc.single_column_case(
        [bar(100), bar(100, 101, 90, 92), bar(93)], entries=[0, 1], sl_stop=0.05, init_cash=1_000.0,
    )
    ref, out = run_both(case)
    expect_trades(ref, out, [
        dict(entry_idx=0, exit_idx=1, exit_price=95.0, exit_reason="sl"),
        dict(entry_idx=1, exit_idx=2, entry_price=92.0, size=950.0 / 92, exit_reason="open"),
    ])


def test_stop_then_next_open_entry_is_not_stopped_on_its_entry_bar():
    case = sc.single_column_case(
        [bar(100), bar(100, 101, 90, 92), bar(93, 94, 80, 85), bar(86)],
        entries=[0, 1], sl_stop=0.05, fill="next_open", init_cash=1_000.0,
    )
    ref, out = run_both(case)
    # 0: entry signal → buy at bar 1's open 100; bar 1's low 90 does not stop it (entry bar);
    # 1: entry signal ignored (long); bar 2: low 80 ≤ 95 → stop at min(93, 95) = 93
    expect_trades(ref, out, [dict(entry_idx=1, exit_idx=2, entry_price=100.0, exit_price=93.0, exit_reason="sl")])


def test_returns_are_zero_after_ruin():
    bars = [bar(10), bar(25), bar(30), bar(20), bar(15)]
    case = sc.single_column_case(
        bars, short_entries=[0, 4], short_exits=[3], direction="short", init_cash=1_000.0,
    )
    ref, out = run_both(case)
    # short 100 @10: cash 2000; equity 1000, -500, -1000, 0 (covered @20), 0 (no new entry: equity ≤ 0)
    np.testing.assert_allclose(out.equity[:, 0], [1_000.0, -500.0, -1_000.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(out.returns[:, 0], [0.0, -1.5, 0.0, 0.0, 0.0], atol=1e-12)
    expect_trades(ref, out, [dict(pnl=-1_000.0, exit_reason="signal")])
    assert out.acc[0, L.A_MAX_DD] == approx(-2.0)


def test_accumulators_by_hand():
    closes = [100.0, 90.0, 95.0, 110.0, 105.0]
    case = sc.single_column_case(
        [bar(c) for c in closes], entries=[0], exits=[4], init_cash=1_000.0, risk_free=0.01,
    )
    _, out = run_both(case)
    eq = [10 * c for c in closes]
    r = [e / p - 1 for e, p in zip(eq, [1_000.0, *eq[:-1]], strict=True)]
    mean = sum(r) / 5
    acc = out.acc[0]
    assert acc[L.A_N_BARS] == 5
    assert acc[L.A_RET_MEAN] == approx(mean)
    assert acc[L.A_RET_M2] == approx(sum((x - mean) ** 2 for x in r))
    assert acc[L.A_DOWN_SQ] == approx(sum(min(x - 0.01, 0.0) ** 2 for x in r))
    assert acc[L.A_OMEGA_POS] == approx(sum(max(x - 0.01, 0.0) for x in r))
    assert acc[L.A_OMEGA_NEG] == approx(sum(max(0.01 - x, 0.0) for x in r))
    assert acc[L.A_MAX_DD] == approx(-0.1)
    assert acc[L.A_MAX_DD_BARS] == 2  # bars 1-2 below 1000; bar 4 below 1100
    assert acc[L.A_EXPOSURE_BARS] == 4  # flat after the exit on bar 4
    assert acc[L.A_HOLD_BARS] == 4
    assert acc[L.A_BEST_RET] == approx(0.05) and acc[L.A_WORST_RET] == approx(0.05)


def test_zero_bars():
    case = sc.single_column_case(np.zeros((0, 4)))
    ref, out = run_both(case)
    assert ref.equity == [] and ref.trades == []
    acc = out.acc[0]
    assert acc[L.A_FINAL_EQUITY] == 100_000.0 and acc[L.A_N_BARS] == 0 and int(out.ntrades[0]) == 0


def test_trade_records_are_truncated_at_max_trades():
    closes = [10.0, 11.0, 10.5, 12.0, 11.0, 13.0, 12.5]
    case = sc.single_column_case(
        [bar(c) for c in closes], entries=[0, 2, 4], exits=[1, 3, 5], init_cash=1_000.0,
    )
    ref, out = run_both(case, max_trades=2)
    assert len(ref.trades) == 3 and int(out.ntrades[0]) == 2
    assert out.acc[0, L.A_N_CLOSED] == 3  # the accumulators still see every trade


def test_reference_options_defaults_match_the_doc():
    o = Options()
    assert (o.init_cash, o.fees, o.fixed_fee, o.slippage, o.size, o.size_type) == (100_000.0, 0, 0, 0, 1.0, "percent")
    assert (o.fractional, o.fill, o.direction, o.sl_stop, o.tp_stop, o.tsl_stop) == (True, "close", "long", 0, 0, 0)
    res = simulate_reference([10.0, 11.0], [10.0, 11.0], [10.0, 11.0], [10.0, 11.0],
                             [True, False], [False, True], [False, False], [False, False])
    assert res.trades[0].pnl == pytest.approx(10_000.0)
