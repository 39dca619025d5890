"""The overfitting statistics of a sweep as reductions over partitions (issue 16; docs/metrics.md).

Each partition of a single-asset sweep keeps from the kernel's per-block sums what the statistics
read — Σr and Σr² per column and block, the returns per block, each column's whole-run power
sums — in its `PartitionOutput` (O(columns × S)); nothing of size columns × splits is ever
shipped. The passes are the compiled ones of `cscv_fast.py`. The executors run, per partition
and on the worker that holds its output:

1. `pass1` — per CSCV split the best in-sample column (IS Sharpe, OOS Sharpe, column id),
   the mergeable sums (count, Σ SR, Σ SR²) of the columns' whole-run per-bar Sharpe ratios and
   those of their mean pairwise correlation (the effective number of trials);
   merged by `merge_pass1`;
2. `pass2` — per split the partition's other columns below / tied with the chosen one's OOS
   Sharpe, and the per-block sums of the ranked-best column when it lives in this partition;
   combined by `finish` into ``info.overfitting``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from . import cscv_fast as cf
from . import overfitting as of
from .jitcache import FirstUse

# a process's first pass 1 / pass 2 compiles (or loads) their kernels once per disk cache (core/jitcache.py;
# the lock file lives beside the named kernel's cached builds: none when it is not cached)
_FIRST_PASS1 = FirstUse(getattr(cf, "_pass1", None), "cscv-pass1")
_FIRST_PASS2 = FirstUse(getattr(cf, "_pass2", None), "cscv-pass2")


def _ids(out: Any) -> np.ndarray:
    return np.arange(out.blocks.shape[0], dtype=np.int64) + int(out.column_start)


def _has(out: Any) -> bool:
    blocks = getattr(out, "blocks", None)
    return blocks is not None and blocks.shape[0] > 0


def _cscv_ok(out: Any) -> bool:
    return out.blocks.shape[1] >= 2 and out.blocks.shape[1] % 2 == 0


def pass1(out: Any, risk_free: float, compiled: bool | None = None) -> dict[str, Any] | None:
    """Pass 1 on one partition's output (None when it kept no block sums); ``compiled``: as
    `cscv_fast.cscv_best` (None: numpy for a small partition, numba otherwise)."""
    if not _has(out):
        return None
    tot = out.totals
    sr = of.sharpe_from_sums(tot[:, 0], tot[:, 1], tot[:, 2], risk_free)
    ok = sr[np.isfinite(sr)]
    res: dict[str, Any] = {"sr_n": int(ok.size), "sr_sum": float(ok.sum()), "sr_sum2": float((ok * ok).sum()),
                           "n_blocks": int(out.blocks.shape[1]),
                           "corr": of.correlation_sums(out.blocks[:, :, 0], out.block_n)}
    if _cscv_ok(out):
        if compiled is None:
            compiled = cf.runs_compiled(*out.blocks.shape[:2])
        with _FIRST_PASS1 if compiled else contextlib.nullcontext():
            res["best"] = cf.cscv_best(out.blocks, out.block_n, _ids(out), risk_free, compiled)
    return res


def merge_pass1(*parts: dict[str, Any] | None) -> dict[str, Any] | None:
    """Merge `pass1` results (associative)."""
    got = [p for p in parts if p is not None]
    if not got:
        return None
    out: dict[str, Any] = {k: sum(p[k] for p in got) for k in ("sr_n", "sr_sum", "sr_sum2")}
    out["n_blocks"] = got[0]["n_blocks"]
    out["corr"] = of.merge_correlation_sums([p["corr"] for p in got])
    bests = [p["best"] for p in got if "best" in p]
    if bests:
        out["best"] = cf.merge_best(bests)
    return out


def pass2(out: Any, merged: dict[str, Any] | None, best_column: int | None, risk_free: float,
          compiled: bool | None = None) -> dict[str, Any] | None:
    """Pass 2 on one partition's output: CSCV counts, and the best column's whole-run sums if here."""
    if not _has(out) or merged is None:
        return None
    res: dict[str, Any] = {"best_totals": None}
    if "best" in merged and _cscv_ok(out):
        if compiled is None:
            compiled = cf.runs_compiled(*out.blocks.shape[:2])
        with _FIRST_PASS2 if compiled else contextlib.nullcontext():
            res["counts"] = cf.cscv_count(out.blocks, out.block_n, _ids(out), merged["best"], risk_free, compiled)
    if best_column is not None:
        local = int(best_column) - int(out.column_start)
        if 0 <= local < out.blocks.shape[0]:
            res["best_totals"] = out.totals[local].copy()
    return res


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def finish(merged: dict[str, Any] | None, parts: list[dict[str, Any] | None], n_trials: int,
           best_column: int | None, periods_per_year: float, risk_free: float) -> dict[str, Any] | None:
    """``info.overfitting`` from the merged passes (None when no partition kept block sums)."""
    if merged is None:
        return None
    got = [p for p in parts if p is not None]
    n, s, s2 = merged["sr_n"], merged["sr_sum"], merged["sr_sum2"]
    sr_var = (s2 - s * s / n) / (n - 1) if n >= 2 else math.nan
    info: dict[str, Any] = {
        "method": "Bailey & López de Prado (2012, 2014); CSCV of Bailey, Borwein, López de Prado & Zhu (2015)",
        "blocks": merged["n_blocks"],
        "n_trials": int(n_trials),
        "sharpe_variance": _num(max(sr_var, 0.0)) if math.isfinite(sr_var) else None,
        "best_column": best_column,
    }
    rows = [p["best_totals"] for p in got if p.get("best_totals") is not None]
    sr_best = skew = kurt = math.nan
    n_obs = 0.0
    if rows:
        tot = rows[0]
        mom = of.moments_from_sums(*(float(v) for v in tot[:5]))
        n_obs = float(tot[0])
        sr_best = (mom["mean"] - risk_free) / mom["std"] if mom["std"] > 0 else math.nan
        skew, kurt = mom["skew"], mom["kurtosis"]
    sr0 = of.expected_max_sharpe(n_trials, max(sr_var, 0.0)) if math.isfinite(sr_var) else math.nan
    ann = math.sqrt(periods_per_year)
    info.update({
        "sharpe": _num(sr_best),
        "sharpe_annualised": _num(sr_best * ann),
        "n_returns": int(n_obs),
        "skew": _num(skew),
        "kurtosis": _num(kurt),
        "psr": _num(of.probabilistic_sharpe_ratio(sr_best, n_obs, skew, kurt)),
        "expected_max_sharpe": _num(sr0),
        "dsr": _num(of.deflated_sharpe_ratio(sr_best, n_obs, skew, kurt, n_trials, max(sr_var, 0.0))
                    if math.isfinite(sr_var) else math.nan),
        "min_track_record": _num(of.min_track_record_length(sr_best, skew, kurt)),
    })
    rho = of.mean_pairwise_correlation(merged["corr"])
    n_eff = of.effective_trials(n_trials, rho)
    sr0_eff = of.expected_max_sharpe(n_eff, max(sr_var, 0.0)) if math.isfinite(sr_var + n_eff) else math.nan
    info["effective_trials"] = {
        "n": _num(n_eff), "mean_correlation": _num(rho), "method": of.EFFECTIVE_TRIALS_METHOD,
        "expected_max_sharpe": _num(sr0_eff),
        "dsr": _num(of.probabilistic_sharpe_ratio(sr_best, n_obs, skew, kurt, sr0_eff)),
    }
    counts = [p["counts"] for p in got if "counts" in p]
    if "best" in merged and counts and n_trials >= 2:
        summary = of.cscv_summary(cf.summary_inputs(merged["best"]), of.merge_counts(counts))
        info["cscv"] = {k: (_num(v) if isinstance(v, float) else
                            {q: _num(x) for q, x in v.items()} if isinstance(v, dict) else v)
                        for k, v in summary.items()}
    else:
        info["cscv"] = None
    return info
