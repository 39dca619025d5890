"""Overfitting statistics of a sweep: PSR, DSR, MinTRL and CSCV's probability of backtest overfitting.

Pure ``math``/``numpy`` at run time. Sharpe ratios here are per bar and not annualised
(``mean(r − rf) / std(r)``, ``std`` with ddof 1), the unit the papers' formulas use; the
kurtosis is the ordinary (non-excess) one, 3 for a normal distribution.

* Bailey & López de Prado (2012), "The Sharpe ratio efficient frontier", J. of Risk 15(2):
  probabilistic Sharpe ratio (PSR) and minimum track record length (MinTRL).
* Bailey & López de Prado (2014), "The deflated Sharpe ratio: correcting for selection bias,
  backtest overfitting and non-normality", J. of Portfolio Management 40(5): the expected
  maximum Sharpe ratio of N trials and the deflated Sharpe ratio (DSR).
* Bailey, Borwein, López de Prado & Zhu (2015), "The probability of backtest overfitting",
  J. of Computational Finance 20(4): combinatorially symmetric cross-validation (CSCV).

CSCV works from per-block sums (`block sums`, the kernel's (C, B, N_BLOCK_ACC) array, of which
this module reads the return count, Σr and Σr²). It is written as an exact two-pass reduction
so a cluster never ships O(columns × splits): `cscv_best` (per partition: per split the best
in-sample column) → `merge_best` → `cscv_count` (per partition: per split how many columns'
out-of-sample Sharpe lie below / equal the chosen one's) → `merge_counts` → `cscv_summary`.
docs/metrics.md ("Overfitting statistics") gives every formula.
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np

EULER_GAMMA = 0.5772156649015329
LOGIT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)

# fields of a per-block accumulator: blocks[c, b, k] (the kernel's layout)
from .simulate.layout import (  # noqa: E402
    BK_N,
    BK_N_CLOSED,
    BK_PNL,
    BK_SUM,
    BK_SUM2,
    BK_SUM3,
    BK_SUM4,
    N_BLOCK_ACC,
)

__all__ = ["BK_N", "BK_N_CLOSED", "BK_PNL", "BK_SUM", "BK_SUM2", "BK_SUM3", "BK_SUM4", "N_BLOCK_ACC"]


# ---------------------------------------------------------------- normal distribution
def norm_cdf(x: float) -> float:
    """Standard normal cumulative distribution Φ(x)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """Standard normal quantile Φ⁻¹(p): Acklam's rational approximation and one Halley step."""
    if p > 0.5:
        return -norm_ppf(1.0 - p)
    if not 0.0 < p < 1.0:
        if p == 0.0:
            return -math.inf
        if p == 1.0:
            return math.inf
        return math.nan
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2.0 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    elif p <= 1.0 - lo:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
            ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
    else:
        q = math.sqrt(-2.0 * math.log(1.0 - p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    e = norm_cdf(x) - p
    u = e * math.sqrt(2.0 * math.pi) * math.exp(x * x / 2.0)
    return x - u / (1.0 + x * u / 2.0)


# ---------------------------------------------------------------- PSR, DSR, MinTRL
def _sr_var_factor(sr: float, skew: float, kurtosis: float) -> float:
    return 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr


def probabilistic_sharpe_ratio(
    sr: float, n: float, skew: float, kurtosis: float, sr_benchmark: float = 0.0
) -> float:
    """PSR(SR*) = Φ((SR − SR*)·√(n − 1) / √(1 − γ₃·SR + (γ₄ − 1)/4·SR²)); NaN when undefined."""
    f = _sr_var_factor(sr, skew, kurtosis)
    if not (n > 1 and f > 0.0 and math.isfinite(sr) and math.isfinite(f)):
        return math.nan
    return norm_cdf((sr - sr_benchmark) * math.sqrt(n - 1.0) / math.sqrt(f))


def expected_max_sharpe(n_trials: float, sr_variance: float, sr_mean: float = 0.0) -> float:
    """E[max SR] of N trials: SR̄ + √V·((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e))), γ Euler–Mascheroni."""
    if n_trials < 1 or not sr_variance >= 0.0:
        return math.nan
    if n_trials == 1:
        return sr_mean
    z = (1.0 - EULER_GAMMA) * norm_ppf(1.0 - 1.0 / n_trials) + EULER_GAMMA * norm_ppf(
        1.0 - 1.0 / (n_trials * math.e)
    )
    return sr_mean + math.sqrt(sr_variance) * z


def deflated_sharpe_ratio(
    sr: float, n: float, skew: float, kurtosis: float, n_trials: float, sr_variance: float
) -> float:
    """DSR = PSR(SR₀) with SR₀ = `expected_max_sharpe` (N trials, variance V of their Sharpes)."""
    return probabilistic_sharpe_ratio(sr, n, skew, kurtosis, expected_max_sharpe(n_trials, sr_variance))


def min_track_record_length(
    sr: float, skew: float, kurtosis: float, sr_benchmark: float = 0.0, prob: float = 0.95
) -> float:
    """MinTRL = 1 + (1 − γ₃·SR + (γ₄ − 1)/4·SR²)·(Φ⁻¹(prob)/(SR − SR*))² bars; inf when SR ≤ SR*."""
    f = _sr_var_factor(sr, skew, kurtosis)
    if not (math.isfinite(sr) and f > 0.0):
        return math.nan
    if sr <= sr_benchmark:
        return math.inf
    return 1.0 + f * (norm_ppf(prob) / (sr - sr_benchmark)) ** 2


# ---------------------------------------------------------------- effective number of trials
EFFECTIVE_TRIALS_METHOD = (
    "N_eff = rho + (1 - rho) * N, rho = the mean pairwise correlation of the trials' per-block mean "
    "returns (equicorrelation approximation)")


def correlation_sums(block_sum: np.ndarray, block_n: np.ndarray) -> dict[str, Any]:
    """Mergeable sums for the trials' mean pairwise correlation: per column the S per-block mean
    returns, centred and scaled to unit length (``z``); returns Σz (S,) and the number of columns
    with a defined ``z`` (blocks without returns and constant columns are left out)."""
    bn = np.asarray(block_n, dtype=np.float64)
    keep = bn > 0
    m = np.asarray(block_sum, dtype=np.float64)[:, keep] / bn[keep]
    m = m - m.mean(axis=1, keepdims=True) if m.shape[1] else m
    norm = np.sqrt((m * m).sum(axis=1))
    ok = np.isfinite(norm) & (norm > 0)
    z = m[ok] / norm[ok, None]
    full = np.zeros(bn.shape[0])
    full[keep] = z.sum(axis=0) if z.size else 0.0
    return {"z_sum": full, "z_n": int(ok.sum())}


def merge_correlation_sums(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge `correlation_sums` results (associative)."""
    return {"z_sum": np.sum([p["z_sum"] for p in parts], axis=0), "z_n": int(sum(p["z_n"] for p in parts))}


def mean_pairwise_correlation(sums: dict[str, Any]) -> float:
    """ρ̄ = (‖Σz‖² − K) / (K(K − 1)): the mean of the K(K − 1)/2 pairwise correlations; NaN for K < 2."""
    k = sums["z_n"]
    if k < 2:
        return math.nan
    zs = np.asarray(sums["z_sum"])
    return float((zs @ zs - k) / (k * (k - 1.0)))


def effective_trials(n_trials: float, rho: float) -> float:
    """N_eff = ρ̄ + (1 − ρ̄)·N, kept within [1, N]: N for uncorrelated trials, 1 for identical ones."""
    if not (math.isfinite(rho) and n_trials >= 1):
        return math.nan
    return float(min(max(rho + (1.0 - rho) * n_trials, 1.0), n_trials))


# ---------------------------------------------------------------- moments from sums
def moments_from_sums(n: float, s1: float, s2: float, s3: float, s4: float) -> dict[str, float]:
    """Mean, std (ddof 1), skewness and kurtosis (non-excess, population moments) from Σrᵏ."""
    if n < 2:
        return {"mean": math.nan, "std": math.nan, "skew": math.nan, "kurtosis": math.nan}
    mu = s1 / n
    m2 = s2 / n - mu * mu
    m3 = s3 / n - 3.0 * mu * s2 / n + 2.0 * mu**3
    m4 = s4 / n - 4.0 * mu * s3 / n + 6.0 * mu * mu * s2 / n - 3.0 * mu**4
    std = math.sqrt(max(m2, 0.0) * n / (n - 1.0))
    if m2 <= 0.0:
        return {"mean": mu, "std": std, "skew": math.nan, "kurtosis": math.nan}
    return {"mean": mu, "std": std, "skew": m3 / m2**1.5, "kurtosis": m4 / (m2 * m2)}


def sharpe_from_sums(n: Any, s1: Any, s2: Any, risk_free: float = 0.0) -> np.ndarray:
    """Per-bar Sharpe (mean(r) − rf)/std(r), ddof 1, elementwise; NaN where n < 2 or std = 0."""
    n = np.asarray(n, dtype=np.float64)
    s1 = np.asarray(s1, dtype=np.float64)
    s2 = np.asarray(s2, dtype=np.float64)
    with np.errstate(all="ignore"):
        mean = s1 / n
        var = (s2 - s1 * mean) / (n - 1.0)
        std = np.sqrt(var)
        out = (mean - risk_free) / std
    return np.where((n >= 2) & (var > 0) & np.isfinite(out), out, np.nan)


# ---------------------------------------------------------------- CSCV
@lru_cache(maxsize=8)
def cscv_splits(n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """All C(S, S/2) in-sample block sets as a (n_splits, S) 0/1 matrix, and each split's complement.

    Split ``i`` has in-sample blocks ``member[i] == 1`` and out-of-sample blocks the rest, which
    is the in-sample set of split ``complement[i]``.
    """
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"CSCV needs an even number of blocks >= 2, got {n_blocks}")
    combos = list(combinations(range(n_blocks), n_blocks // 2))
    member = np.zeros((len(combos), n_blocks), dtype=np.float64)
    for i, cb in enumerate(combos):
        member[i, list(cb)] = 1.0
    index = {cb: i for i, cb in enumerate(combos)}
    full = set(range(n_blocks))
    complement = np.array([index[tuple(sorted(full - set(cb)))] for cb in combos], dtype=np.int64)
    member.setflags(write=False)
    complement.setflags(write=False)
    return member, complement


def _chunk(n_splits: int) -> int:
    return max(1, (1 << 22) // max(n_splits, 1))


def _split_sharpes(blocks: np.ndarray, member: np.ndarray, risk_free: float) -> np.ndarray:
    """(n_splits, C) Sharpe of each column over each split's in-sample blocks (NaN → −inf)."""
    n = member @ blocks[0, :, BK_N] if blocks.shape[0] else member.sum(axis=1)
    s1 = member @ blocks[:, :, BK_SUM].T
    s2 = member @ blocks[:, :, BK_SUM2].T
    sr = sharpe_from_sums(n[:, None], s1, s2, risk_free)
    return np.where(np.isnan(sr), -np.inf, sr)


def cscv_best(blocks: np.ndarray, columns: np.ndarray | None = None, risk_free: float = 0.0) -> dict[str, np.ndarray]:
    """Pass 1 on one partition: per split the best in-sample column (its IS and OOS Sharpe, its id).

    ``blocks`` is (C, S, N_BLOCK_ACC); ``columns`` the columns' global ids (default 0..C−1).
    Columns whose Sharpe is undefined (NaN) rank below every other; ties go to the lowest id.
    """
    blocks = np.asarray(blocks, dtype=np.float64)
    n_cols, n_blocks = blocks.shape[0], blocks.shape[1]
    member, comp = cscv_splits(n_blocks)
    ids = np.arange(n_cols, dtype=np.int64) if columns is None else np.asarray(columns, dtype=np.int64)
    n_splits = member.shape[0]
    best_is = np.full(n_splits, -np.inf)
    best_col = np.full(n_splits, -1, dtype=np.int64)
    step = _chunk(n_splits)
    for lo in range(0, n_cols, step):
        sr = _split_sharpes(blocks[lo:lo + step], member, risk_free)
        arg = np.argmax(sr, axis=1)
        val = sr[np.arange(n_splits), arg]
        better = (val > best_is) | (best_col < 0)
        best_is = np.where(better, val, best_is)
        best_col = np.where(better, ids[lo + arg], best_col)
    best_oos = np.full(n_splits, -np.inf)
    if n_cols:
        pos = {int(c): i for i, c in enumerate(ids)}
        local = np.array([pos[int(c)] for c in best_col])
        n = member @ blocks[0, :, BK_N]
        s1 = np.einsum("ij,ij->i", member[comp], blocks[local, :, BK_SUM])
        s2 = np.einsum("ij,ij->i", member[comp], blocks[local, :, BK_SUM2])
        best_oos = sharpe_from_sums(n[comp], s1, s2, risk_free)
        best_oos = np.where(np.isnan(best_oos), -np.inf, best_oos)
    return {"is": best_is, "oos": best_oos, "column": best_col}


def merge_best(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Merge pass-1 results: per split the highest IS Sharpe; ties to the lowest column id."""
    parts = [p for p in parts if p["column"].size and (p["column"] >= 0).any()]
    if not parts:
        raise ValueError("no columns to merge")
    out = {k: v.copy() for k, v in parts[0].items()}
    for p in parts[1:]:
        better = (p["column"] >= 0) & (
            (out["column"] < 0)
            | (p["is"] > out["is"])
            | ((p["is"] == out["is"]) & (p["column"] < out["column"]))
        )
        for k in out:
            out[k] = np.where(better, p[k], out[k])
    return out


def cscv_count(
    blocks: np.ndarray, best: dict[str, np.ndarray], columns: np.ndarray | None = None, risk_free: float = 0.0
) -> dict[str, np.ndarray]:
    """Pass 2 on one partition: per split, the other columns whose OOS Sharpe is below / equal to the chosen one's.

    ``best`` is `merge_best`'s result; the chosen column itself is not counted (its OOS value
    was computed in another summation order, so it is skipped by id rather than compared).
    """
    blocks = np.asarray(blocks, dtype=np.float64)
    n_cols, n_blocks = blocks.shape[0], blocks.shape[1]
    ids = np.arange(n_cols, dtype=np.int64) if columns is None else np.asarray(columns, dtype=np.int64)
    chosen_oos = best["oos"]
    member, comp = cscv_splits(n_blocks)
    n_splits = member.shape[0]
    # split i's OOS set is split comp[i]'s IS set: compare row u against the threshold of comp[u]
    thr = np.asarray(chosen_oos, dtype=np.float64)[comp][:, None]
    chosen = np.asarray(best["column"], dtype=np.int64)[comp][:, None]
    less = np.zeros(n_splits, dtype=np.int64)
    equal = np.zeros(n_splits, dtype=np.int64)
    step = _chunk(n_splits)
    for lo in range(0, n_cols, step):
        sr = _split_sharpes(blocks[lo:lo + step], member, risk_free)
        other = ids[None, lo:lo + step] != chosen
        less += ((sr < thr) & other).sum(axis=1)
        equal += ((sr == thr) & other).sum(axis=1)
    # reorder from "IS set u" to "split i whose OOS set is u"
    return {"n_less": less[comp], "n_equal": equal[comp], "n_columns": np.int64(n_cols)}


def merge_counts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Sum pass-2 counts over partitions."""
    return {
        "n_less": sum(p["n_less"] for p in parts),
        "n_equal": sum(p["n_equal"] for p in parts),
        "n_columns": np.int64(sum(int(p["n_columns"]) for p in parts)),
    }


def cscv_summary(best: dict[str, np.ndarray], counts: dict[str, np.ndarray]) -> dict[str, Any]:
    """PBO, the logits' quantiles and the OOS-on-IS slope from the merged passes.

    Relative rank ω = (1 + n_less + n_equal/2) / (N + 1) — the chosen column's mid-rank among
    the N OOS Sharpes (n_less / n_equal count the other columns) over N + 1 — and logit λ = ln(ω/(1 − ω));
    PBO = share of splits with λ ≤ 0.
    """
    n = float(counts["n_columns"])
    # the chosen column's mid-rank among ties: 1 + n_less + n_equal / 2
    omega = (counts["n_less"] + 1.0 + counts["n_equal"] / 2.0) / (n + 1.0)
    logits = np.log(omega / (1.0 - omega))
    pbo = float(np.mean(logits <= 0.0))
    is_v, oos_v = best["is"], best["oos"]
    ok = np.isfinite(is_v) & np.isfinite(oos_v)
    slope = intercept = math.nan
    if ok.sum() >= 2 and np.var(is_v[ok]) > 0:
        slope, intercept = (float(v) for v in np.polyfit(is_v[ok], oos_v[ok], 1))
    return {
        "n_splits": int(logits.size),
        "pbo": pbo,
        "logit_mean": float(np.mean(logits)),
        "logit_quantiles": {str(q): float(np.quantile(logits, q)) for q in LOGIT_QUANTILES},
        "slope": slope,
        "intercept": intercept,
        "prob_oos_loss": float(np.mean(oos_v[ok] < 0.0)) if ok.any() else math.nan,
    }


def cscv(blocks: np.ndarray, risk_free: float = 0.0) -> dict[str, Any]:
    """CSCV of one (C, S, N_BLOCK_ACC) block array (the reduction run on a single partition)."""
    best = merge_best([cscv_best(blocks, risk_free=risk_free)])
    counts = merge_counts([cscv_count(blocks, best, risk_free=risk_free)])
    return cscv_summary(best, counts)


def block_bounds(n_bars: int, n_blocks: int) -> np.ndarray:
    """Block ``b`` holds bars ``bounds[b] <= t < bounds[b + 1]``, ``bounds[b] = ⌊b·T/B⌋`` (the kernel's rule)."""
    return (np.arange(n_blocks + 1, dtype=np.int64) * n_bars) // n_blocks


def block_sums_from_returns(returns: np.ndarray, n_blocks: int) -> np.ndarray:
    """(C, B, N_BLOCK_ACC) return sums of a (T, C) return matrix (trade fields left 0)."""
    r = np.asarray(returns, dtype=np.float64)
    bounds = block_bounds(r.shape[0], n_blocks)
    out = np.zeros((r.shape[1], n_blocks, N_BLOCK_ACC))
    for b in range(n_blocks):
        x = r[bounds[b]:bounds[b + 1]]
        out[:, b, BK_N] = x.shape[0]
        for k in range(1, 5):
            out[:, b, k] = (x**k).sum(axis=0)
    return out
