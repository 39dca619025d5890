"""Overfitting statistics (core/overfitting.py): the DSR paper's example, scipy, a slow CSCV reference, PBO truths."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from gpu_backtest.core import overfitting as of


def test_dsr_paper_numerical_example():
    # Bailey & López de Prado (2014), "The deflated Sharpe ratio", section "A numerical example":
    # N = 100 independent trials, variance of their annualised Sharpe ratios 1/2, best annualised
    # SR 2.5 over 5 years of daily returns (T = 1250, 250 per year), skewness -3, kurtosis 10:
    # the paper reports SR0 = 0.1132 (daily) and DSR = 0.9004.
    sr = 2.5 / math.sqrt(250)
    var = 0.5 / 250
    sr0 = of.expected_max_sharpe(100, var)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert of.deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 100, var) == pytest.approx(0.9004, abs=5e-5)


@pytest.mark.parametrize("p", [1e-10, 1e-4, 0.01, 0.02425, 0.2, 0.5, 0.77, 0.975, 0.999, 1 - 1e-9])
def test_norm_ppf_and_cdf_match_scipy(p):
    # rel 1e-9: above 0.5 both sides go through 1 - p, which rounds
    assert of.norm_ppf(p) == pytest.approx(stats.norm.ppf(p), rel=1e-9, abs=1e-12)
    x = stats.norm.ppf(p)
    assert of.norm_cdf(x) == pytest.approx(stats.norm.cdf(x), rel=1e-12, abs=1e-300)


def _scipy_psr(returns, sr_star):
    n = returns.size
    sr = returns.mean() / returns.std(ddof=1)
    g3 = stats.skew(returns)
    g4 = stats.kurtosis(returns, fisher=False)
    se = math.sqrt((1 - g3 * sr + (g4 - 1) / 4 * sr**2) / (n - 1))
    return stats.norm.cdf((sr - sr_star) / se), sr, g3, g4


@pytest.mark.parametrize("seed", range(5))
def test_psr_dsr_mintrl_match_independent_scipy(seed):
    rng = np.random.default_rng(seed)
    r = stats.skewnorm.rvs(a=-4 + 2 * seed, loc=0.0005 * seed, scale=0.01, size=750, random_state=rng)
    s = [float(r.size)] + [float((r**k).sum()) for k in range(1, 5)]
    mom = of.moments_from_sums(*s)
    want_psr, sr, g3, g4 = _scipy_psr(r, 0.02)
    assert mom["skew"] == pytest.approx(g3, rel=1e-8, abs=1e-10)
    assert mom["kurtosis"] == pytest.approx(g4, rel=1e-8)
    assert mom["mean"] / mom["std"] == pytest.approx(sr, rel=1e-9)
    assert of.probabilistic_sharpe_ratio(sr, r.size, g3, g4, 0.02) == pytest.approx(want_psr, rel=1e-10)
    # DSR with scipy's quantiles for the expected maximum
    n_trials, v = 40 + seed, 0.001
    e_max = math.sqrt(v) * ((1 - np.euler_gamma) * stats.norm.ppf(1 - 1 / n_trials)
                            + np.euler_gamma * stats.norm.ppf(1 - 1 / (n_trials * math.e)))
    assert of.expected_max_sharpe(n_trials, v) == pytest.approx(e_max, rel=1e-10)
    assert of.deflated_sharpe_ratio(sr, r.size, g3, g4, n_trials, v) == pytest.approx(
        _scipy_psr(r, e_max)[0], rel=1e-9)
    # MinTRL: the track length at which PSR reaches the confidence level
    if sr > 0:
        trl = of.min_track_record_length(sr, g3, g4, 0.0, 0.95)
        assert of.probabilistic_sharpe_ratio(sr, trl, g3, g4) == pytest.approx(0.95, abs=1e-9)
    assert of.min_track_record_length(-0.1, 0.0, 3.0) == math.inf


def _reference_cscv(returns, n_blocks):
    """The paper's algorithm, literally: blocks of rows, every half as IS, rank of the IS winner OOS."""
    t, n = returns.shape
    bounds = of.block_bounds(t, n_blocks)
    logits, is_best, oos_best = [], [], []
    for cb in combinations(range(n_blocks), n_blocks // 2):
        is_rows = np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in cb])
        oos_rows = np.setdiff1d(np.arange(t), is_rows)
        sr_is = returns[is_rows].mean(0) / returns[is_rows].std(0, ddof=1)
        sr_oos = returns[oos_rows].mean(0) / returns[oos_rows].std(0, ddof=1)
        star = int(np.argmax(sr_is))
        w = stats.rankdata(sr_oos)[star] / (n + 1)
        logits.append(math.log(w / (1 - w)))
        is_best.append(sr_is[star])
        oos_best.append(sr_oos[star])
    logits = np.array(logits)
    slope = np.polyfit(is_best, oos_best, 1)[0]
    return float(np.mean(logits <= 0)), logits, slope


@pytest.mark.parametrize("seed,n_blocks", [(0, 4), (1, 6), (2, 8)])
def test_cscv_matches_reference_and_partitions(seed, n_blocks):
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, size=(203, 17)) + rng.normal(0, 0.001, size=17)
    pbo, logits, slope = _reference_cscv(r, n_blocks)
    blocks = of.block_sums_from_returns(r, n_blocks)
    got = of.cscv(blocks)
    assert got["pbo"] == pytest.approx(pbo, abs=1e-12)
    assert got["logit_quantiles"]["0.5"] == pytest.approx(np.quantile(logits, 0.5), abs=1e-9)
    assert got["slope"] == pytest.approx(slope, rel=1e-8)
    # the two-pass reduction over three partitions gives the same answer
    parts = [(0, 5), (5, 11), (11, 17)]
    best = of.merge_best([of.cscv_best(blocks[a:b], np.arange(a, b)) for a, b in parts])
    counts = of.merge_counts([of.cscv_count(blocks[a:b], best, np.arange(a, b)) for a, b in parts])
    merged = of.cscv_summary(best, counts)
    assert merged.pop("logit_quantiles") == pytest.approx(got.pop("logit_quantiles"))
    assert merged == pytest.approx(got)


def test_pbo_near_half_on_pure_noise():
    # 30 seeds of 50 pure-noise columns, S = 8: one seed swings by about ±0.2, the mean of 30
    # should land within ±0.1 of 0.5
    pbos = []
    for seed in range(30):
        r = np.random.default_rng(seed).normal(0.0, 0.01, size=(800, 50))
        pbos.append(of.cscv(of.block_sums_from_returns(r, 8))["pbo"])
    assert abs(np.mean(pbos) - 0.5) < 0.1


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_pbo_near_zero_with_planted_edge(seed):
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, size=(1600, 50))
    r[:, 7] += 0.002  # per-bar Sharpe 0.2 on column 7; the others are noise
    got = of.cscv(of.block_sums_from_returns(r, 16))
    assert got["n_splits"] == 12870
    assert got["pbo"] <= 0.02


@pytest.mark.parametrize("seed,n_blocks", [(3, 2), (4, 8), (5, 10), (6, 16)])
def test_compiled_passes_equal_numpy_passes(seed, n_blocks):
    from gpu_backtest.core import cscv_fast as cf

    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, size=(300, 23)) + rng.normal(0, 0.001, size=23)
    r[:, 5] = r[:, 2]  # duplicate columns tie exactly
    r[:, 9] = 0.0  # an undefined Sharpe
    r[:150, 11] = 0.0  # undefined in the first half of the bars only
    blocks = of.block_sums_from_returns(r, n_blocks)
    want = of.cscv(blocks, risk_free=1e-4)
    sums, bn = blocks[:, :, 1:3], blocks[0, :, 0]
    parts = [(0, 4), (4, 13), (13, 23)]
    best = cf.merge_best([cf.cscv_best(sums[a:b], bn, np.arange(a, b), 1e-4) for a, b in parts])
    counts = of.merge_counts([cf.cscv_count(sums[a:b], bn, np.arange(a, b), best, 1e-4) for a, b in parts])
    got = of.cscv_summary(cf.summary_inputs(best), counts)
    # the numpy reference's BLAS sums may split exact ties of the duplicate columns by an ulp:
    # the logits may then differ by a half rank in a split
    assert got.pop("logit_quantiles") == pytest.approx(want.pop("logit_quantiles"), abs=0.05)
    assert got.pop("logit_mean") == pytest.approx(want.pop("logit_mean"), abs=1e-3)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def _block_means(r: np.ndarray, n_blocks: int) -> np.ndarray:
    return np.stack([b.mean(axis=0) for b in np.array_split(r, n_blocks, axis=0)], axis=1)  # (C, S)


@pytest.mark.parametrize("seed", [0, 1])
def test_mean_pairwise_correlation_equals_numpy_corrcoef(seed):
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.01, size=(640, 1))
    r = common * rng.uniform(-1, 2, size=12) + rng.normal(0, 0.01, size=(640, 12))
    blocks = of.block_sums_from_returns(r, 16)
    # three partitions, merged
    parts = [of.correlation_sums(blocks[a:b, :, 1], blocks[0, :, 0]) for a, b in [(0, 3), (3, 8), (8, 12)]]
    rho = of.mean_pairwise_correlation(of.merge_correlation_sums(parts))
    cc = np.corrcoef(_block_means(r, 16))
    want = cc[np.triu_indices(12, 1)].mean()
    assert rho == pytest.approx(want, abs=1e-12)


def test_effective_trials_between_one_and_n():
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.01, size=(1600, 200))
    blocks = of.block_sums_from_returns(noise, 16)
    rho = of.mean_pairwise_correlation(of.correlation_sums(blocks[:, :, 1], blocks[0, :, 0]))
    # independent trials: mean correlation ~ 0 (each pair's estimate over 16 blocks has sd ~ 0.26,
    # the mean of 19,900 pairs ~ 0.01), N_eff ~ N
    assert abs(rho) < 0.03
    assert of.effective_trials(200, rho) == pytest.approx(200, rel=0.03)
    # 200 near-copies of one series: N_eff ~ 1
    one = rng.normal(0, 0.01, size=(1600, 1)) + rng.normal(0, 1e-5, size=(1600, 200))
    blocks = of.block_sums_from_returns(one, 16)
    rho = of.mean_pairwise_correlation(of.correlation_sums(blocks[:, :, 1], blocks[0, :, 0]))
    assert rho > 0.99
    assert 1.0 <= of.effective_trials(200, rho) < 3.0
    assert of.effective_trials(200, -0.5) == 200.0  # kept within [1, N]
    assert math.isnan(of.mean_pairwise_correlation({"z_sum": np.zeros(4), "z_n": 1}))


@pytest.mark.parametrize("seed,n_cols,n_blocks", [(0, 40, 16), (1, 23, 8), (2, 50, 10)])
def test_small_partitions_in_numpy_equal_the_compiled_passes(seed, n_cols, n_blocks, monkeypatch):
    # a small sweep runs the passes in numpy (no compile to wait for): bit-for-bit the compiled results
    from gpu_backtest.core import cscv_fast as cf

    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.01, size=(400, n_cols)) + rng.normal(0, 0.001, size=n_cols)
    r[:, 5] = r[:, 2]  # exact ties
    r[:, 9] = 0.0  # undefined
    r[:200, 11] = 0.0
    blocks = of.block_sums_from_returns(r, n_blocks)
    sums, bn = blocks[:, :, 1:3], blocks[0, :, 0]
    parts = [(0, 4), (4, 13), (13, n_cols)]
    got = []
    for small in (True, False):
        monkeypatch.setattr(cf, "SMALL_EVALS", 1 << 40 if small else 0)
        assert cf.runs_compiled(n_cols, n_blocks) is not small
        best = cf.merge_best([cf.cscv_best(sums[a:b], bn, np.arange(a, b), 1e-4) for a, b in parts])
        counts = of.merge_counts([cf.cscv_count(sums[a:b], bn, np.arange(a, b), best, 1e-4) for a, b in parts])
        got.append((best, counts))
    (b1, c1), (b2, c2) = got
    for k in b1:
        np.testing.assert_array_equal(b1[k], b2[k])
    for k in c1:
        np.testing.assert_array_equal(c1[k], c2[k])
