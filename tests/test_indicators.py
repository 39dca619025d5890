"""The array-generic indicators of `gpu_backtest.core.indicators` against pandas and plain loops.

Every indicator is checked on seeded random walks with NaN gaps (a single missing bar, a
run of them, leading ones) against pandas' ``rolling``/``ewm`` (applied run by run for the
recursive ones, whose documented rule is that a missing input restarts the recursion) or
against a plain-Python loop; plus no look-ahead (bit for bit), numerical precision at large
price levels, and a hypothesis property test on small arrays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from gpu_backtest.core import indicators as ind

# --------------------------------------------------------------------------- data


def random_walk(n: int = 400, s: int = 3, seed: int = 0, gaps: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, size=(n, s)), axis=0))
    if gaps and s >= 3:
        x[n // 4, 0] = np.nan  # one missing bar
        x[n // 2 : n // 2 + 7, 1] = np.nan  # a run of them
        x[:5, 2] = np.nan  # leading
    return x


def ohlc(n: int = 400, s: int = 3, seed: int = 1, gaps: bool = True):
    rng = np.random.default_rng(seed)
    close = random_walk(n, s, seed, gaps)
    spread = np.abs(rng.normal(0.0, 0.005, size=(n, s))) * close
    high = close + spread * rng.uniform(0.0, 1.0, size=(n, s))
    low = close - spread * rng.uniform(0.0, 1.0, size=(n, s))
    if gaps:
        high[n // 3, 2] = np.nan  # a missing high only
    return high, low, close


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-10, atol: float = 1e-9) -> None:
    got = np.asarray(got)
    want = np.asarray(want, dtype=float)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN pattern differs")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


# --------------------------------------------------------------------------- references


def valid_runs(valid: np.ndarray):
    """(start, stop) of each maximal run of True in a 1-D bool array."""
    runs, start = [], None
    for i, v in enumerate(valid):
        if v and start is None:
            start = i
        if not v and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(valid)))
    return runs


def seeded_ewm_pandas(x: np.ndarray, alpha: float, n: int) -> np.ndarray:
    """The documented recursive rule, built from pandas: per run of valid values, the first
    value is the mean of the run's first ``n`` values, then ``ewm(alpha, adjust=False)``."""
    out = np.full(x.shape, np.nan)
    for a, b in valid_runs(~np.isnan(x)):
        if b - a < n:
            continue
        seg = pd.Series(x[a:b])
        seeded = seg.copy()
        seeded.iloc[: n - 1] = np.nan
        seeded.iloc[n - 1] = seg.iloc[:n].mean()
        out[a + n - 1 : b] = seeded.ewm(alpha=alpha, adjust=False).mean().to_numpy()[n - 1 :]
    return out


def columns(f, *arrays):
    """Apply a 1-D reference column by column."""
    return np.stack([f(*(a[:, j] for a in arrays)) for j in range(arrays[0].shape[1])], axis=1)


def ema_loop(x: np.ndarray, span: int) -> np.ndarray:
    """A plain loop over one series: SMA seed, restart after a NaN."""
    alpha = 2.0 / (span + 1.0)
    out = np.full(len(x), np.nan)
    run, prev = 0, np.nan
    for t, v in enumerate(x):
        if np.isnan(v):
            run = 0
            continue
        run += 1
        if run == span:
            prev = sum(x[t - span + 1 : t + 1]) / span
        elif run > span:
            prev = alpha * v + (1.0 - alpha) * prev
        else:
            continue
        out[t] = prev
    return out


def rsi_pandas(close: np.ndarray, window: int) -> np.ndarray:
    delta = pd.Series(close).diff().to_numpy()
    gain = np.where(np.isnan(delta), np.nan, np.clip(delta, 0.0, None))
    loss = np.where(np.isnan(delta), np.nan, np.clip(-delta, 0.0, None))
    g = seeded_ewm_pandas(gain, 1.0 / window, window)
    ls = seeded_ewm_pandas(loss, 1.0 / window, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = 100.0 - 100.0 / (1.0 + g / ls)
    r = np.where((ls == 0) & (g > 0), 100.0, r)
    return np.where((ls == 0) & (g == 0), 50.0, r)


def atr_pandas(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int) -> np.ndarray:
    prev = pd.Series(close).shift(1)
    tr = pd.concat([pd.Series(high - low), (pd.Series(high) - prev).abs(), (pd.Series(low) - prev).abs()], axis=1).max(
        axis=1, skipna=False
    )
    return seeded_ewm_pandas(tr.to_numpy(), 1.0 / window, window)


# --------------------------------------------------------------------------- rolling


WINDOWS = [1, 2, 3, 7, 20, 63, 399, 400]


@pytest.mark.parametrize("window", WINDOWS)
def test_sma_matches_pandas(window: int) -> None:
    x = random_walk()
    assert_close(ind.sma(np, x, window), pd.DataFrame(x).rolling(window).mean().to_numpy())


@pytest.mark.parametrize("window", [0, -3, 401])
def test_rolling_windows_out_of_range_are_all_nan(window: int) -> None:
    x = random_walk()
    for f in (ind.sma, ind.rolling_std, ind.rolling_max, ind.rolling_min, ind.ema):
        out = f(np, x, window)
        assert out.shape == x.shape and np.isnan(out).all(), f.__name__


@pytest.mark.parametrize("ddof", [0, 1])
@pytest.mark.parametrize("window", WINDOWS)
def test_rolling_std_matches_pandas(window: int, ddof: int) -> None:
    x = random_walk()
    want = pd.DataFrame(x).rolling(window).std(ddof=ddof).to_numpy().copy()
    if window - ddof <= 0:
        want[:] = np.nan
    assert_close(ind.rolling_std(np, x, window, ddof=ddof), want)


@pytest.mark.parametrize("window", WINDOWS)
def test_rolling_max_min_match_pandas(window: int) -> None:
    x = random_walk()
    np.testing.assert_array_equal(ind.rolling_max(np, x, window), pd.DataFrame(x).rolling(window).max())
    np.testing.assert_array_equal(ind.rolling_min(np, x, window), pd.DataFrame(x).rolling(window).min())


@pytest.mark.parametrize("window,k", [(20, 2.0), (5, 1.5), (1, 2.0)])
def test_bollinger_matches_pandas(window: int, k: float) -> None:
    x = random_walk()
    df = pd.DataFrame(x)
    mid = df.rolling(window).mean().to_numpy()
    sd = df.rolling(window).std(ddof=0).to_numpy()
    got_mid, got_up, got_lo = ind.bollinger(np, x, window, k)
    assert_close(got_mid, mid)
    assert_close(got_up, mid + k * sd)
    assert_close(got_lo, mid - k * sd)


def test_rolling_precision_at_large_levels_and_long_series() -> None:
    """No E[x²]−E[x]² cancellation and no cumulative-sum drift."""
    rng = np.random.default_rng(7)
    x = 1e9 + rng.normal(size=(200_000, 2))
    w = 30
    windows = sliding_window_view(x - 1e9, w, axis=0)  # exact enough: values of order 1
    np.testing.assert_allclose(ind.rolling_std(np, x, w)[w - 1 :], windows.std(axis=-1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ind.sma(np, x, w)[w - 1 :] - 1e9, windows.mean(axis=-1), rtol=0, atol=2e-6)
    # a trending long series: the last window is as exact as the first
    y = np.linspace(0.0, 1e6, 1_000_001).reshape(-1, 1) + 0.1
    got = ind.sma(np, y, 10)
    want = sliding_window_view(y[:, 0], 10).mean(axis=-1)
    np.testing.assert_allclose(got[9:, 0], want, rtol=1e-15, atol=0)


# --------------------------------------------------------------------------- recursive


@pytest.mark.parametrize("span", [1, 2, 5, 12, 26, 50])
def test_ema_matches_pandas_and_loop(span: int) -> None:
    x = random_walk()
    got = ind.ema(np, x, span)
    assert_close(got, columns(lambda c: seeded_ewm_pandas(c, 2.0 / (span + 1.0), span), x))
    assert_close(got, columns(lambda c: ema_loop(c, span), x))


def test_ema_without_gaps_is_pandas_ewm_of_the_sma_seeded_series() -> None:
    """The docstring's pandas recipe, literally."""
    x = random_walk(gaps=False)[:, 0]
    span = 10
    s = pd.Series(x)
    seeded = s.copy()
    seeded.iloc[: span - 1] = np.nan
    seeded.iloc[span - 1] = s.iloc[:span].mean()
    assert_close(ind.ema(np, x, span), seeded.ewm(span=span, adjust=False).mean().to_numpy())
    assert np.isnan(ind.ema(np, x, span)[: span - 1]).all()


def test_ema_restarts_after_a_gap() -> None:
    x = np.arange(1.0, 31.0)
    x[10] = np.nan
    out = ind.ema(np, x, 3)
    assert np.isnan(out[:2]).all() and out[2] == pytest.approx(2.0)
    assert np.isnan(out[10:13]).all()  # the gap and the next span-1 bars
    assert out[13] == pytest.approx((12 + 13 + 14) / 3)  # re-seeded with the SMA of 3 fresh values


@pytest.mark.parametrize("window", [2, 5, 14, 30])
def test_rsi_matches_pandas(window: int) -> None:
    x = random_walk()
    got = ind.rsi(np, x, window)
    assert_close(got, columns(lambda c: rsi_pandas(c, window), x))
    finite = got[np.isfinite(got)]
    assert finite.size and (finite >= 0).all() and (finite <= 100).all()
    # first value at bar `window` of a gap-free column
    assert np.isnan(got[:window, 0]).all() and np.isfinite(got[window, 0])


def test_rsi_edge_cases() -> None:
    up = np.arange(1.0, 40.0)
    assert np.all(ind.rsi(np, up, 14)[14:] == 100.0)
    assert np.all(ind.rsi(np, up[::-1].copy(), 14)[14:] == 0.0)
    assert np.all(ind.rsi(np, np.full(40, 5.0), 14)[14:] == 50.0)


def test_rsi_textbook_value() -> None:
    """Wilder's RSI: with gains/losses seeded by their 14-change average, then smoothed by 1/14."""
    rng = np.random.default_rng(3)
    close = 50 + np.cumsum(rng.normal(size=60))
    d = np.diff(close)
    g, ls = np.clip(d, 0, None), np.clip(-d, 0, None)
    ag, al = g[:14].mean(), ls[:14].mean()
    want = [100 - 100 / (1 + ag / al)]
    for i in range(14, len(d)):
        ag = (ag * 13 + g[i]) / 14
        al = (al * 13 + ls[i]) / 14
        want.append(100 - 100 / (1 + ag / al))
    np.testing.assert_allclose(ind.rsi(np, close, 14)[14:], want, rtol=1e-11)


@pytest.mark.parametrize("window", [1, 3, 14])
def test_atr_matches_pandas(window: int) -> None:
    high, low, close = ohlc()
    got = ind.atr(np, high, low, close, window)
    assert_close(got, columns(lambda h, lo, c: atr_pandas(h, lo, c, window), high, low, close))
    assert np.isnan(got[:window, 0]).all() and np.isfinite(got[window, 0])


@pytest.mark.parametrize("fast,slow,signal", [(12, 26, 9), (3, 10, 4), (5, 5, 1)])
def test_macd_matches_pandas(fast: int, slow: int, signal: int) -> None:
    x = random_walk()
    line = columns(lambda c: seeded_ewm_pandas(c, 2 / (fast + 1), fast) - seeded_ewm_pandas(c, 2 / (slow + 1), slow), x)
    sig = columns(lambda c: seeded_ewm_pandas(c, 2 / (signal + 1), signal), line)
    got_line, got_sig, got_hist = ind.macd(np, x, fast, slow, signal)
    assert_close(got_line, line)
    assert_close(got_sig, sig)
    assert_close(got_hist, line - sig)
    first = max(fast, slow) + signal - 2
    assert np.isnan(got_sig[:first, 0]).all() and np.isfinite(got_sig[first, 0])


def test_shift_and_roc() -> None:
    x = random_walk()
    assert_close(ind.shift(np, x, 3), pd.DataFrame(x).shift(3).to_numpy(), rtol=0, atol=0)
    assert_close(ind.shift(np, x, 0), x, rtol=0, atol=0)
    assert np.isnan(ind.shift(np, x, 500)).all()
    with pytest.raises(ValueError):
        ind.shift(np, x, -1)
    want = (pd.DataFrame(x) / pd.DataFrame(x).shift(5) - 1).to_numpy()
    assert_close(ind.roc(np, x, 5), want)


# --------------------------------------------------------------------------- shared properties


def all_indicators(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> dict[str, np.ndarray]:
    out = {
        "sma": ind.sma(np, close, 20),
        "std": ind.rolling_std(np, close, 20),
        "max": ind.rolling_max(np, close, 20),
        "min": ind.rolling_min(np, close, 20),
        "ema": ind.ema(np, close, 20),
        "ema_short": ind.ema(np, close[:20], 5),  # the single-level scan (T <= 32)
        "rsi": ind.rsi(np, close, 14),
        "atr": ind.atr(np, high, low, close, 14),
        "roc": ind.roc(np, close, 10),
    }
    for name, arr in zip(("mid", "upper", "lower"), ind.bollinger(np, close, 20, 2.0), strict=True):
        out["bb_" + name] = arr
    for name, arr in zip(("macd", "signal", "hist"), ind.macd(np, close, 12, 26, 9), strict=True):
        out["macd_" + name] = arr
    return out


@pytest.mark.parametrize("cut", [0, 31, 150, 1000])
def test_no_look_ahead_bit_for_bit(cut: int) -> None:
    """Changing bars after ``cut`` leaves every indicator up to ``cut`` unchanged, exactly."""
    high, low, close = ohlc(n=1200)
    base = all_indicators(high, low, close)
    rng = np.random.default_rng(cut)
    h2, l2, c2 = high.copy(), low.copy(), close.copy()
    for a in (h2, l2, c2):
        a[cut + 1 :] *= rng.uniform(0.5, 2.0, size=a[cut + 1 :].shape)
        a[cut + 1 :: 17] = np.nan
    changed = all_indicators(h2, l2, c2)
    for name, arr in base.items():
        end = min(cut + 1, arr.shape[0])
        np.testing.assert_array_equal(changed[name][:end], arr[:end], err_msg=name)


def test_symbols_are_independent_and_1d_matches_2d() -> None:
    high, low, close = ohlc()
    full = all_indicators(high, low, close)
    for j in range(close.shape[1]):
        one = all_indicators(high[:, j], low[:, j], close[:, j])
        for name, arr in full.items():
            np.testing.assert_array_equal(one[name], arr[:, j], err_msg=f"{name} column {j}")


def test_infinite_values_count_as_missing() -> None:
    x = random_walk(gaps=False)
    y = x.copy()
    x[50, 0] = np.nan
    y[50, 0] = np.inf
    for f in (ind.sma, ind.rolling_std, ind.rolling_max, ind.rolling_min, ind.ema):
        np.testing.assert_array_equal(f(np, y, 10), f(np, x, 10), err_msg=f.__name__)


@st.composite
def series_with_gaps(draw):
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = 10.0 + np.cumsum(rng.normal(size=(n, 2)), axis=0)
    x[rng.uniform(size=x.shape) < draw(st.sampled_from([0.0, 0.05, 0.3]))] = np.nan
    return x


@settings(max_examples=60, deadline=None)
@given(x=series_with_gaps(), window=st.integers(1, 70))
def test_property_against_references(x: np.ndarray, window: int) -> None:
    df = pd.DataFrame(x)
    assert_close(ind.sma(np, x, window), df.rolling(window).mean().to_numpy(), atol=1e-9)
    assert_close(ind.rolling_std(np, x, window), df.rolling(window).std(ddof=0).to_numpy(), atol=1e-7)
    np.testing.assert_array_equal(ind.rolling_max(np, x, window), df.rolling(window).max().to_numpy())
    np.testing.assert_array_equal(ind.rolling_min(np, x, window), df.rolling(window).min().to_numpy())
    assert_close(ind.ema(np, x, window), columns(lambda c: ema_loop(c, window), x))
    assert_close(ind.rsi(np, x, window), columns(lambda c: rsi_pandas(c, window), x))


class _OtherXP:
    """numpy under another name: takes the code paths meant for array libraries other than numpy."""

    __name__ = "other_xp"

    def __getattr__(self, name: str):
        return getattr(np, name)


def test_non_numpy_code_paths_give_identical_numbers() -> None:
    high, low, close = ohlc(n=700)
    xp = _OtherXP()
    np.testing.assert_array_equal(ind.ema(xp, close, 20), ind.ema(np, close, 20))
    np.testing.assert_array_equal(ind.rsi(xp, close, 14), ind.rsi(np, close, 14))
    np.testing.assert_array_equal(ind.atr(xp, high, low, close, 14), ind.atr(np, high, low, close, 14))


@pytest.mark.gpu
def test_cupy_matches_numpy() -> None:
    cp = pytest.importorskip("cupy")
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception:  # pragma: no cover - no device
        pytest.skip("no CUDA device")
    high, low, close = ohlc(n=3000)
    cpu = all_indicators(high, low, close)
    g = {
        "sma": ind.sma(cp, cp.asarray(close), 20),
        "std": ind.rolling_std(cp, cp.asarray(close), 20),
        "max": ind.rolling_max(cp, cp.asarray(close), 20),
        "ema": ind.ema(cp, cp.asarray(close), 20),
        "rsi": ind.rsi(cp, cp.asarray(close), 14),
        "atr": ind.atr(cp, cp.asarray(high), cp.asarray(low), cp.asarray(close), 14),
    }
    for name, arr in g.items():
        assert_close(cp.asnumpy(arr), cpu[name], rtol=1e-12, atol=1e-10)
