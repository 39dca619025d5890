"""info.overfitting of a sweep (issue 16): equal to an independent computation from the columns' equity curves,
the same whatever the partitioning and on a Dask cluster, on by default, absent when output.overfitting is null."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gpu_backtest import run_backtest
from gpu_backtest.core import overfitting as of
from gpu_backtest.core.config import Settings
from gpu_backtest.core.synthetic import gbm_panel_frame

DATA = gbm_panel_frame(8, 640, seed=5)
SPEC = {"strategy": "sma_crossover",
        "params": {"fast": {"start": 5, "stop": 20, "step": 5}, "slow": {"start": 30, "stop": 90, "step": 20}},
        "costs": {"fees": 0.0005}, "execution": {"direction": "both"},
        "output": {"top_k": 128, "trades": False, "overfitting": {"blocks": 8}}}


@pytest.fixture(scope="module")
def run():
    return run_backtest(SPEC, data=DATA, backend="cpu")


def _returns(detail, init_cash):
    eq = np.asarray(detail["equity"]["value"], dtype=float)
    prev = np.concatenate([[init_cash], eq[:-1]])
    return np.where(prev > 0, eq / prev - 1.0, 0.0)


def test_matches_independent_computation_from_equity_curves(run):
    info = run.info["overfitting"]
    assert run.info["n_columns"] == 128 and len(run.details) == 128
    cols = [d["column"] for d in run.details]
    r = np.column_stack([_returns(d, 100_000.0) for d in run.details])  # (T, C) in rank order
    assert info["n_trials"] == 128 and info["blocks"] == 8
    assert info["best_column"] == cols[0] == int(run.table["column"].iloc[0])
    # the best column: Sharpe, moments, PSR / DSR / MinTRL against scipy
    x = r[:, 0]
    sr = x.mean() / x.std(ddof=1)
    g3, g4 = stats.skew(x), stats.kurtosis(x, fisher=False)
    assert info["sharpe"] == pytest.approx(sr, rel=1e-7)
    assert info["sharpe_annualised"] == pytest.approx(run.table["sharpe"].iloc[0], rel=1e-7)
    assert info["skew"] == pytest.approx(g3, rel=1e-6) and info["kurtosis"] == pytest.approx(g4, rel=1e-6)
    psr = stats.norm.cdf(sr * math.sqrt(x.size - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert info["psr"] == pytest.approx(psr, rel=1e-6)
    srs = r.mean(axis=0) / r.std(axis=0, ddof=1)
    assert info["sharpe_variance"] == pytest.approx(np.var(srs[np.isfinite(srs)], ddof=1), rel=1e-6)
    assert info["dsr"] == pytest.approx(of.deflated_sharpe_ratio(sr, x.size, g3, g4, 128, np.var(srs, ddof=1)),
                                        rel=1e-6)
    # CSCV from the curves (columns reordered by id, as the engine breaks ties)
    order = np.argsort(cols)
    want = of.cscv(of.block_sums_from_returns(r[:, order], 8))
    got = info["cscv"]
    assert got["n_splits"] == 70
    for k in ("pbo", "logit_mean", "slope", "intercept", "prob_oos_loss"):
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-9), k
    assert got["logit_quantiles"] == pytest.approx(want["logit_quantiles"], rel=1e-6)
    # the effective number of trials: mean pairwise correlation of the per-block mean returns
    b = of.block_sums_from_returns(r, 8)
    cc = np.corrcoef(b[:, :, 1] / b[:, :, 0])
    rho = cc[np.triu_indices(128, 1)].mean()
    eff = info["effective_trials"]
    assert eff["mean_correlation"] == pytest.approx(rho, rel=1e-6, abs=1e-9)
    assert eff["n"] == pytest.approx(rho + (1 - rho) * 128, rel=1e-6)
    assert 1 <= eff["n"] <= 128
    assert eff["dsr"] >= info["dsr"]  # fewer effective trials deflate less


def test_same_over_many_partitions_and_on_dask(run):
    settings = Settings.from_env({"GPU_BACKTEST_PARTITION_CELLS": str(640 * 16 * 3)})
    many = run_backtest(SPEC, data=DATA, backend="cpu", settings=settings)
    assert many.info["partitions"] >= 3

    _same(many.info["overfitting"], run.info["overfitting"])
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        on_dask = run_backtest(SPEC, data=DATA, backend="cpu", settings=settings, client=client)
    assert on_dask.info["partitions"] >= 3
    _same(on_dask.info["overfitting"], run.info["overfitting"])


def _same(a, b):
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, dict):
            _same(v, b[k])
        elif isinstance(v, float):
            assert v == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
        else:
            assert v == b[k], k


def test_on_by_default_with_sixteen_blocks_and_off_when_null():
    off = run_backtest({**SPEC, "output": {"top_k": 1, "overfitting": None}}, data=DATA, backend="cpu")
    assert off.info["overfitting"] is None
    default = run_backtest({**SPEC, "output": {"top_k": 1}}, data=DATA, backend="cpu")
    assert default.info["overfitting"]["blocks"] == 16
    assert default.info["overfitting"]["cscv"]["n_splits"] == 12870
    on = run_backtest({**SPEC, "output": {"top_k": 1, "overfitting": {}}}, data=DATA, backend="cpu")
    assert on.info["overfitting"] == default.info["overfitting"]


def test_portfolio_sweep_has_the_same_statistics_from_its_equity_curves():
    data = gbm_panel_frame(12, 500, seed=9)
    spec = {"strategy": "xs_momentum", "params": {"lookback": [10, 20, 40, 60], "skip": [0, 5], "top_n": [3, 5]},
            "portfolio": {"rebalance": "1w"}, "costs": {"fees": 0.0005},
            "output": {"top_k": 16, "trades": False, "overfitting": {"blocks": 8}}}
    run = run_backtest(spec, data=data, backend="cpu")
    info = run.info["overfitting"]
    assert info["n_trials"] == 16 and info["blocks"] == 8
    cols = [d["column"] for d in run.details]
    assert info["best_column"] == cols[0]
    r = np.column_stack([_returns(d, 100_000.0) for d in run.details])
    x = r[:, 0]
    assert info["sharpe"] == pytest.approx(x.mean() / x.std(ddof=1), rel=1e-7)
    order = np.argsort(cols)
    want = of.cscv(of.block_sums_from_returns(r[:, order], 8))
    assert info["cscv"]["pbo"] == pytest.approx(want["pbo"], abs=1e-12)
    assert info["cscv"]["slope"] == pytest.approx(want["slope"], rel=1e-6)
    # partitions of the combinations give the same statistics
    # (a combination's weights: ~100 weekly rows × 12 symbols; 4 combinations per partition)
    many = run_backtest(spec, data=data, backend="cpu", settings=Settings(partition_cells=4 * 100 * 12))
    assert many.info["partitions"] >= 2
    _same(many.info["overfitting"], info)
