"""Walk-forward jobs: per fold, sweep the grid on the training window, choose by ``rank_by``,
run the choice on the test window; stitch the test windows into one out-of-sample curve.

Stages (plain functions, run by an executor's `run_tasks`, here or on cluster workers):

- `train_stage`: one (fold, symbol partition): the partition's bars cut to the fold's training
  window, swept like any run (`Engine.sweep`) → every column's wanted metrics;
- `choose`: per symbol (or one for the universe: the mean of ``rank_by`` over symbols) the best
  combination, in the ranking's order (`core/ranking.py`: better direction, NaN last, lowest
  combination index on a tie);
- `test_stage`: one (fold, symbol partition): the chosen combinations re-simulated in record
  mode on the test window → equity curves, trades, metrics;
- `assemble`: the stitched out-of-sample curve per symbol (fold k's curve scaled so it starts at
  fold k−1's final equity), its metrics, and the walk-forward efficiency.

Each window is its own backtest on its own bars: flat at its first bar, indicators computed
from its first bar (no warm-up from earlier bars), a position still open at its last bar
marked to market there (docs/semantics.md "Walk-forward").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from . import metrics as M
from .folds import Fold, Validation, make_folds
from .jsonsafe import json_scalar
from .loaders import BarsLoader, Calendar
from .plan import PartitionTask, RunPlan
from .simulate import layout as L
from .stages import ContextArg, _bars, _context, wanted_metrics

__all__ = ["assemble", "choose", "run_walk_forward", "test_stage", "train_stage", "window_panel"]


def window_panel(panel: Any, start: int, stop: int) -> Any:
    """Rows ``[start, stop)`` of a panel (every symbol)."""
    return replace(panel, index=panel.index[start:stop],
                   **{f: np.ascontiguousarray(a[start:stop]) for f, a in panel.bars().items()})


def _window_bench(bench: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    """The benchmark's returns on a window, its first return 0 (as a run on those bars alone)."""
    if bench is None:
        return None
    out = np.array(bench[start:stop], dtype=np.float64)
    if len(out):
        out[0] = 0.0
    return out


def train_stage(task: PartitionTask, calendar: Calendar, fold: Fold, ctx: ContextArg,
                loader: BarsLoader | None = None) -> dict[str, Any]:
    """Sweep one partition on one fold's training window: ``{metric: (n_symbols, K)}``."""
    from .engine import Engine

    ctx = _context(ctx)
    spec = ctx.spec(task.plan_hash, task.spec)
    strategy = ctx.strategy(task.strategy.name, task.spec.get("strategy"))
    panel, bench = _bars(task, calendar, loader)
    wanted = list(dict.fromkeys([*wanted_metrics(spec), "total_return"]))  # total_return: the efficiency's
    grid = {k: np.asarray(v) for k, v in task.grid.items()}
    k = task.n_combinations
    values, _ = Engine(ctx.settings, ctx.backend).sweep(
        spec, strategy, grid, window_panel(panel, fold.train_start, fold.train_stop), calendar.periods_per_year,
        wanted, _window_bench(bench, fold.train_start, fold.train_stop))
    n_s = len(task.symbols)
    return {"fold": fold.index, "start": task.partition.start, "ran_on": ctx.describe(),
            "metrics": {m: values.get(m, np.full(n_s * k, np.nan)).reshape(n_s, k) for m in wanted}}


def choose(scores: np.ndarray, rank_by: str, universe: bool) -> np.ndarray:
    """The chosen combination per symbol from (S, K) ``rank_by`` values: each row's best, or
    (``universe``) the combination with the best mean over symbols (NaN values left out) for all.
    Best = better direction, NaN last, lowest combination index on a tie."""
    direction = M.metric_direction(rank_by)
    if universe:
        with np.errstate(all="ignore"):
            finite = np.isfinite(scores)
            counts = finite.sum(axis=0)
            mean = np.where(counts > 0, np.where(finite, scores, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
        key = np.where(np.isnan(mean), np.inf, -direction * mean)
        return np.full(scores.shape[0], int(np.argmin(key)), dtype=np.int64)
    key = np.where(np.isnan(scores), np.inf, -direction * scores)
    return np.argmin(key, axis=1).astype(np.int64)  # argmin: the first (lowest index) of equal keys


def universe_score(scores: np.ndarray, combo: int) -> float:
    """The mean of ``rank_by`` over symbols (NaN left out) of one combination."""
    col = scores[:, combo]
    col = col[np.isfinite(col)]
    return float(col.mean()) if len(col) else float("nan")


def _record(engine: Any, spec: Any, strategy: Any, grid: dict[str, np.ndarray], panel: Any,
            symbols: Sequence[int], combo: int, ppy: float, bench: np.ndarray | None) -> dict[str, Any]:
    """Record-mode run of one combination on panel symbols ``symbols``: equity, trades, metrics."""
    from .engine import RunOptions

    be, xp = engine.backend, engine.backend.xp
    opts = RunOptions.from_spec(spec)
    iopts, fopts = be.asarray(opts.with_flags(True, True)), be.asarray(opts.fopts)
    cols = list(symbols)
    bars = {f: be.kernel_layout(be.asarray(a[:, cols])) for f, a in panel.bars().items()}
    params = {name: v[[combo]] for name, v in grid.items()}
    sig = engine._signals(strategy, bars, params, {}, spec)
    n, n_bars = len(cols), panel.n_bars
    ret = xp.empty((n_bars, n), dtype=xp.float64)
    eq = xp.empty((n_bars, n), dtype=xp.float64)
    trades = xp.zeros((n, n_bars + 1, L.N_TFIELDS), dtype=xp.float64)
    ntr = xp.zeros(n, dtype=xp.int64)
    sym = xp.arange(n, dtype=xp.int64)
    be.simulate(bars["open"], bars["high"], bars["low"], bars["close"], sym,
                sig.entries, sig.exits, sig.short_entries, sig.short_exits, fopts, iopts, ret, eq, trades, ntr)
    vals = M.metrics_from_records(eq, trades, ntr, spec.execution.init_cash, ppy, spec.metrics.risk_free, xp=xp)
    vals.update(M.series_metrics(ret, ppy, spec.metrics.risk_free,
                                 be.asarray(bench) if bench is not None else None, xp=xp))
    return {"equity": be.to_host(eq), "trades": be.to_host(trades), "n_trades": be.to_host(ntr),
            "metrics": {m: be.to_host(v) for m, v in vals.items()}}


def test_stage(task: PartitionTask, calendar: Calendar, fold: Fold, chosen: Sequence[int], ctx: ContextArg,
               loader: BarsLoader | None = None) -> dict[str, Any]:
    """Run each symbol's chosen combination (``chosen``, one per task symbol) on the fold's test
    window in record mode (symbols sharing a combination in one batch)."""
    from .engine import Engine

    ctx = _context(ctx)
    spec = ctx.spec(task.plan_hash, task.spec)
    strategy = ctx.strategy(task.strategy.name, task.spec.get("strategy"))
    panel, bench = _bars(task, calendar, loader)
    window = window_panel(panel, fold.test_start, fold.test_stop)
    wbench = _window_bench(bench, fold.test_start, fold.test_stop)
    grid = {k: np.asarray(v) for k, v in task.grid.items()}
    engine = Engine(ctx.settings, ctx.backend)
    n_s, n_t = len(task.symbols), window.n_bars
    equity = np.empty((n_t, n_s))
    trades: list[np.ndarray] = [np.empty((0, L.N_TFIELDS))] * n_s
    metrics: dict[str, np.ndarray] = {}
    chosen = np.asarray(chosen, dtype=np.int64)
    for combo in np.unique(chosen):
        idx = np.flatnonzero(chosen == combo)
        rec = _record(engine, spec, strategy, grid, window, idx, int(combo), calendar.periods_per_year, wbench)
        equity[:, idx] = rec["equity"]
        for j, s in enumerate(idx):
            trades[s] = rec["trades"][j, : int(rec["n_trades"][j])]
        for m, v in rec["metrics"].items():
            metrics.setdefault(m, np.full(n_s, np.nan))[idx] = v
    return {"fold": fold.index, "start": task.partition.start, "equity": equity, "trades": trades,
            "metrics": metrics, "ran_on": ctx.describe()}


def _scaled_trades(records: np.ndarray, factor: float, offset: int, n_window: int, last: bool) -> np.ndarray:
    """A test window's trade records on the stitched curve: money fields × ``factor``, bar indices
    + ``offset``; a trade open at the end of a window that is not the last counts as closed at the
    next window's first bar (the window ends flat for the next one)."""
    r = np.array(records, dtype=np.float64, copy=True)
    for f in (L.T_SIZE, L.T_ENTRY_FEES, L.T_EXIT_FEES, L.T_PNL):
        r[:, f] *= factor
    r[:, L.T_ENTRY_IDX] += offset
    r[:, L.T_EXIT_IDX] += offset
    if not last:
        still = r[:, L.T_EXIT_REASON] == L.R_OPEN
        r[still, L.T_EXIT_IDX] = offset + n_window
        r[still, L.T_EXIT_REASON] = L.R_SIGNAL
    return r


def annualised(total_return: float, n_bars: int, ppy: float) -> float:
    """``(1 + total_return) ** (ppy / n_bars) − 1`` (NaN when undefined), as `cagr`."""
    if n_bars <= 0 or not np.isfinite(total_return) or 1.0 + total_return <= 0:
        return float("nan")
    return float((1.0 + total_return) ** (ppy / n_bars) - 1.0)


def efficiency(ann_oos: float, ann_is: float) -> float:
    """Walk-forward efficiency: annualised OOS return ÷ annualised IS return; NaN unless IS > 0."""
    if not (np.isfinite(ann_oos) and np.isfinite(ann_is)) or ann_is <= 0:
        return float("nan")
    return ann_oos / ann_is


def assemble(spec: Any, calendar: Calendar, folds: list[Fold], symbols: Sequence[str],
             grid: dict[str, list[Any]], chosen: list[np.ndarray], is_metrics: list[dict[str, np.ndarray]],
             oos: list[dict[str, Any]], bench: np.ndarray | None, scores: list[float] | None) -> dict[str, Any]:
    """The result document (see docs/semantics.md "Walk-forward"). ``oos[k]``: fold k's test
    output over all symbols (equity (T_k, S), trades per symbol, metrics)."""
    v: Validation = spec.validation
    wanted = wanted_metrics(spec)
    ppy, init = calendar.periods_per_year, spec.execution.init_cash
    index = calendar.index
    n_s = len(symbols)

    def params(combo: int) -> dict[str, Any]:
        return {name: json_scalar(vals[combo]) for name, vals in grid.items()}

    fold_docs = []
    for k, f in enumerate(folds):
        rows = [{"symbol": sym, "combination": int(chosen[k][s]), "params": params(int(chosen[k][s])),
                 "in_sample": {m: json_scalar(is_metrics[k][m][s]) for m in wanted},
                 "out_of_sample": {m: json_scalar(oos[k]["metrics"][m][s]) for m in wanted
                                   if m in oos[k]["metrics"]}}
                for s, sym in enumerate(symbols)]
        doc = {"fold": k, "train_start": index[f.train_start].isoformat(),
               "train_end": index[f.train_stop - 1].isoformat(), "test_start": index[f.test_start].isoformat(),
               "test_end": index[f.test_stop - 1].isoformat(), "train_bars": f.train_stop - f.train_start,
               "test_bars": f.test_stop - f.test_start, "symbols": rows}
        if scores is not None:
            doc["combination"] = int(chosen[k][0])
            doc["params"] = params(int(chosen[k][0]))
            doc["score"] = json_scalar(scores[k])
        fold_docs.append(doc)
    # the stitched out-of-sample curves
    n_oos = sum(f.test_stop - f.test_start for f in folds)
    stitched = np.empty((n_oos, n_s))
    stitched_trades: list[list[np.ndarray]] = [[] for _ in range(n_s)]
    level = np.full(n_s, float(init))
    offset = 0
    for k, f in enumerate(folds):
        n_w = f.test_stop - f.test_start
        factor = level / init
        stitched[offset:offset + n_w] = oos[k]["equity"] * factor[None, :]
        for s in range(n_s):
            stitched_trades[s].append(_scaled_trades(oos[k]["trades"][s], float(factor[s]), offset, n_w,
                                                     k == len(folds) - 1))
        level = stitched[offset + n_w - 1].copy()
        offset += n_w
    rows_oos = np.concatenate([np.arange(f.test_start, f.test_stop) for f in folds])
    sbench = None
    if bench is not None:
        sbench = np.concatenate([_window_bench(bench, f.test_start, f.test_stop) for f in folds])  # type: ignore[list-item]
    recs = [np.concatenate(t) if t else np.empty((0, L.N_TFIELDS)) for t in stitched_trades]
    width = max(1, max(len(r) for r in recs))
    tr = np.zeros((n_s, width, L.N_TFIELDS))
    for s, r in enumerate(recs):
        tr[s, :len(r)] = r
    agg = M.metrics_from_records(stitched, tr, np.array([len(r) for r in recs]), init, ppy, spec.metrics.risk_free)
    agg.update(M.series_metrics(M.returns_from_equity(stitched, init), ppy, spec.metrics.risk_free, sbench))
    times = [index[i].isoformat() for i in rows_oos] if spec.output.equity_curves else []
    sym_docs = []
    # stitched curves for the best output.top_k symbols only (by their out-of-sample rank_by): what a
    # job stores stays O(top_k × bars), not O(symbols × bars)
    keep = set(best_symbols(agg.get(spec.output.rank_by), spec.output.rank_by, spec.output.top_k))
    for s, sym in enumerate(symbols):
        growth = np.prod([1.0 + is_metrics[k]["total_return"][s] for k in range(len(folds))])
        n_is = sum(f.train_stop - f.train_start for f in folds)
        ann_is = annualised(float(growth) - 1.0, n_is, ppy)
        ann_oos = annualised(float(stitched[-1, s] / init - 1.0), n_oos, ppy)
        d: dict[str, Any] = {"symbol": sym, "metrics": {m: json_scalar(agg[m][s]) for m in wanted if m in agg},
                             "annualised_is_return": json_scalar(ann_is),
                             "annualised_oos_return": json_scalar(ann_oos),
                             "efficiency": json_scalar(efficiency(ann_oos, ann_is))}
        if spec.output.equity_curves and s in keep:
            d["equity"] = {"time": times, "value": [float(x) for x in stitched[:, s]]}
        sym_docs.append(d)
    effs = [d["efficiency"] for d in sym_docs if d["efficiency"] is not None]
    return {"method": v.method, "train": v.train, "test": v.test, "anchored": v.anchored, "choose": v.choose,
            "rank_by": spec.output.rank_by, "n_folds": len(folds), "oos_bars": n_oos,
            "mean_efficiency": json_scalar(float(np.mean(effs))) if effs else None,
            "folds": fold_docs, "symbols": sym_docs}


def best_symbols(values: np.ndarray | None, rank_by: str, k: int) -> list[int]:
    """Indices of the ``k`` best symbols by ``values`` of metric ``rank_by`` (NaN last, ties by index)."""
    if values is None or k <= 0:
        return []
    v = np.asarray(values, dtype=np.float64) * M.metric_direction(rank_by)
    order = np.lexsort((np.arange(len(v)), np.where(np.isnan(v), np.inf, -v)))
    return [int(i) for i in order[:k]]


RunTasks = Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]]


def run_walk_forward(plan: RunPlan, spec: Any, calendar: Calendar, run_tasks: RunTasks,
                     bench_loader: Callable[[], np.ndarray | None]) -> dict[str, Any]:
    """The walk-forward document of a planned run on its calendar. ``run_tasks(fn, args_list)``
    runs ``fn(*args, ctx=…, loader=…)`` per args tuple (in-process or as cluster tasks) and
    returns the results in order."""
    folds = make_folds(calendar.index, spec.validation)
    tasks = [plan.task(p) for p in plan.partitions]
    rank_by = spec.output.rank_by
    universe = spec.validation.choose == "universe"
    trained = run_tasks(train_stage, [(t, calendar, f) for f in folds for t in tasks])
    chosen, is_metrics, scores = [], [], []
    n_t = len(tasks)
    for k in range(len(folds)):
        parts = sorted(trained[k * n_t:(k + 1) * n_t], key=lambda o: o["start"])
        metrics = {m: np.concatenate([p["metrics"][m] for p in parts]) for m in parts[0]["metrics"]}
        pick = choose(metrics[rank_by], rank_by, universe)
        chosen.append(pick)
        scores.append(universe_score(metrics[rank_by], int(pick[0])) if universe else float("nan"))
        rows = np.arange(len(pick))
        is_metrics.append({m: v[rows, pick] for m, v in metrics.items()})
    tested = run_tasks(test_stage, [(t, calendar, f, chosen[k][t.partition.start:t.partition.stop])
                                    for k, f in enumerate(folds) for t in tasks])
    oos = []
    for k in range(len(folds)):
        parts = sorted(tested[k * n_t:(k + 1) * n_t], key=lambda o: o["start"])
        oos.append({"equity": np.concatenate([p["equity"] for p in parts], axis=1),
                    "trades": [tr for p in parts for tr in p["trades"]],
                    "metrics": {m: np.concatenate([p["metrics"][m] for p in parts]) for m in parts[0]["metrics"]}})
    doc = assemble(spec, calendar, folds, list(plan.data.symbols), plan.grid, chosen, is_metrics, oos,
                   bench_loader(), scores if universe else None)
    doc["ran_on"] = [{"stage": "walk_forward_train", **o["ran_on"]} for o in trained[:1]] + \
                    [{"stage": "walk_forward_test", **o["ran_on"]} for o in tested[:1]]
    doc["tasks"] = {"train": len(trained), "test": len(tested)}
    return doc


def fold_table(doc: dict[str, Any]) -> pd.DataFrame:
    """One row per (fold, symbol): dates, chosen parameters, IS and OOS ``rank_by`` (the CLI's table)."""
    rank_by = doc["rank_by"]
    rows = []
    for f in doc["folds"]:
        for r in f["symbols"]:
            rows.append({"fold": f["fold"], "train": f"{f['train_start'][:10]}…{f['train_end'][:10]}",
                         "test": f"{f['test_start'][:10]}…{f['test_end'][:10]}", "symbol": r["symbol"],
                         "params": " ".join(f"{k}={v}" for k, v in r["params"].items()),
                         f"IS {rank_by}": r["in_sample"].get(rank_by),
                         f"OOS {rank_by}": r["out_of_sample"].get(rank_by)})
    return pd.DataFrame(rows)
