"""Portfolio target-weight rules (core/portfolio_rules.py) against docs/semantics.md, "Target weights".

Property tests (hypothesis, bounded) check each vectorised rule against a slow plain-Python
(or pandas) reference written from the docs: rebalance schedules, selection, weighting, the
max-weight cap and the built-in scores, on universes of 1–8 symbols over 5–80 bars with
NaN scores and ties. Example tests pin hand-computed numbers (ties, cap redistribution,
month and quarter boundaries), and an end-to-end test runs xs_momentum scores → weights →
`run_portfolio_cpu` and compares the equity with tests/portfolio_reference.py.
"""

from __future__ import annotations

import math
import os
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from portfolio_reference import PortfolioOptions, simulate_portfolio_reference

from gpu_backtest.core import portfolio_rules as R
from gpu_backtest.core.simulate import portfolio_layout as P
from gpu_backtest.core.simulate.portfolio import run_portfolio_cpu

NAN = math.nan
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- references


def ref_flags(timestamps: list[int], rule: str | int) -> list[bool]:
    if isinstance(rule, int):
        return [t % rule == 0 for t in range(len(timestamps))]
    out, prev = [], None
    for ts in timestamps:
        d = (EPOCH + timedelta(microseconds=ts // 1000)).date()
        if rule == "1d":
            key = d
        elif rule == "1w":
            key = d - timedelta(days=d.weekday())  # the Monday of its week
        elif rule == "1m":
            key = (d.year, d.month)
        else:
            key = (d.year, (d.month - 1) // 3)
        out.append(prev is None or key != prev)
        prev = key
    return out


def ref_select(col: list[float], rule: str, n: int, q: float) -> set[int]:
    elig = [(s, v) for s, v in enumerate(col) if math.isfinite(v)]
    if rule == "bottom_n":
        ranked = sorted(elig, key=lambda x: (x[1], x[0]))
        count = n
    else:
        ranked = sorted(elig, key=lambda x: (-x[1], x[0]))
        count = n if rule == "top_n" else math.ceil(q * len(elig) - 1e-9)
    return {s for s, _ in ranked[:count]}


def ref_weigh(col: list[float], chosen: set[int], weighting: str, vol: list[float]) -> list[float]:
    raw = [0.0] * len(col)
    for s in chosen:
        if weighting == "equal":
            raw[s] = 1.0
        elif weighting == "score" and col[s] > 0:
            raw[s] = col[s]
        elif weighting == "inverse_volatility" and math.isfinite(vol[s]) and vol[s] > 0:
            raw[s] = 1.0 / vol[s]
    total = sum(raw)
    return [r / total if total > 0 else 0.0 for r in raw]


def ref_cap(w: list[float], m: float) -> list[float]:
    w = list(w)
    capped: set[int] = set()
    while True:
        over = [s for s in range(len(w)) if w[s] > m]
        if not over:
            return w
        excess = sum(w[s] - m for s in over)
        for s in over:
            w[s] = m
            capped.add(s)
        takers = [s for s in range(len(w)) if s not in capped and w[s] > 0]
        room = sum(w[s] for s in takers)
        if room > 0:
            for s in takers:
                w[s] += excess * w[s] / room


def ref_target(scores, rule, n, q, weighting, vol, max_weight, lev, buf) -> np.ndarray:
    n_bars, _, n_combos = scores.shape
    out = np.zeros(scores.shape)
    for k in range(n_combos):
        for t in range(n_bars):
            col = [float(x) for x in scores[t, :, k]]
            v = [float(x) for x in vol[t, :]] if vol is not None else []
            w = ref_weigh(col, ref_select(col, rule, n[k], q[k]), weighting, v)
            w = [x * lev for x in w]
            if max_weight is not None:
                w = ref_cap(w, max_weight)
            out[t, :, k] = [x * (1 - buf) for x in w]
    return out


# --------------------------------------------------------------------------- inputs


def make_scores(rng: np.random.Generator, shape: tuple[int, int, int], nan_p: float, ties: bool) -> np.ndarray:
    if ties:  # few distinct values: many ties
        x = rng.choice([-2.0, -0.5, 1.0, 1.5, 3.0], size=shape)
    else:
        x = rng.normal(0.3, 1.0, size=shape)
    x[rng.random(shape) < nan_p] = NAN
    return x


def make_close(rng: np.random.Generator, n_bars: int, n_sym: int, nan_p: float) -> np.ndarray:
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_sym)), axis=0))
    close[rng.random((n_bars, n_sym)) < nan_p] = NAN
    return close


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_bars=st.integers(5, 80),
    start=st.integers(-15 * 10**17, 22 * 10**17),  # ~1922 .. ~2039
    max_step_h=st.sampled_from([1, 7, 30, 200, 2500]),
    rule=st.sampled_from(["1d", "1w", "1m", "1q", 1, 3, 7]),
)
def test_rebalance_flags_match_calendar_reference(seed, n_bars, start, max_step_h, rule):
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, max_step_h * 3600, size=n_bars - 1) * 10**9  # seconds → ns
    ts = np.concatenate([[start], start + np.cumsum(steps)]).astype(np.int64)
    got = R.rebalance_flags(ts, rule, n_bars)
    assert got.dtype == bool and got[0]
    assert got.tolist() == ref_flags([int(x) for x in ts], rule)


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_bars=st.integers(5, 80),
    n_sym=st.integers(1, 8),
    n_combos=st.integers(1, 3),
    nan_p=st.sampled_from([0.0, 0.2, 0.6]),
    ties=st.booleans(),
    rule=st.sampled_from(["top_n", "bottom_n", "quantile"]),
    weighting=st.sampled_from(["equal", "score", "inverse_volatility"]),
    max_weight=st.sampled_from([None, 0.05, 0.2, 0.35, 0.6]),
    lev=st.sampled_from([1.0, 0.5, 1.5]),
    buf=st.sampled_from([0.0, 0.1]),
)
def test_target_weights_match_reference(
    seed, n_bars, n_sym, n_combos, nan_p, ties, rule, weighting, max_weight, lev, buf
):
    rng = np.random.default_rng(seed)
    scores = make_scores(rng, (n_bars, n_sym, n_combos), nan_p, ties)
    vol = rng.uniform(0.005, 0.05, (n_bars, n_sym))
    vol[rng.random(vol.shape) < 0.1] = NAN
    n = [int(x) for x in rng.integers(1, n_sym + 2, size=n_combos)]
    q = [float(x) for x in rng.choice([0.1, 0.25, 0.3, 0.5, 1.0], size=n_combos)]
    got = R.target_weights(
        np, scores, rule, n=n, quantile=q, weighting=weighting, volatility=vol,
        max_weight=max_weight, gross_leverage=lev, cash_buffer=buf,
    )
    want = ref_target(scores, rule, n, q, weighting, vol, max_weight, lev, buf)
    assert got.shape == scores.shape and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert (got[~np.isfinite(scores)] == 0.0).all()  # NaN score: never selected
    if max_weight is not None:
        assert (got <= max_weight * (1 - buf) * (1 + 1e-12)).all()


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_sym=st.integers(1, 8),
    n_combos=st.integers(1, 3),
    m=st.sampled_from([0.05, 0.15, 0.3, 0.5]),
)
def test_cap_weights_reference_and_invariants(seed, n_sym, n_combos, m):
    rng = np.random.default_rng(seed)
    raw = rng.exponential(1.0, (6, n_sym, n_combos)) * (rng.random((6, n_sym, n_combos)) < 0.8)
    total = raw.sum(axis=1, keepdims=True)
    w = np.where(total > 0, raw / np.where(total > 0, total, 1), 0.0)
    got = R.cap_weights(np, w, m)
    for t in range(w.shape[0]):
        for k in range(n_combos):
            want = ref_cap([float(x) for x in w[t, :, k]], m)
            np.testing.assert_allclose(got[t, :, k], want, rtol=1e-12, atol=1e-13)
            n_pos = int((w[t, :, k] > 0).sum())
            assert got[t, :, k].sum() == pytest.approx(min(1.0, m * n_pos) if n_pos else 0.0, abs=1e-12)
    assert (got <= m * (1 + 1e-12)).all()


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    n_bars=st.integers(5, 80),
    n_sym=st.integers(1, 8),
    nan_p=st.sampled_from([0.0, 0.1, 0.3]),
    lookbacks=st.lists(st.integers(2, 12), min_size=1, max_size=3),
    skip=st.integers(0, 3),
)
def test_scores_match_pandas(seed, n_bars, n_sym, nan_p, lookbacks, skip):
    rng = np.random.default_rng(seed)
    close = make_close(rng, n_bars, n_sym, nan_p)
    df = pd.DataFrame(close)
    mom = R.xs_momentum(np, close, lookbacks, skip)
    vol = R.volatility(np, close, lookbacks)
    low = R.low_volatility(np, close, lookbacks)
    rev = R.short_term_reversal(np, close, lookbacks)
    iv_scores, iv_vol = R.inverse_volatility(np, close, lookbacks)
    for k, lb in enumerate(lookbacks):
        want_mom = (df.shift(skip) / df.shift(skip + lb) - 1.0).to_numpy()
        want_vol = np.log(df).diff().rolling(lb).std(ddof=1).to_numpy()
        want_rev = (-(df / df.shift(lb) - 1.0)).to_numpy()
        np.testing.assert_allclose(mom[:, :, k], want_mom, rtol=1e-12, atol=0)
        np.testing.assert_allclose(vol[:, :, k], want_vol, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(low[:, :, k], -want_vol, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(rev[:, :, k], want_rev, rtol=1e-12, atol=0)
        np.testing.assert_allclose(iv_vol[:, :, k], want_vol, rtol=1e-8, atol=1e-12)
        np.testing.assert_array_equal(np.isfinite(iv_scores[:, :, k]), np.isfinite(want_vol) & (want_vol > 0))
    ew = R.equal_weight(np, close, len(lookbacks))
    assert ew.shape == (n_bars, n_sym, len(lookbacks))
    np.testing.assert_array_equal(np.isnan(ew[:, :, 0]), np.isnan(close))
    assert (ew[~np.isnan(ew)] == 1.0).all()


# --------------------------------------------------------------------------- examples


def col(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=float).reshape(1, len(values), 1)


def test_top_n_and_bottom_n_break_ties_by_lower_symbol_index():
    s = col([2.0, 5.0, 5.0, NAN, 5.0])
    assert R.select(np, s, "top_n", n=2)[0, :, 0].tolist() == [False, True, True, False, False]
    s = col([2.0, 5.0, 1.0, NAN, 1.0])
    assert R.select(np, s, "bottom_n", n=2)[0, :, 0].tolist() == [False, False, True, False, True]
    # fewer eligible than n: all eligible, the NaN never
    assert R.select(np, col([NAN, 1.0, NAN]), "top_n", n=3)[0, :, 0].tolist() == [False, True, False]


def test_quantile_counts_eligible_names_without_rounding_noise():
    s = col([float(x) for x in range(100, 0, -1)] + [NAN])  # 100 eligible
    got = R.select(np, s, "quantile", quantile=0.55)[0, :, 0]
    assert got.tolist() == [True] * 55 + [False] * 46  # 0.55 × 100 = 55.00000000000001 → 55
    assert R.select(np, s[:, 90:], "quantile", quantile=0.25)[0, :, 0].sum() == 3  # ⌈0.25 × 10⌉


def test_max_weight_redistributes_excess_pro_rata_in_rounds():
    w = col([0.5, 0.3, 0.1, 0.1])
    # round 1: 0.15 excess → 0.3, 0.1, 0.1 get +0.09, +0.03, +0.03; round 2: 0.39 → 0.35, 0.04 → 0.02 each
    np.testing.assert_allclose(R.cap_weights(np, w, 0.35)[0, :, 0], [0.35, 0.35, 0.15, 0.15], rtol=1e-14)
    # no uncapped name left: the excess stays in cash
    np.testing.assert_allclose(R.cap_weights(np, col([0.5, 0.5, 0.0]), 0.3)[0, :, 0], [0.3, 0.3, 0.0])


def test_weighting_leverage_and_cash_buffer_examples():
    s = col([2.0, -1.0, 6.0, NAN])
    w = R.target_weights(np, s, "top_n", n=3, weighting="score")[0, :, 0]
    np.testing.assert_allclose(w, [0.25, 0.0, 0.75, 0.0])
    w = R.target_weights(np, col([1.0, 1.0]), "top_n", n=2, weighting="inverse_volatility",
                         volatility=np.array([[0.1, 0.2]]))[0, :, 0]
    np.testing.assert_allclose(w, [2 / 3, 1 / 3])
    w = R.target_weights(np, col([4.0, 3.0, 2.0, 1.0]), "top_n", n=4, gross_leverage=1.5, cash_buffer=0.2)
    np.testing.assert_allclose(w[0, :, 0], [0.3] * 4)
    # nothing eligible: all cash (weights 0, never NaN)
    assert R.target_weights(np, col([NAN, NAN]), "top_n", n=1)[0, :, 0].tolist() == [0.0, 0.0]


def _ns(stamps: list[str]) -> np.ndarray:
    return np.array(stamps, dtype="datetime64[ns]").astype(np.int64)


def test_month_quarter_and_week_boundaries():
    ts = _ns([
        "1969-12-31T23:59", "1970-01-01T00:00",  # before/after the epoch: new month, quarter
        "2024-02-28T12:00", "2024-02-29T23:00", "2024-03-01T00:00",  # leap day, then March
        "2024-03-31T23:59", "2024-04-01T00:00",  # Q1 → Q2
        "2024-04-15T00:00", "2024-06-30T23:59", "2024-07-01T00:01",  # Q2 → Q3
        "2024-12-31T23:00", "2025-01-01T01:00",
    ])
    n = len(ts)
    assert R.rebalance_flags(ts, "1m", n).tolist() == [1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1]
    assert R.rebalance_flags(ts, "1q", n).tolist() == [1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1, 1]
    week = _ns(["2024-03-30", "2024-03-31T23:00", "2024-04-01T00:00", "2024-04-07", "2024-04-08"])
    assert R.rebalance_flags(week, "1w", 5).tolist() == [1, 0, 1, 0, 1]  # Sat, Sun | Mon, Sun | Mon
    assert R.rebalance_flags(None, 3, 7).tolist() == [1, 0, 0, 1, 0, 0, 1]


def test_bad_rules_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="rebalance rule"):
        R.rebalance_flags(_ns(["2024-01-01"]), "2w", 1)
    with pytest.raises(ValueError, match="N >= 1"):
        R.rebalance_flags(None, 0, 3)
    with pytest.raises(ValueError, match="needs the bars' timestamps"):
        R.rebalance_flags(None, "1m", 3)
    with pytest.raises(ValueError, match="selection must be"):
        R.select(np, col([1.0]), "long_short", n=1)
    with pytest.raises(ValueError, match="quantile"):
        R.select(np, col([1.0]), "quantile", quantile=1.5)
    with pytest.raises(ValueError, match="cash_buffer"):
        R.target_weights(np, col([1.0]), "top_n", n=1, cash_buffer=1.0)
    with pytest.raises(ValueError, match="lookback"):
        R.volatility(np, np.ones((5, 2)), 1)


# --------------------------------------------------------------------------- end to end


def test_momentum_weights_through_kernel_equal_reference():
    rng = np.random.default_rng(7)
    n_bars, n_sym = 70, 5
    close = make_close(rng, n_bars, n_sym, 0.05)
    open_ = close * (1 + rng.normal(0.0, 0.005, close.shape))
    ts = (np.datetime64("2024-01-01", "ns") + np.arange(n_bars) * np.timedelta64(1, "D")).astype(np.int64)
    scores = R.xs_momentum(np, close, [5, 10, 5], [0, 1, 2])
    weights = R.target_weights(np, scores, "top_n", n=[2, 3, 2], max_weight=0.45, cash_buffer=0.02)
    flags = R.rebalance_flags(ts, "1w", n_bars).astype(bool)
    rows = np.full(n_bars, -1, dtype=np.int64)
    rows[flags] = np.arange(int(flags.sum()))
    weights = weights[flags]  # only the rebalance rows reach the kernel
    ended = np.full(n_sym, -1, dtype=np.int64)
    opt = PortfolioOptions(init_cash=10_000.0, fees=0.001, fixed_fee=0.5, slippage=0.0005, fill="next_open")
    run = run_portfolio_cpu(open_, close, weights, rows, ended, opt)
    acc, equity = run.acc, run.equity
    for k in range(scores.shape[2]):
        ref = simulate_portfolio_reference(
            open_.tolist(), close.tolist(), weights[:, :, k].tolist(), rows.tolist(), ended.tolist(), opt
        )
        np.testing.assert_allclose(equity[:, k], ref.equity, rtol=1e-9)
        assert acc[k, P.PA_N_ORDERS] == len(ref.orders) > 0
    assert np.ptp(equity) > 0  # the portfolio actually traded and moved
