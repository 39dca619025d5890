"""A slow, obviously-correct walk-forward, for tests: plain loops over folds, combinations and
symbols, each window an ordinary `run_backtest` on the bars cut to that window."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd

from gpu_backtest import run_backtest
from gpu_backtest.core.metrics import metric_direction

OOS_METRICS = ("sharpe", "total_return", "num_trades", "num_open_trades", "max_drawdown", "alpha", "beta")
UNITS = {"y": "years", "m": "months", "w": "weeks", "d": "days"}


def _after(times: list[pd.Timestamp], i: int, size: int | str) -> int:
    """Index of the first bar at or after times[i] + size (len(times) when none)."""
    if isinstance(size, int):
        return i + size
    end = times[i] + pd.DateOffset(**{UNITS[size[-1]]: int(size[:-1])})
    for j in range(i, len(times)):
        if times[j] >= end:
            return j
    return len(times)


def _before(times: list[pd.Timestamp], stop: int, size: int | str) -> int:
    if isinstance(size, int):
        return max(0, stop - size)
    begin = times[stop] - pd.DateOffset(**{UNITS[size[-1]]: int(size[:-1])})
    for j in range(len(times)):
        if times[j] >= begin:
            return j
    return stop


def reference_folds(times: list[pd.Timestamp], train: int | str, test: int | str,
                    anchored: bool) -> list[tuple[int, int, int, int, bool]]:
    """(train_start, train_stop, test_start, test_stop, test window full) of each fold, by the
    documented rule."""
    out = []
    start = _after(times, 0, train)
    while start < len(times):
        end = _after(times, start, test)
        stop = min(len(times), end)
        if stop - start < 2:
            break
        first = 0 if anchored else _before(times, start, train)
        if start - first >= 2:
            out.append((first, start, start, stop, end <= len(times)))
        start = stop
    return out


def _window(frame: pd.DataFrame, times: list[pd.Timestamp], a: int, b: int) -> pd.DataFrame:
    keep = set(times[a:b])
    return frame[frame["timestamp"].isin(keep)]


def reference_walk_forward(spec: dict[str, Any], frame: pd.DataFrame, grid: dict[str, list[Any]]) -> dict[str, Any]:
    """The walk-forward of ``spec`` on ``frame`` (explicit ``grid``: name → values, all combined)."""
    v = spec["validation"]
    rank_by = spec.get("output", {}).get("rank_by", "sharpe")
    sign = metric_direction(rank_by)
    times = sorted(frame["timestamp"].unique())
    symbols = sorted(frame["symbol"].unique())
    combos = [dict(zip(grid, c, strict=True)) for c in itertools.product(*grid.values())]
    base = {k: val for k, val in spec.items() if k not in ("validation", "params")}
    init = spec.get("execution", {}).get("init_cash", 100_000.0)
    folds = reference_folds(times, v["train"], v["test"], v.get("anchored", False))
    out_folds = []
    level = {s: float(init) for s in symbols}
    curves: dict[str, list[float]] = {s: [] for s in symbols}
    for (a, b, c, d, _) in folds:
        train = _window(frame, times, a, b)
        score = np.full((len(symbols), len(combos)), np.nan)
        is_total = np.full((len(symbols), len(combos)), np.nan)
        for j, combo in enumerate(combos):
            res = run_backtest({**base, "params": combo, "output": {**base.get("output", {}), "top_k": 0}},
                               train, backend="cpu")
            for _, row in res.table.iterrows():
                i = symbols.index(row["symbol"])
                score[i, j] = row[rank_by]
                is_total[i, j] = row["total_return"]
        if v.get("choose", "per_symbol") == "universe":
            means = [np.nanmean(score[:, j]) if np.isfinite(score[:, j]).any() else np.nan for j in range(len(combos))]
            best = None
            for j, m in enumerate(means):
                if not np.isnan(m) and (best is None or sign * m > sign * means[best]):
                    best = j
            picks = [best if best is not None else 0] * len(symbols)
        else:
            picks = []
            for i in range(len(symbols)):
                best = None
                for j in range(len(combos)):
                    if not np.isnan(score[i, j]) and (best is None or sign * score[i, j] > sign * score[i, best]):
                        best = j
                picks.append(best if best is not None else 0)
        test = _window(frame, times, c, d)
        rows = []
        for i, sym in enumerate(symbols):
            res = run_backtest({**base, "symbols": [sym], "params": combos[picks[i]],
                                "output": {**base.get("output", {}), "top_k": 1, "equity_curves": True}},
                               test, backend="cpu")
            eq = np.array(res.details[0]["equity"]["value"])
            curves[sym] += list(eq * level[sym] / init)
            level[sym] = curves[sym][-1]
            rows.append({"symbol": sym, "params": combos[picks[i]], "is_score": score[i, picks[i]],
                         "is_total_return": is_total[i, picks[i]],
                         "oos": {m: res.table[m].iloc[0] for m in OOS_METRICS}})
        out_folds.append({"bounds": (a, b, c, d), "times": (times[a], times[b - 1], times[c], times[d - 1]),
                          "rows": rows})
    return {"folds": out_folds, "curves": curves}
