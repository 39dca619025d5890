"""Tests of core/metrics.py against empyrical, plain Python and the simulation kernel.

* record mode (`metrics_from_records`) on ``equity = init_cash * cumprod(1 + r)`` agrees with
  empyrical on every return-based metric;
* `series_metrics` agrees with empyrical's tail_ratio, value_at_risk,
  conditional_value_at_risk and alpha_beta;
* sweep mode (`metrics_from_accumulators`) on the accumulators of a real CPU kernel run
  (buy and hold) agrees with empyrical on the returns that run produced;
* trade statistics agree with a plain-Python computation on random trade lists;
* sweep mode equals record mode on kernel runs with random signals, costs and stops.

Where we deliberately differ from empyrical (a zero denominator gives NaN here, ±inf there)
the expected value is mapped before comparing; docs/metrics.md lists those rules.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import empyrical
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_backtest.core import metrics as M
from gpu_backtest.core.metrics import (
    ALL_METRICS,
    METRICS,
    SERIES_METRICS,
    metric_direction,
    metrics_from_accumulators,
    metrics_from_records,
    returns_from_equity,
    series_metrics,
)
from gpu_backtest.core.simulate import layout as L
from gpu_backtest.core.simulate.cpu import simulate

RTOL = 1e-9
ATOL = 1e-12  # only matters for values that are ~0 (a relative tolerance cannot apply there)
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CURRENCY_METRICS = ("expectancy", "avg_win", "avg_loss", "open_pnl", "final_equity")
RETURN_METRICS = (
    "total_return", "cagr", "annual_volatility", "sharpe", "sortino", "calmar",
    "max_drawdown", "omega",
)


# ------------------------------------------------------------------------------------------
# strategies and helpers
# ------------------------------------------------------------------------------------------


@st.composite
def return_series(draw, n: int) -> np.ndarray:
    """A fresh random per-bar return series of length ``n``: never all zeros, all > -1."""
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["normal", "negative", "positive", "fat", "sparse"]))
    scale = draw(st.sampled_from([1e-3, 1e-2, 3e-2, 1e-1]))
    rng = np.random.default_rng(seed)
    if kind == "normal":
        r = rng.normal(0.0005, scale, n)
    elif kind == "negative":  # mostly losses
        r = -np.abs(rng.normal(0.0, scale, n)) + rng.normal(0.0, scale / 5, n)
    elif kind == "positive":  # mostly (possibly only) gains
        r = np.abs(rng.normal(0.0, scale, n)) - np.abs(rng.normal(0.0, scale / 10, n)) * (rng.random(n) < 0.1)
    elif kind == "fat":
        r = rng.standard_t(3, n) * scale
    else:  # long flat stretches, like a strategy that is mostly out of the market
        r = rng.normal(0.0, scale, n) * (rng.random(n) < 0.2)
    r = np.clip(r, -0.9, 5.0)
    if not np.any(r):
        r[rng.integers(n)] = -scale
    return r


@st.composite
def return_matrix(draw, min_len: int = 2, max_len: int = 400) -> np.ndarray:
    """(T, C) returns: 1-3 columns of one random length (mix of short and long series)."""
    n = draw(st.one_of(st.integers(min_len, 12), st.integers(min_len, max_len)))
    n_cols = draw(st.integers(1, 3))
    return np.column_stack([draw(return_series(n)) for _ in range(n_cols)])


def assert_close(actual, expected, name: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
        rtol=rtol, atol=atol, equal_nan=True, err_msg=name,
    )


def inf_to_nan(x: float) -> float:
    """empyrical gives ±inf for a nonzero mean over a zero denominator; we give NaN."""
    return math.nan if math.isinf(x) else x


def empyrical_return_metrics(r: np.ndarray, rf: float, ppy: float) -> dict[str, float]:
    """What empyrical says for one column of per-bar returns."""
    with np.errstate(all="ignore"):
        mdd = empyrical.max_drawdown(np.r_[0.0, r])
        cagr = empyrical.annual_return(r, annualization=ppy)
        return {
            "total_return": empyrical.cum_returns_final(r),
            "cagr": cagr,
            "annual_volatility": empyrical.annual_volatility(r, annualization=ppy),
            "sharpe": inf_to_nan(empyrical.sharpe_ratio(r, risk_free=rf, annualization=ppy)),
            "sortino": inf_to_nan(empyrical.sortino_ratio(r, required_return=rf, annualization=ppy)),
            "max_drawdown": mdd,
            # calmar with the init_cash-anchored drawdown (see docs/metrics.md)
            "calmar": inf_to_nan(cagr / abs(mdd)) if mdd < 0 else math.nan,
            "omega": empyrical.omega_ratio(r, risk_free=rf, required_return=0.0),
        }


def conditioned_rtol(name: str, want: dict[str, float]) -> float:
    """Calmar divides by the drawdown, which the equity curve only knows to ~1e-16 of equity:
    a drawdown of 3e-8 carries a relative error of ~3e-9 into Calmar. Widen for that alone."""
    mdd = abs(want.get("max_drawdown", 0.0))
    if name == "calmar" and 0 < mdd:
        return RTOL + 1e-14 / mdd
    return RTOL


def plain_drawdown(equity: np.ndarray, init_cash: float) -> tuple[float, int]:
    """Max drawdown and longest underwater run of one equity curve, by a plain loop."""
    peak, worst, run, longest = init_cash, 0.0, 0, 0
    for e in equity:
        if e > peak:
            peak, run = e, 0
        elif e < peak:
            run += 1
            longest = max(longest, run)
            worst = min(worst, e / peak - 1.0)
        else:
            run = 0
    return worst, longest


def no_trades(n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n_cols, 1, L.N_TFIELDS)), np.zeros(n_cols, dtype=np.int64)


# ------------------------------------------------------------------------------------------
# API shape
# ------------------------------------------------------------------------------------------


def test_metric_names_and_directions():
    assert len(METRICS) == len(set(METRICS)) == 28
    assert set(SERIES_METRICS) <= set(METRICS)
    for name in METRICS:
        assert metric_direction(name) in (1, -1)
    assert metric_direction("max_drawdown") == 1
    assert metric_direction("annual_volatility") == -1
    assert metric_direction("sharpe") == 1
    with pytest.raises(KeyError):
        metric_direction("nope")


def test_every_metric_is_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    headings = set(re.findall(r"^### `(\w+)`", text, flags=re.M))
    assert headings == set(ALL_METRICS)


def test_keys_and_shapes():
    r = np.random.default_rng(1).normal(0, 0.01, (50, 4))
    eq = 1e5 * np.cumprod(1 + r, axis=0)
    rec = metrics_from_records(eq, *no_trades(4), 1e5, 252)
    assert tuple(rec) == tuple(m for m in METRICS if m not in SERIES_METRICS)
    ser = series_metrics(r, 252)
    assert tuple(ser) == SERIES_METRICS
    acc = np.zeros((4, L.N_ACC))
    acc[:, L.A_FINAL_EQUITY] = 1e5
    sw = metrics_from_accumulators(acc, 1e5, 252)
    assert tuple(sw) == tuple(rec)
    for d in (rec, ser, sw):
        for v in d.values():
            assert v.shape == (4,) and v.dtype == np.float64
    # no benchmark: alpha/beta NaN
    assert np.isnan(ser["alpha"]).all() and np.isnan(ser["beta"]).all()


def test_scan_max_matches_numpy_accumulate():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7, 64, 100, 257):
        x = rng.normal(size=(n, 3))
        np.testing.assert_array_equal(M._scan_max0(x, np), np.maximum.accumulate(x, axis=0))


# ------------------------------------------------------------------------------------------
# record mode and series metrics vs empyrical
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(
    r=return_matrix(),
    init_cash=st.sampled_from([1e5, 1234.5, 1e7]),
    rf=st.sampled_from([0.0, 1e-4, -5e-5]),
    ppy=st.sampled_from([252, 52, 12, 365.25]),
)
def test_record_mode_matches_empyrical(r, init_cash, rf, ppy):
    equity = init_cash * np.cumprod(1.0 + r, axis=0)
    np.testing.assert_allclose(returns_from_equity(equity, init_cash), r, rtol=1e-9, atol=1e-15)
    got = metrics_from_records(equity, *no_trades(r.shape[1]), init_cash, ppy, rf)
    for c in range(r.shape[1]):
        want = empyrical_return_metrics(r[:, c], rf, ppy)
        for name in RETURN_METRICS:
            assert_close(got[name][c], want[name], f"{name} col {c}", rtol=conditioned_rtol(name, want))
        worst, longest = plain_drawdown(equity[:, c], init_cash)
        assert_close(got["max_drawdown"][c], worst, "max_drawdown (plain)", atol=0)
        assert got["max_drawdown_duration"][c] == longest
        assert got["final_equity"][c] == equity[-1, c]
        assert got["exposure"][c] == 0 and got["num_trades"][c] == 0


def test_first_bar_loss_counts_in_drawdown():
    r = np.array([[-0.1], [0.05], [0.0]])
    equity = 100.0 * np.cumprod(1 + r, axis=0)
    got = metrics_from_records(equity, *no_trades(1), 100.0, 252)
    assert_close(got["max_drawdown"][0], -0.1, "mdd")
    assert got["max_drawdown_duration"][0] == 3
    # empyrical anchors its peak at the start value too (equivalent to prepending a 0 return)
    assert_close(empyrical.max_drawdown(r[:, 0]), -0.1, "empyrical mdd")


@SETTINGS
@given(
    r=return_matrix(min_len=1),
    rf=st.sampled_from([0.0, 1e-4]),
    ppy=st.sampled_from([252, 52]),
    data=st.data(),
)
def test_series_metrics_match_empyrical(r, rf, ppy, data):
    bench = data.draw(return_series(r.shape[0]))
    got = series_metrics(r, ppy, rf, benchmark=bench)
    for c in range(r.shape[1]):
        x = r[:, c]
        with np.errstate(all="ignore"):
            assert_close(got["tail_ratio"][c], inf_to_nan(empyrical.tail_ratio(x)), "tail_ratio")
            assert_close(got["var_95"][c], empyrical.value_at_risk(x, cutoff=0.05), "var_95")
            assert_close(got["cvar_95"][c], empyrical.conditional_value_at_risk(x, cutoff=0.05), "cvar_95")
            alpha, beta = empyrical.alpha_beta(x, bench, risk_free=rf, annualization=ppy)
        assert_close(got["alpha"][c], alpha, "alpha")
        assert_close(got["beta"][c], beta, "beta")


def test_series_metrics_constant_benchmark_gives_nan_beta():
    r = np.random.default_rng(0).normal(0, 0.01, (30, 2))
    got = series_metrics(r, 252, benchmark=np.full(30, 0.001))
    assert np.isnan(got["beta"]).all() and np.isnan(got["alpha"]).all()


# ------------------------------------------------------------------------------------------
# kernel runs
# ------------------------------------------------------------------------------------------


def make_opts(
    init_cash=1e5, fees=0.0, fixed_fee=0.0, slippage=0.0, size=1.0, sl=0.0, tp=0.0, tsl=0.0, rf=0.0,
    fill=L.FILL_CLOSE, direction=L.DIR_LONG, size_type=L.SIZE_PERCENT, fractional=1, want_returns=1,
    record=0,
):
    fopts = np.zeros(L.N_FOPTS)
    fopts[L.F_INIT_CASH] = init_cash
    fopts[L.F_FEES] = fees
    fopts[L.F_FIXED_FEE] = fixed_fee
    fopts[L.F_SLIPPAGE] = slippage
    fopts[L.F_SIZE] = size
    fopts[L.F_SL_STOP] = sl
    fopts[L.F_TP_STOP] = tp
    fopts[L.F_TSL_STOP] = tsl
    fopts[L.F_RISK_FREE] = rf
    iopts = np.zeros(L.N_IOPTS, dtype=np.int64)
    iopts[L.I_FILL] = fill
    iopts[L.I_DIRECTION] = direction
    iopts[L.I_SIZE_TYPE] = size_type
    iopts[L.I_FRACTIONAL] = fractional
    iopts[L.I_WANT_RETURNS] = want_returns
    iopts[L.I_RECORD] = record
    return fopts, iopts


def run_kernel(o, h, lo, c, sym, entries, exits, short_entries, short_exits, fopts, iopts):
    """Run the CPU kernel with full output buffers; returns (acc, returns, equity, trades, n)."""
    n_t, n_cols = c.shape[0], sym.shape[0]
    returns_out = np.full((n_t, n_cols), np.nan)
    equity_out = np.full((n_t, n_cols), np.nan)
    trades_out = np.full((n_cols, n_t + 1, L.N_TFIELDS), np.nan)
    ntrades_out = np.zeros(n_cols, dtype=np.int64)
    acc = simulate(
        o, h, lo, c, sym, entries, exits, short_entries, short_exits, fopts, iopts,
        returns_out, equity_out, trades_out, ntrades_out,
    )
    return acc, returns_out, equity_out, trades_out, ntrades_out


@SETTINGS
@given(
    r=return_matrix(min_len=2, max_len=300),
    rf=st.sampled_from([0.0, 1e-4]),
    ppy=st.sampled_from([252, 52]),
)
def test_sweep_mode_matches_empyrical_on_buy_and_hold(r, rf, ppy):
    r = r.copy()
    r[0] = 0.0  # close_0 = 100 exactly, so the whole 1e5 buys exactly 1000 units: r_0 = 0
    close = np.ascontiguousarray(100.0 * np.cumprod(1.0 + r, axis=0))
    n_t, n_cols = close.shape
    sym = np.arange(n_cols, dtype=np.int64)
    entries = np.zeros((n_t, n_cols), dtype=np.bool_)
    entries[0] = True
    exits = np.zeros((n_t, n_cols), dtype=np.bool_)
    dummy = np.zeros((1, 1), dtype=np.bool_)
    fopts, iopts = make_opts(rf=rf)
    acc, rets, _, _, _ = run_kernel(close, close, close, close, sym, entries, exits, dummy, dummy, fopts, iopts)
    got = metrics_from_accumulators(acc, 1e5, ppy, rf)
    ser = series_metrics(rets, ppy, rf)
    for c in range(n_cols):
        x = rets[:, c]
        assert x[0] == 0.0
        np.testing.assert_allclose(x[1:], r[1:, c], rtol=1e-9, atol=1e-15)
        want = empyrical_return_metrics(x, rf, ppy)
        for name in RETURN_METRICS:
            assert_close(got[name][c], want[name], f"{name} col {c}", rtol=conditioned_rtol(name, want))
        assert_close(ser["var_95"][c], empyrical.value_at_risk(x), "var_95")
        assert got["exposure"][c] == 1.0
        assert got["num_trades"][c] == 0 and got["num_open_trades"][c] == 1
        assert_close(got["open_pnl"][c], got["final_equity"][c] - 1e5, "open_pnl", atol=1e-6)


@st.composite
def kernel_case(draw):
    """Random bars (with some missing ones), signals, costs, stops and options."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_t = draw(st.integers(2, 150))
    n_sym = draw(st.integers(1, 3))
    n_cols = draw(st.integers(1, 6))
    vol = draw(st.sampled_from([0.005, 0.02, 0.05]))
    close = 100.0 * np.cumprod(1.0 + rng.normal(0.0, vol, (n_t, n_sym)), axis=0)
    close = np.maximum(close, 0.01)
    open_ = close * (1.0 + rng.normal(0.0, vol / 2, (n_t, n_sym)))
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, vol / 2, (n_t, n_sym))))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, vol / 2, (n_t, n_sym))))
    if draw(st.booleans()):
        missing = rng.random((n_t, n_sym)) < 0.05
        for a in (open_, high, low, close):
            a[missing] = np.nan
    direction = draw(st.sampled_from([L.DIR_LONG, L.DIR_SHORT, L.DIR_BOTH]))
    p = draw(st.sampled_from([0.05, 0.15, 0.4]))

    def sig():
        return np.ascontiguousarray(rng.random((n_t, n_cols)) < p)

    entries, exits = sig(), sig()
    if direction == L.DIR_LONG:
        short_entries = short_exits = np.zeros((1, 1), dtype=np.bool_)
    else:
        short_entries, short_exits = sig(), sig()
    fopts, iopts = make_opts(
        fees=draw(st.sampled_from([0.0, 0.001, 0.01])),
        fixed_fee=draw(st.sampled_from([0.0, 1.0])),
        slippage=draw(st.sampled_from([0.0, 0.0005])),
        size=draw(st.sampled_from([1.0, 0.5, 0.1])),
        sl=draw(st.sampled_from([0.0, 0.02, 0.1])),
        tp=draw(st.sampled_from([0.0, 0.03, 0.2])),
        tsl=draw(st.sampled_from([0.0, 0.05])),
        rf=draw(st.sampled_from([0.0, 1e-4])),
        fill=draw(st.sampled_from([L.FILL_CLOSE, L.FILL_NEXT_OPEN])),
        direction=direction,
        fractional=draw(st.sampled_from([0, 1])),
        want_returns=1,
        record=1,
    )
    sym = rng.integers(0, n_sym, n_cols).astype(np.int64)
    prices = [np.ascontiguousarray(a) for a in (open_, high, low, close)]
    return (*prices, sym, entries, exits, short_entries, short_exits, fopts, iopts)


@SETTINGS
@given(case=kernel_case(), ppy=st.sampled_from([252, 52]))
def test_sweep_equals_record_on_kernel_runs(case, ppy):
    fopts = case[-2]
    init_cash, rf = fopts[L.F_INIT_CASH], fopts[L.F_RISK_FREE]
    acc, rets, equity, trades, ntrades = run_kernel(*case)
    np.testing.assert_allclose(returns_from_equity(equity, init_cash), rets, rtol=0, atol=0)
    sweep = metrics_from_accumulators(acc, init_cash, ppy, rf)
    record = metrics_from_records(equity, trades, ntrades, init_cash, ppy, rf)
    assert tuple(sweep) == tuple(record)
    for name in sweep:
        # currency metrics get an absolute tolerance scaled to the account size (a mean pnl
        # that cancels to ~0 is computed by Welford in one mode and by a sum in the other)
        atol = 1e-12 * init_cash if name in CURRENCY_METRICS else ATOL
        assert_close(sweep[name], record[name], name, atol=atol)


# ------------------------------------------------------------------------------------------
# trade statistics vs plain Python
# ------------------------------------------------------------------------------------------


@st.composite
def trade_list(draw):
    """Non-overlapping trades on a T-bar axis with random pnl/returns; maybe one open trade."""
    n_t = draw(st.integers(2, 80))
    n = draw(st.integers(0, 12))
    cuts = sorted(draw(st.lists(st.integers(0, n_t - 1), min_size=2 * n, max_size=2 * n)))
    pnl_values = st.one_of(
        st.just(0.0),
        st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
        st.sampled_from([-250.0, 125.5, 1000.0]),
    )
    rows = []
    for i in range(n):
        entry, exit_ = cuts[2 * i], cuts[2 * i + 1]
        if exit_ <= entry:
            continue
        pnl = draw(pnl_values)
        rows.append((entry, exit_, pnl, pnl / 1e4, draw(st.sampled_from([1, 2, 3, 4, 5]))))
    open_trade = None
    last_exit = rows[-1][1] if rows else 0
    if draw(st.booleans()) and last_exit < n_t:
        entry = draw(st.integers(last_exit, n_t - 1))
        open_trade = (entry, n_t - 1, draw(pnl_values), 0.0, L.R_OPEN)
    return n_t, rows, open_trade


def plain_trade_stats(n_t, rows, open_trade):
    pnls = [r[2] for r in rows]
    rets = [r[3] for r in rows]
    n = len(pnls)
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    nan = math.nan
    if n == 0:
        pf = nan
    elif not losses:
        pf = math.inf if sum(wins) > 0 else nan
    else:
        pf = sum(wins) / abs(sum(losses))
    if n >= 2:
        mean = sum(pnls) / n
        std = math.sqrt(sum((p - mean) ** 2 for p in pnls) / (n - 1))
        sqn = math.sqrt(n) * mean / std if std > 0 and max(pnls) != min(pnls) else nan
    else:
        sqn = nan
    held = [False] * n_t
    for entry, exit_, *_ in rows:
        for t in range(entry, exit_):
            held[t] = True
    if open_trade is not None:
        for t in range(open_trade[0], n_t):
            held[t] = True
    return {
        "num_trades": n,
        "win_rate": len(wins) / n if n else nan,
        "profit_factor": pf,
        "expectancy": sum(pnls) / n if n else nan,
        "avg_win": sum(wins) / len(wins) if wins else nan,
        "avg_loss": sum(losses) / len(losses) if losses else nan,
        "best_trade": max(rets) if rets else nan,
        "worst_trade": min(rets) if rets else nan,
        "avg_holding_bars": sum(r[1] - r[0] for r in rows) / n if n else nan,
        "exposure": sum(held) / n_t,
        "sqn": sqn,
        "num_open_trades": 0 if open_trade is None else 1,
        "open_pnl": 0.0 if open_trade is None else open_trade[2],
    }


@SETTINGS
@given(cols=st.lists(trade_list(), min_size=1, max_size=4), garbage=st.booleans())
def test_trade_stats_match_plain_python(cols, garbage):
    n_t = max(c[0] for c in cols)
    cols = [(n_t, rows, ot) for _, rows, ot in cols]  # one bar axis for all columns
    n_cols = len(cols)
    max_rows = max(len(rows) + 1 for _, rows, _ in cols)
    trades = np.full((n_cols, max_rows, L.N_TFIELDS), np.nan if garbage else 0.0)
    ntr = np.zeros(n_cols, dtype=np.int64)
    for ci, (_, rows, open_trade) in enumerate(cols):
        all_rows = [*rows, open_trade] if open_trade is not None else rows
        for i, (entry, exit_, pnl, ret, reason) in enumerate(all_rows):
            trades[ci, i, L.T_ENTRY_IDX] = entry
            trades[ci, i, L.T_EXIT_IDX] = exit_
            trades[ci, i, L.T_PNL] = pnl
            trades[ci, i, L.T_RETURN] = ret
            trades[ci, i, L.T_EXIT_REASON] = reason
        ntr[ci] = len(all_rows)
    equity = np.full((n_t, n_cols), 1e5)
    got = metrics_from_records(equity, trades, ntr, 1e5, 252)
    for ci, col in enumerate(cols):
        want = plain_trade_stats(*col)
        for name, value in want.items():
            assert_close(got[name][ci], value, f"{name} col {ci}", atol=1e-9)


def test_trade_stat_nan_rules():
    # column 0: no trades; 1: one winner; 2: winners only; 3: all pnl 0; 4: losers only
    pnls = [[], [10.0], [10.0, 20.0], [0.0, 0.0], [-5.0, -15.0]]
    trades = np.zeros((5, 3, L.N_TFIELDS))
    ntr = np.zeros(5, dtype=np.int64)
    for ci, ps in enumerate(pnls):
        for i, p in enumerate(ps):
            trades[ci, i, L.T_ENTRY_IDX] = 2 * i
            trades[ci, i, L.T_EXIT_IDX] = 2 * i + 1
            trades[ci, i, L.T_PNL] = p
            trades[ci, i, L.T_EXIT_REASON] = L.R_SIGNAL
        ntr[ci] = len(ps)
    got = metrics_from_records(np.full((6, 5), 1e5), trades, ntr, 1e5, 252)
    pf = got["profit_factor"]
    assert np.isnan(pf[0]) and pf[1] == np.inf and pf[2] == np.inf and np.isnan(pf[3]) and pf[4] == 0.0
    assert np.isnan(got["win_rate"][0]) and got["win_rate"][3] == 0.0
    assert np.isnan(got["sqn"][[0, 1, 3]]).all()  # <2 trades, or zero std
    assert_close(got["sqn"][4], math.sqrt(2) * -10.0 / math.sqrt(50.0), "sqn")
    assert np.isnan(got["avg_loss"][:4]).all() and got["avg_loss"][4] == -10.0
    assert np.isnan(got["avg_win"][[0, 3, 4]]).all()
    # flat equity: no volatility, no drawdown, NaN ratios
    for name in ("sharpe", "sortino", "calmar", "omega"):
        assert np.isnan(got[name]).all(), name
    assert (got["annual_volatility"] == 0).all() and (got["max_drawdown"] == 0).all()


def test_return_metric_nan_rules():
    # constant positive returns: zero std -> Sharpe NaN (empyrical: inf); no downside -> Sortino
    # NaN; no bar below threshold -> omega NaN; never below peak -> Calmar NaN
    equity = 100.0 * 1.5 ** np.arange(1, 21, dtype=float)[:, None]  # exact: every r_t is 0.5
    np.testing.assert_array_equal(returns_from_equity(equity, 100.0), 0.5)
    got = metrics_from_records(equity, *no_trades(1), 100.0, 252)
    for name in ("sharpe", "sortino", "omega", "calmar"):
        assert np.isnan(got[name][0]), name
    assert got["max_drawdown"][0] == 0.0 and got["max_drawdown_duration"][0] == 0
    # a single bar: volatility and ratios need two returns
    one = metrics_from_records(np.array([[90.0]]), *no_trades(1), 100.0, 252)
    assert np.isnan(one["annual_volatility"][0]) and np.isnan(one["sharpe"][0])
    assert_close(one["max_drawdown"][0], -0.1, "mdd")
    # ruin (only possible for shorts): CAGR NaN when final equity <= 0; returns 0 after ruin
    eq = np.array([[50.0], [-10.0], [-20.0]])
    ruin = metrics_from_records(eq, *no_trades(1), 100.0, 252)
    assert np.isnan(ruin["cagr"][0]) and ruin["total_return"][0] == -1.2
    np.testing.assert_array_equal(returns_from_equity(eq, 100.0)[:, 0], [-0.5, -1.2, 0.0])
