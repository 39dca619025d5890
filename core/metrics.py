"""Performance metrics of simulated columns, vectorised over columns.

Every function works on whole arrays of columns at once and takes an ``xp`` argument (the
array module, ``numpy`` by default) so the same code runs on CuPy arrays; only numpy-API
calls that CuPy also implements are used (no ``ufunc.accumulate`` except on numpy itself).
Every function returns ``dict[str, array of shape (C,)]`` with float64 values.

Three sources of metrics:

* `metrics_from_accumulators` — sweep mode: from the kernel's ``(C, N_ACC)`` running sums
  (`core/simulate/layout.py`), O(columns) memory.
* `metrics_from_records` — record mode: from the ``(T, C)`` equity curve and the
  ``(C, M, N_TFIELDS)`` trade records, computed independently of the accumulators.
* `series_metrics` — the metrics that need the whole return series (`SERIES_METRICS`).

Both sweep and record mode first reduce their input to the same per-column sufficient
statistics (count, mean and sum of squared deviations of the returns, downside sum of squares,
omega sums, max drawdown, …) and then apply one shared set of formulas, so a metric is written
once. docs/metrics.md gives every formula, its units, the library convention it follows
(mostly empyrical) and its NaN rule.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from .simulate.layout import (
    A_BEST_RET,
    A_DOWN_SQ,
    A_EXPOSURE_BARS,
    A_FINAL_EQUITY,
    A_GROSS_LOSS,
    A_GROSS_PROFIT,
    A_HOLD_BARS,
    A_MAX_DD,
    A_MAX_DD_BARS,
    A_N_BARS,
    A_N_CLOSED,
    A_N_LOSSES,
    A_N_OPEN,
    A_N_WINS,
    A_OMEGA_NEG,
    A_OMEGA_POS,
    A_OPEN_PNL,
    A_PNL_M2,
    A_PNL_MEAN,
    A_RET_M2,
    A_RET_MEAN,
    A_WORST_RET,
    R_OPEN,
    T_ENTRY_IDX,
    T_EXIT_IDX,
    T_EXIT_REASON,
    T_PNL,
    T_RETURN,
)

__all__ = [
    "ALL_METRICS",
    "METRICS",
    "PORTFOLIO_METRICS",
    "SERIES_METRICS",
    "TAIL_METRICS",
    "metric_direction",
    "metrics_from_accumulators",
    "metrics_from_records",
    "returns_from_equity",
    "series_metrics",
    "tail_metrics",
    "tail_size",
]

Array = Any  # numpy.ndarray or cupy.ndarray

METRICS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "annual_volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration",
    "omega",
    "tail_ratio",
    "var_95",
    "cvar_95",
    "alpha",
    "beta",
    "num_trades",
    "win_rate",
    "profit_factor",
    "expectancy",
    "avg_win",
    "avg_loss",
    "best_trade",
    "worst_trade",
    "avg_holding_bars",
    "exposure",
    "sqn",
    "num_open_trades",
    "open_pnl",
    "final_equity",
)

#: Metrics that need the whole per-bar return series; only `series_metrics` computes them.
SERIES_METRICS: tuple[str, ...] = ("tail_ratio", "var_95", "cvar_95", "alpha", "beta")
#: the quantile metrics: in sweep mode from the kernel's tail heaps (`tail_size`, `tail_metrics`)
TAIL_METRICS: tuple[str, ...] = ("tail_ratio", "var_95", "cvar_95")
#: the metrics against a benchmark: in sweep mode they need the (T, C) return series
BENCHMARK_METRICS: tuple[str, ...] = ("alpha", "beta")
TAIL_Q = (5.0, 95.0)  # the percentiles of var_95 / tail_ratio (numpy's default "linear" method)

#: +1: bigger is better, -1: smaller is better. Metrics without a natural order (counts, beta,
#: holding time, exposure) are given a documented convention; see docs/metrics.md.
_DIRECTION: dict[str, int] = {
    "total_return": 1,
    "cagr": 1,
    "annual_volatility": -1,
    "sharpe": 1,
    "sortino": 1,
    "calmar": 1,
    "max_drawdown": 1,  # negative fraction: closer to 0 is better
    "max_drawdown_duration": -1,
    "omega": 1,
    "tail_ratio": 1,
    "var_95": 1,  # a (usually negative) return quantile: higher is a smaller loss
    "cvar_95": 1,
    "alpha": 1,
    "beta": -1,  # convention: less market dependence preferred
    "num_trades": 1,  # convention: more trades, more statistical evidence
    "win_rate": 1,
    "profit_factor": 1,
    "expectancy": 1,
    "avg_win": 1,
    "avg_loss": 1,  # negative currency: closer to 0 is better
    "best_trade": 1,
    "worst_trade": 1,
    "avg_holding_bars": -1,  # convention: capital tied up for less time
    "exposure": -1,  # convention: less time at risk for the same result
    "sqn": 1,
    "num_open_trades": -1,  # convention: fewer unrealised (unclosed) results
    "open_pnl": 1,
    "final_equity": 1,
}
assert tuple(_DIRECTION) == METRICS

#: Portfolio mode's own metrics (docs/metrics.md, "Portfolio metrics"), after `METRICS` in its tables.
PORTFOLIO_METRICS: tuple[str, ...] = (
    "turnover",
    "avg_holdings",
    "avg_gross_exposure",
    "avg_net_exposure",
    "total_costs",
)
_DIRECTION.update({
    "turnover": -1,  # convention: less trading for the same result
    "avg_holdings": 1,  # convention: more diversified
    "avg_gross_exposure": -1,  # convention: less capital at risk
    "avg_net_exposure": -1,
    "total_costs": -1,
})
ALL_METRICS: tuple[str, ...] = METRICS + PORTFOLIO_METRICS


def metric_direction(name: str) -> int:
    """Return +1 if a bigger value of metric ``name`` is better, -1 if a smaller one is.

    Raises ``KeyError`` for an unknown metric name.
    """
    try:
        return _DIRECTION[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(ALL_METRICS)}") from None


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _div(num: Array, den: Array, xp: ModuleType) -> Array:
    """``num / den`` with NaN where ``den == 0`` (no division warning)."""
    ok = den != 0
    return xp.where(ok, num / xp.where(ok, den, 1.0), xp.nan)


def _cummax0(x: Array, xp: ModuleType) -> Array:
    """Running maximum along axis 0."""
    if xp is np:
        return np.maximum.accumulate(x, axis=0)
    return _scan_max0(x, xp)


def _scan_max0(x: Array, xp: ModuleType) -> Array:
    """Running maximum along axis 0 by a log2(T)-step doubling scan (Hillis-Steele).

    Used where ``maximum.accumulate`` is not available (CuPy implements ``accumulate`` for a
    few ufuncs only). Max is exact, so the result equals ``numpy.maximum.accumulate``.
    """
    out = x
    n = x.shape[0]
    k = 1
    while k < n:
        nxt = out.copy()
        nxt[k:] = xp.maximum(out[k:], out[:-k])
        out = nxt
        k *= 2
    return out


def _col(value: Any, n_cols: int, xp: ModuleType) -> Array:
    """Broadcast a scalar or (C,) value to a float64 (C,) array."""
    return xp.broadcast_to(xp.asarray(value, dtype=xp.float64), (n_cols,)).astype(xp.float64)


def _return_metrics(
    n: Array,
    mean: Array,
    m2: Array,
    down_sq: Array,
    omega_pos: Array,
    omega_neg: Array,
    final_equity: Array,
    max_dd: Array,
    max_dd_bars: Array,
    init_cash: Array,
    periods_per_year: float,
    risk_free: float,
    xp: ModuleType,
) -> dict[str, Array]:
    """The return-based metrics from per-column sufficient statistics (shared by both modes).

    ``n`` returns per column, their ``mean`` and sum of squared deviations ``m2``,
    ``down_sq = Σ min(r − rf, 0)²``, ``omega_pos = Σ max(r − rf, 0)``,
    ``omega_neg = Σ max(rf − r, 0)``, the final equity, the max drawdown (≤ 0, peak starting at
    init_cash) and the longest underwater run in bars.
    """
    ppy = float(periods_per_year)
    rf = float(risk_free)
    has_bars = n > 0
    two = n >= 2
    with np.errstate(all="ignore"):
        total_return = final_equity / init_cash - 1.0
        growth = final_equity / init_cash
        ok_growth = has_bars & (growth > 0)
        # same operation order as empyrical.annual_return: ending ** (1 / (n / ppy)) - 1
        years = xp.where(has_bars, n, 1.0) / ppy
        cagr = xp.where(ok_growth, xp.where(ok_growth, growth, 1.0) ** (1.0 / years) - 1.0, xp.nan)

        var = _div(m2, n - 1.0, xp)
        std = xp.sqrt(xp.where(two, var, xp.nan))
        annual_volatility = std * (ppy**0.5)
        excess_mean = xp.where(has_bars, mean - rf, xp.nan)
        sharpe = xp.where(two & (std > 0), _div(excess_mean, std, xp) * (ppy**0.5), xp.nan)

        downside = xp.sqrt(_div(down_sq, n, xp)) * (ppy**0.5)
        sortino = xp.where(two & (downside > 0), _div(excess_mean * ppy, downside, xp), xp.nan)

        max_drawdown = xp.where(has_bars, max_dd, xp.nan)
        calmar = _div(cagr, xp.abs(max_drawdown), xp)
        calmar = xp.where(xp.isfinite(calmar), calmar, xp.nan)

        omega = xp.where(two & (omega_neg > 0), _div(omega_pos, omega_neg, xp), xp.nan)
    return {
        "total_return": total_return,
        "cagr": cagr,
        "annual_volatility": annual_volatility,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": calmar,
        "max_drawdown": max_drawdown,
        "max_drawdown_duration": xp.where(has_bars, max_dd_bars, xp.nan),
        "omega": omega,
    }


def _trade_metrics(
    n_closed: Array,
    n_wins: Array,
    n_losses: Array,
    gross_profit: Array,
    gross_loss: Array,
    pnl_mean: Array,
    pnl_m2: Array,
    best: Array,
    worst: Array,
    hold_bars: Array,
    exposure_bars: Array,
    n_bars: Array,
    n_open: Array,
    open_pnl: Array,
    final_equity: Array,
    xp: ModuleType,
) -> dict[str, Array]:
    """The trade statistics from per-column sufficient statistics (shared by both modes)."""
    has = n_closed > 0
    with np.errstate(all="ignore"):
        abs_loss = xp.abs(gross_loss)
        profit_factor = xp.where(
            abs_loss > 0,
            gross_profit / xp.where(abs_loss > 0, abs_loss, 1.0),
            xp.where(gross_profit > 0, xp.inf, xp.nan),
        )
        profit_factor = xp.where(has, profit_factor, xp.nan)
        pnl_std = xp.sqrt(_div(pnl_m2, n_closed - 1.0, xp))
        sqn = xp.where(
            (n_closed >= 2) & (pnl_std > 0),
            xp.sqrt(n_closed) * _div(pnl_mean, pnl_std, xp),
            xp.nan,
        )
    return {
        "num_trades": n_closed,
        "win_rate": _div(n_wins, n_closed, xp),
        "profit_factor": profit_factor,
        "expectancy": xp.where(has, pnl_mean, xp.nan),
        "avg_win": _div(gross_profit, n_wins, xp),
        "avg_loss": _div(gross_loss, n_losses, xp),
        "best_trade": xp.where(has, best, xp.nan),
        "worst_trade": xp.where(has, worst, xp.nan),
        "avg_holding_bars": _div(hold_bars, n_closed, xp),
        "exposure": _div(exposure_bars, n_bars, xp),
        "sqn": sqn,
        "num_open_trades": n_open,
        "open_pnl": open_pnl,
        "final_equity": final_equity,
    }


def _ordered(parts: dict[str, Array], skip: tuple[str, ...]) -> dict[str, Array]:
    return {name: parts[name] for name in METRICS if name not in skip}


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------


def returns_from_equity(equity: Array, init_cash: Any, xp: ModuleType = np) -> Array:
    """Per-bar returns of a (T, C) (or (T,)) equity curve.

    ``r_t = equity_t / equity_{t-1} − 1`` with ``equity_{-1} = init_cash`` (scalar or (C,)),
    and ``r_t = 0`` where ``equity_{t-1} <= 0`` (results past ruin are not meaningful), as in
    docs/semantics.md.
    """
    equity = xp.asarray(equity, dtype=xp.float64)
    first = xp.broadcast_to(xp.asarray(init_cash, dtype=xp.float64), equity.shape[1:])[None]
    prev = xp.concatenate([first, equity[:-1]], axis=0)
    ok = prev > 0
    return xp.where(ok, equity / xp.where(ok, prev, 1.0) - 1.0, 0.0)


def metrics_from_accumulators(
    acc: Array,
    init_cash: Any,
    periods_per_year: float,
    risk_free: float = 0.0,
    xp: ModuleType = np,
) -> dict[str, Array]:
    """Sweep mode: every metric except `SERIES_METRICS` from the kernel's (C, N_ACC) sums.

    ``risk_free`` must be the per-period rate the kernel ran with (``fopts[F_RISK_FREE]``):
    the downside and omega sums were accumulated against it. ``init_cash`` is a scalar or (C,).
    Returns ``{name: (C,) float64}`` in `METRICS` order.
    """
    acc = xp.asarray(acc, dtype=xp.float64)
    n_cols = acc.shape[0]
    init = _col(init_cash, n_cols, xp)
    n_bars = acc[:, A_N_BARS]
    final_equity = acc[:, A_FINAL_EQUITY]
    parts = _return_metrics(
        n_bars,
        acc[:, A_RET_MEAN],
        acc[:, A_RET_M2],
        acc[:, A_DOWN_SQ],
        acc[:, A_OMEGA_POS],
        acc[:, A_OMEGA_NEG],
        final_equity,
        acc[:, A_MAX_DD],
        acc[:, A_MAX_DD_BARS],
        init,
        periods_per_year,
        risk_free,
        xp,
    )
    parts.update(
        _trade_metrics(
            acc[:, A_N_CLOSED],
            acc[:, A_N_WINS],
            acc[:, A_N_LOSSES],
            acc[:, A_GROSS_PROFIT],
            acc[:, A_GROSS_LOSS],
            acc[:, A_PNL_MEAN],
            acc[:, A_PNL_M2],
            acc[:, A_BEST_RET],
            acc[:, A_WORST_RET],
            acc[:, A_HOLD_BARS],
            acc[:, A_EXPOSURE_BARS],
            n_bars,
            acc[:, A_N_OPEN],
            acc[:, A_OPEN_PNL],
            final_equity,
            xp,
        )
    )
    return _ordered(parts, SERIES_METRICS)


def _equity_return_metrics(equity: Array, init: Array, periods_per_year: float, risk_free: float,
                           xp: ModuleType) -> tuple[dict[str, Array], Array]:
    """The return metrics of (T, C) equity curves (record mode and portfolio mode), and the final equity."""
    n_t, n_cols = equity.shape
    rf = float(risk_free)
    n = xp.full((n_cols,), float(n_t))
    if n_t > 0:
        r = returns_from_equity(equity, init, xp)
        mean = r.sum(axis=0) / n_t
        m2 = ((r - mean) ** 2).sum(axis=0)
        # identical values have exactly zero dispersion (the two-pass mean can be 1 ulp off)
        m2 = xp.where(r.max(axis=0) == r.min(axis=0), 0.0, m2)
        x = r - rf
        down_sq = (xp.minimum(x, 0.0) ** 2).sum(axis=0)
        omega_pos = xp.maximum(x, 0.0).sum(axis=0)
        omega_neg = xp.maximum(-x, 0.0).sum(axis=0)
        peak = _cummax0(xp.concatenate([init[None], equity], axis=0), xp)[1:]
        below = equity < peak
        with np.errstate(all="ignore"):
            max_dd = xp.minimum((equity / peak - 1.0).min(axis=0), 0.0)
        idx = xp.arange(n_t, dtype=xp.float64)[:, None]
        last_reset = _cummax0(xp.where(below, -1.0, idx), xp)
        max_dd_bars = xp.where(below, idx - last_reset, 0.0).max(axis=0)
        final_equity = equity[-1]
    else:
        zeros = xp.zeros((n_cols,))
        mean = m2 = down_sq = omega_pos = omega_neg = max_dd = max_dd_bars = zeros
        final_equity = init
    parts = _return_metrics(
        n, mean, m2, down_sq, omega_pos, omega_neg, final_equity, max_dd, max_dd_bars,
        init, periods_per_year, rf, xp,
    )
    return parts, final_equity


def metrics_from_records(
    equity: Array,
    trades: Array,
    n_trades: Array,
    init_cash: Any,
    periods_per_year: float,
    risk_free: float = 0.0,
    xp: ModuleType = np,
) -> dict[str, Array]:
    """Record mode: every metric except `SERIES_METRICS` from equity curves and trade records.

    ``equity`` is (T, C); ``trades`` is (C, M, N_TFIELDS) and ``n_trades`` (C,) counts its
    valid rows per column (rows past it are ignored, whatever they hold); the last valid row may
    be an open trade (exit reason ``R_OPEN``). Trade lists must not have been truncated by the
    kernel (M >= T + 1 always suffices). ``init_cash`` is a scalar or (C,).
    Returns ``{name: (C,) float64}`` in `METRICS` order.
    """
    equity = xp.asarray(equity, dtype=xp.float64)
    if equity.ndim != 2:
        raise ValueError(f"equity must be (T, C), got shape {equity.shape}")
    n_t, n_cols = equity.shape
    init = _col(init_cash, n_cols, xp)
    n = xp.full((n_cols,), float(n_t))
    parts, final_equity = _equity_return_metrics(equity, init, periods_per_year, risk_free, xp)

    # ---- trade statistics ----
    trades = xp.asarray(trades, dtype=xp.float64)
    if trades.shape[1] == 0:  # no trade rows at all: add one (invalid) row so reductions work
        trades = xp.zeros((trades.shape[0], 1, trades.shape[2]), dtype=xp.float64)
    n_rows = trades.shape[1]
    counts = xp.asarray(n_trades).astype(xp.int64)
    valid = xp.arange(n_rows)[None, :] < counts[:, None]
    is_open = valid & (trades[:, :, T_EXIT_REASON] == R_OPEN)
    closed = valid & ~is_open
    pnl = trades[:, :, T_PNL]
    ret = trades[:, :, T_RETURN]
    held = trades[:, :, T_EXIT_IDX] - trades[:, :, T_ENTRY_IDX]
    with np.errstate(all="ignore"):
        n_closed = closed.sum(axis=1).astype(xp.float64)
        wins = closed & (pnl > 0)
        losses = closed & (pnl < 0)
        gross_profit = xp.where(wins, pnl, 0.0).sum(axis=1)
        gross_loss = xp.where(losses, pnl, 0.0).sum(axis=1)
        pnl_c = xp.where(closed, pnl, 0.0)
        pnl_mean = _div(pnl_c.sum(axis=1), n_closed, xp)
        pnl_m2 = (xp.where(closed, pnl - pnl_mean[:, None], 0.0) ** 2).sum(axis=1)
        pnl_max = xp.where(closed, pnl, -xp.inf).max(axis=1)
        pnl_min = xp.where(closed, pnl, xp.inf).min(axis=1)
        pnl_m2 = xp.where(pnl_max == pnl_min, 0.0, pnl_m2)
        best = xp.where(closed, ret, -xp.inf).max(axis=1)
        worst = xp.where(closed, ret, xp.inf).min(axis=1)
        hold_bars = xp.where(closed, held, 0.0).sum(axis=1)
        # closing position is non-flat on bars entry..exit-1 of a closed trade and on bars
        # entry..T-1 of the open one (trades never overlap; exit bar = next entry bar is
        # counted by the next trade)
        open_bars = xp.where(is_open, n_t - trades[:, :, T_ENTRY_IDX], 0.0).sum(axis=1)
    parts.update(
        _trade_metrics(
            n_closed,
            wins.sum(axis=1).astype(xp.float64),
            losses.sum(axis=1).astype(xp.float64),
            gross_profit,
            gross_loss,
            pnl_mean,
            pnl_m2,
            best,
            worst,
            hold_bars,
            hold_bars + open_bars,
            n,
            is_open.sum(axis=1).astype(xp.float64),
            xp.where(is_open, pnl, 0.0).sum(axis=1),
            final_equity,
            xp,
        )
    )
    return _ordered(parts, SERIES_METRICS)


def series_metrics(
    returns: Array,
    periods_per_year: float,
    risk_free: float = 0.0,
    benchmark: Array | None = None,
    xp: ModuleType = np,
) -> dict[str, Array]:
    """`SERIES_METRICS` of a (T, C) per-bar returns array (no NaN expected).

    tail_ratio, var_95, cvar_95 as empyrical's ``tail_ratio``, ``value_at_risk(cutoff=0.05)``,
    ``conditional_value_at_risk(cutoff=0.05)``; alpha and beta as empyrical's ``alpha_beta``
    against ``benchmark`` (T,) per-bar returns, annualised with ``periods_per_year`` — NaN for
    every column when no benchmark is given. Returns ``{name: (C,) float64}``.
    """
    returns = xp.asarray(returns, dtype=xp.float64)
    if returns.ndim == 1:
        returns = returns[:, None]
    n_t, n_cols = returns.shape
    nan = xp.full((n_cols,), xp.nan)
    out = {name: nan for name in SERIES_METRICS}
    if n_t == 0:
        return out
    with np.errstate(all="ignore"):
        p5, p95 = xp.percentile(returns, xp.asarray(TAIL_Q), axis=0)
        out["tail_ratio"] = _div(xp.abs(p95), xp.abs(p5), xp)
        out["var_95"] = p5
        k = int((n_t - 1) * 0.05)
        out["cvar_95"] = xp.sort(returns, axis=0)[: k + 1].mean(axis=0)
    out.update(benchmark_metrics(returns, periods_per_year, risk_free, benchmark, xp))
    return out


def benchmark_metrics(
    returns: Array,
    periods_per_year: float,
    risk_free: float = 0.0,
    benchmark: Array | None = None,
    xp: ModuleType = np,
) -> dict[str, Array]:
    """`BENCHMARK_METRICS` (alpha, beta) of a (T, C) per-bar returns array against ``benchmark``
    (T,), as empyrical's ``alpha_beta``; NaN for every column without a benchmark."""
    n_t, n_cols = returns.shape
    nan = xp.full((n_cols,), xp.nan)
    out = {"alpha": nan, "beta": nan}
    if benchmark is None or n_t < 2:
        return out
    with np.errstate(all="ignore"):
        bench = xp.asarray(benchmark, dtype=xp.float64).reshape(n_t, 1)
        rf = float(risk_free)
        b_res = bench - bench.mean()
        cov = (b_res * returns).mean(axis=0)
        var = (b_res**2).mean()
        beta = xp.where(var >= 1.0e-30, cov / xp.where(var >= 1.0e-30, var, 1.0), xp.nan)
        excess = (returns - rf) - beta[None, :] * (bench - rf)
        out["alpha"] = (excess.mean(axis=0) + 1.0) ** periods_per_year - 1.0
        out["beta"] = beta
    return out


def series_needs(wanted: Any, has_benchmark: bool) -> tuple[bool, bool]:
    """Sweep mode: whether the wanted metrics need the kernel's tail heaps (`TAIL_METRICS`) and
    whether they need the (T, C) return series (alpha/beta, only with a benchmark)."""
    wanted = set(wanted)
    return bool(wanted & set(TAIL_METRICS)), bool(has_benchmark and wanted & set(BENCHMARK_METRICS))


def _linear_index(n: int, q: float) -> tuple[int, int, float]:
    """numpy's "linear" percentile of ``n`` sorted values at ``q`` %: the two order statistics it
    interpolates between and the weight — ``h = (n − 1)·q/100``, ``⌊h⌋``, ``⌊h⌋ + 1`` (both clipped
    to n − 1), ``γ = h − ⌊h⌋`` — computed with numpy's own float64 arithmetic."""
    h = float(np.float64(n - 1) * np.true_divide(np.float64(q), 100))
    lo = math.floor(h)
    if h >= n - 1:
        return n - 1, n - 1, h - lo
    return lo, lo + 1, h - lo


def tail_size(n: int) -> int:
    """How many of the smallest and of the largest of ``n`` returns `tail_metrics` needs (the kernel's
    ``n_tail``): the order statistics of the 5th and 95th percentiles and CVaR's ``int((n−1)·0.05) + 1``
    smallest. About 5 % of ``n`` per side."""
    if n <= 0:
        return 0
    _, hi5, _ = _linear_index(n, TAIL_Q[0])
    lo95, _, _ = _linear_index(n, TAIL_Q[1])
    k = int((n - 1) * 0.05)
    return int(min(n, max(hi5 + 1, k + 1, n - lo95)))


def _lerp(a: Array, b: Array, t: float) -> Array:
    """numpy's `percentile` interpolation (``a + (b − a)·t``, or ``b − (b − a)·(1 − t)`` for t ≥ ½)."""
    d = b - a
    return b - d * (1.0 - t) if t >= 0.5 else a + d * t


def tail_metrics(tails: Array, n: int, xp: ModuleType = np) -> dict[str, Array]:
    """`TAIL_METRICS` from the kernel's tail heaps ``tails`` (C, 2, m), m = `tail_size`(n), of ``n``
    returns per column: ``tails[:, 0]`` the m smallest returns, ``tails[:, 1]`` the m largest negated
    (heap order). The same order statistics, interpolation and CVaR set as `series_metrics` on the
    whole series (docs/metrics.md: exact, O(columns × m) memory instead of O(columns × T))."""
    tails = xp.asarray(tails, dtype=xp.float64)
    n_cols = tails.shape[0]
    if n <= 0 or n_cols == 0:
        nan = xp.full((n_cols,), xp.nan)
        return {name: nan for name in TAIL_METRICS}
    small = xp.sort(tails[:, 0, :], axis=1)  # small[:, j] = x_(j), the j-th smallest (0-based)
    large = xp.sort(tails[:, 1, :], axis=1)  # -large[:, j] = x_(n-1-j), the j-th largest
    lo, hi, g = _linear_index(n, TAIL_Q[0])
    p5 = _lerp(small[:, lo], small[:, hi], g)
    lo, hi, g = _linear_index(n, TAIL_Q[1])
    p95 = _lerp(-large[:, n - 1 - lo], -large[:, n - 1 - hi], g)
    k = int((n - 1) * 0.05)
    with np.errstate(all="ignore"):
        return {"tail_ratio": _div(xp.abs(p95), xp.abs(p5), xp), "var_95": p5,
                "cvar_95": small[:, : k + 1].mean(axis=1)}


def portfolio_metrics(
    equity: Array,
    acc: Array,
    init_cash: Any,
    periods_per_year: float,
    risk_free: float = 0.0,
    xp: ModuleType = np,
) -> dict[str, Array]:
    """Portfolio mode: `METRICS` (except `SERIES_METRICS`) and `PORTFOLIO_METRICS` per column.

    ``equity`` is the kernel's (T, C) equity curves, ``acc`` its (C, N_PACC) accumulators
    (core/simulate/portfolio_layout.py): the return metrics come from the equity curves as in
    record mode, the trade statistics from the position-trade sums (docs/metrics.md,
    "Portfolio metrics"). Returns ``{name: (C,) float64}``.
    """
    from .simulate import portfolio_layout as P

    equity = xp.asarray(equity, dtype=xp.float64)
    acc = xp.asarray(acc, dtype=xp.float64)
    n_t, n_cols = equity.shape
    init = _col(init_cash, n_cols, xp)
    parts, final_equity = _equity_return_metrics(equity, init, periods_per_year, risk_free, xp)
    n = xp.full((n_cols,), float(n_t))
    parts.update(
        _trade_metrics(
            acc[:, P.PA_N_CLOSED],
            acc[:, P.PA_N_WINS],
            acc[:, P.PA_N_LOSSES],
            acc[:, P.PA_GROSS_PROFIT],
            acc[:, P.PA_GROSS_LOSS],
            acc[:, P.PA_PNL_MEAN],
            acc[:, P.PA_PNL_M2],
            acc[:, P.PA_BEST_RET],
            acc[:, P.PA_WORST_RET],
            acc[:, P.PA_HOLD_BARS],
            acc[:, P.PA_EXPOSURE_BARS],
            n,
            acc[:, P.PA_N_OPEN],
            acc[:, P.PA_OPEN_PNL],
            final_equity,
            xp,
        )
    )
    out = _ordered(parts, SERIES_METRICS)
    with np.errstate(all="ignore"):
        out["turnover"] = _div(acc[:, P.PA_TURNOVER_REL] * float(periods_per_year), n, xp)
        out["avg_holdings"] = _div(acc[:, P.PA_HOLDINGS_SUM], n, xp)
        out["avg_gross_exposure"] = _div(acc[:, P.PA_GROSS_SUM], acc[:, P.PA_EXPO_BARS_POS], xp)
        out["avg_net_exposure"] = _div(acc[:, P.PA_NET_SUM], acc[:, P.PA_EXPO_BARS_POS], xp)
        out["total_costs"] = acc[:, P.PA_COSTS] + 0.0
    return out
