"""The stages of a run, as functions of plain data — what executors run, here or on workers.

1. `calendar_stage`: one partition's timestamps (the executor unions them: `union_calendars`).
2. `partition_stage`: load the partition's bars → signals → sweep kernel → metrics, in chunks
   sized to this process's backend; returns the partition's top-n candidates and either its
   rows (in memory) or the location of the Parquet piece it wrote.
3. `merge_candidates`: the global top-n from partitions' candidates (a tree reduction).
4. `details_stage`: the winners of one symbol re-simulated in record mode (equity, trades).

In portfolio mode (``task.mode == "portfolio"``) a partition is a block of combinations over
every symbol: `partition_stage` runs `portfolio_engine.portfolio_sweep` and writes one row per
combination; `details_stage` re-simulates the winning combinations (one task for all of them).

Every stage takes a `StageContext` (or a zero-argument factory of one: on a cluster, the
worker process's own, `cluster/worker.py`) and an optional loader (default: read the plan's
store root), so the same code runs in-process and on any worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import artifacts
from . import metrics as M
from .loaders import BarsLoader, Calendar, StoreLoader, align, benchmark_returns, calendar_of
from .plan import MODE_PORTFOLIO, PartitionTask
from .ranking import merge_top, top_n
from .worker import StageContext


@dataclass
class PartitionOutput:
    """What a partition task returns: small, whatever the partition's size."""

    index: int
    n_rows: int
    top: pd.DataFrame
    chunks: int
    ran_on: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    table: pd.DataFrame | None = None  # the rows, when no artifact location was given
    piece: str | None = None  # where the rows were written
    notes: dict[str, Any] = field(default_factory=dict)  # portfolio mode: series ended or stopped early
    # overfitting statistics (core/overfit_stages.py): per column and block Σr, Σr² (C_p, S, 2), the
    # returns per block (S,), and per column the whole run's n, Σr, Σr², Σr³, Σr⁴ (C_p, 5)
    blocks: np.ndarray | None = None
    block_n: np.ndarray | None = None
    totals: np.ndarray | None = None
    column_start: int = 0  # global column id of blocks[0]


def _loader(task: PartitionTask, loader: BarsLoader | None) -> BarsLoader:
    return loader if loader is not None else StoreLoader(task.data)


def _bars(task: PartitionTask, calendar: Calendar, loader: BarsLoader | None) -> tuple[Any, np.ndarray | None]:
    """The task's symbols on the calendar, and the benchmark's returns (None without one)."""
    src = _loader(task, loader)
    panel = align(list(task.symbols), src.series(task.symbols), calendar.ns)
    bench = None
    if task.data.benchmark is not None:
        bench = benchmark_returns(src.series([task.data.benchmark])[0], calendar.ns)
    return panel, bench


def calendar_stage(task: PartitionTask, loader: BarsLoader | None = None) -> np.ndarray:
    """The timestamps (int64 UTC ns) at which this partition's symbols have a close."""
    return calendar_of(_loader(task, loader).series(task.symbols))


def union_calendars(*parts: np.ndarray) -> np.ndarray:
    """Union of partition calendars (associative: usable in a tree reduction)."""
    parts = tuple(p for p in parts if len(p))
    return np.unique(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)


def wanted_metrics(spec: Any) -> list[str]:
    """The metrics a spec asks for (all of its mode's by default)."""
    if spec.output.metrics:
        return list(spec.output.metrics)
    return list(M.ALL_METRICS if spec.portfolio is not None else M.METRICS)


ContextArg = StageContext | Callable[[], StageContext]


def _context(ctx: ContextArg) -> StageContext:
    return ctx if isinstance(ctx, StageContext) else ctx()


def partition_stage(task: PartitionTask, calendar: Calendar, artifact: str | None, n_top: int,
                    ctx: ContextArg, loader: BarsLoader | None = None,
                    cancel: Any = None) -> PartitionOutput:
    """Sweep one partition; write its ranked piece to ``artifact`` (a job's location) if given."""
    from .engine import BLOCKS_KEY, Engine

    ctx = _context(ctx)
    if isinstance(cancel, str):
        cancel = cluster_cancel_flag(cancel)
    t0 = time.perf_counter()
    spec = ctx.spec(task.plan_hash, task.spec)
    strategy = ctx.strategy(task.strategy.name, task.spec.get("strategy"))
    symbols = list(task.symbols)
    panel, bench = _bars(task, calendar, loader)
    t1 = time.perf_counter()
    wanted = wanted_metrics(spec)
    grid = {k: np.asarray(v) for k, v in task.grid.items()}
    engine = Engine(ctx.settings, ctx.backend)
    notes: dict[str, Any] = {}
    blocks = block_n = totals = None
    if task.mode == MODE_PORTFOLIO:
        from .portfolio_engine import portfolio_sweep

        p = task.partition
        block = {k: v[p.start:p.stop] for k, v in grid.items()}
        ended, notes = series_ends(task, panel)
        values, n_chunks = portfolio_sweep(engine, spec, strategy, block, panel, calendar.periods_per_year,
                                           bench, ended, cancel=cancel, n_blocks=overfitting_blocks(spec))
        blocks, block_n, totals = _statistics_sums(values.pop(BLOCKS_KEY, None))
        t2 = time.perf_counter()
        table = portfolio_table(p.start, p.stop, block, values, wanted)
    else:
        values, n_chunks = engine.sweep(spec, strategy, grid, panel, calendar.periods_per_year, wanted,
                                        bench, cancel=cancel, n_blocks=overfitting_blocks(spec))
        blocks, block_n, totals = _statistics_sums(values.pop(BLOCKS_KEY, None))
        t2 = time.perf_counter()
        table = column_table(symbols, task.partition.start, grid, values, wanted)
    top = top_n(table, spec.output.rank_by, n_top)
    piece = None
    if artifact is not None:
        piece = artifacts.write_piece(artifact, task.partition.index, table, spec.output.rank_by)
    t3 = time.perf_counter()
    return PartitionOutput(
        index=task.partition.index, n_rows=len(table), top=top, chunks=n_chunks, ran_on=ctx.describe(),
        seconds={"load": t1 - t0, "compute": t2 - t1, "write": t3 - t2},
        table=None if artifact is not None else table, piece=piece, notes=notes,
        blocks=blocks, block_n=block_n, totals=totals,
        column_start=task.partition.start * (1 if task.mode == MODE_PORTFOLIO else  # portfolio: combinations
                                             len(next(iter(grid.values()))) if grid else 1))


def _statistics_sums(blocks: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """What the overfitting statistics keep of the per-block sums (C, S, ≥ 5: n, Σr … Σr⁴ first):
    Σr and Σr² per block (C, S, 2), the returns per block (S,), the whole run's n, Σr … Σr⁴ (C, 5)."""
    if blocks is None:
        return None, None, None
    block_n = blocks[0, :, 0].copy() if len(blocks) else np.zeros(blocks.shape[1])
    totals = blocks[:, :, :5].sum(axis=1)
    return np.ascontiguousarray(blocks[:, :, 1:3]), block_n, totals


def overfitting_blocks(spec: Any) -> int:
    """The number of blocks the overfitting statistics want (0: off)."""
    cfg = spec.output.overfitting
    return int(cfg["blocks"]) if cfg else 0


def series_ends(task: PartitionTask, panel: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Portfolio mode: per symbol, the bar at which its source marks the series as ended (−1:
    not marked), and the notes a result shows: ``delisted`` (marked ended within the run) and
    ``stopped_early`` (data that stops before the run's last bar without a mark: held and
    marked at its last price, docs/semantics.md)."""
    marks = dict(task.data.ended)
    ns = panel.index.as_unit("ns").asi8
    ended = np.full(panel.n_symbols, -1, dtype=np.int64)
    has_close = ~np.isnan(panel.close)
    last_bar = np.where(has_close.any(axis=0), panel.n_bars - 1 - np.argmax(has_close[::-1], axis=0), -1)
    delisted, stopped = [], []
    for s, sym in enumerate(panel.symbols):
        mark = marks.get(sym)
        if mark is not None:
            bar = int(np.searchsorted(ns, mark, side="right")) - 1
            if bar >= 0:
                ended[s] = bar
                delisted.append({"symbol": sym, "last_bar": panel.index[bar].isoformat()})
                continue
        if 0 <= last_bar[s] < panel.n_bars - 1:
            stopped.append({"symbol": sym, "last_bar": panel.index[int(last_bar[s])].isoformat()})
    return ended, {"delisted": delisted, "stopped_early": stopped}


def portfolio_table(start: int, stop: int, grid: dict[str, np.ndarray], values: dict[str, np.ndarray],
                    wanted: list[str]) -> pd.DataFrame:
    """One row per combination ``start..stop-1`` of a portfolio run (symbol: null, the whole universe)."""
    n = stop - start
    cols: dict[str, Any] = {"column": np.arange(start, stop, dtype=np.int64),
                            "symbol": np.full(n, None, dtype=object)}
    for name, v in grid.items():
        cols[name] = v
    for m in wanted:
        cols[m] = values.get(m, np.full(n, np.nan))
    return pd.DataFrame(cols)


def cluster_cancel_flag(name: str) -> Any:
    """A cancel check for a task on a Dask worker: the run's `distributed.Event` named ``name``
    (set by the executor when the run is cancelled), asked between chunks."""
    from distributed import Event

    event = Event(name)

    def cancelled() -> bool:
        try:
            return bool(event.is_set())
        except Exception:  # scheduler unreachable: keep computing; the executor decides
            return False

    return cancelled


def column_table(symbols: list[str], sym_offset: int, grid: dict[str, np.ndarray],
                 values: dict[str, np.ndarray], wanted: list[str]) -> pd.DataFrame:
    """One row per (symbol, combination) of a partition: global column index, symbol, params, metrics."""
    k = len(next(iter(grid.values()))) if grid else 1
    n = len(symbols) * k
    s_idx = np.repeat(np.arange(len(symbols), dtype=np.int64), k)
    cols: dict[str, Any] = {"column": (sym_offset + s_idx) * k + np.tile(np.arange(k, dtype=np.int64), len(symbols)),
                            "symbol": np.repeat(np.array(symbols, dtype=object), k)}
    for name, v in grid.items():
        cols[name] = np.tile(v, len(symbols))
    for m in wanted:
        cols[m] = values.get(m, np.full(n, np.nan))
    return pd.DataFrame(cols)


def merge_candidates(rank_by: str, n: int, *parts: pd.DataFrame) -> pd.DataFrame:
    """The best ``n`` rows among candidate tables (associative)."""
    return merge_top(list(parts), rank_by, n)


def details_stage(task: PartitionTask, calendar: Calendar, combos: list[int], ctx: ContextArg,
                  loader: BarsLoader | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Record-mode details of ``combos`` (combination indices) of the task's one symbol."""
    from .engine import Engine

    ctx = _context(ctx)
    spec = ctx.spec(task.plan_hash, task.spec)
    strategy = ctx.strategy(task.strategy.name, task.spec.get("strategy"))
    panel, bench = _bars(task, calendar, loader)
    grid = {k: np.asarray(v) for k, v in task.grid.items()}
    engine = Engine(ctx.settings, ctx.backend)
    if task.mode == MODE_PORTFOLIO:
        from .portfolio_engine import portfolio_details

        ended, _ = series_ends(task, panel)
        return portfolio_details(engine, spec, strategy, grid, panel, combos, calendar.periods_per_year, bench,
                                 ended, wanted_metrics(spec)), ctx.describe()
    details = engine.details(spec, strategy, grid, panel, 0, combos, calendar.periods_per_year, bench,
                             wanted_metrics(spec), sym_offset=task.partition.start)
    return details, ctx.describe()
