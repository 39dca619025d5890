"""The stages of a run, as functions of plain data — what executors run, here or on workers.

1. `calendar_stage`: one partition's timestamps (the executor unions them: `union_calendars`).
2. `partition_stage`: load the partition's bars → signals → sweep kernel → metrics, in chunks
   sized to this process's backend; returns the partition's top-n candidates and either its
   rows (in memory) or the location of the Parquet piece it wrote.
3. `merge_candidates`: the global top-n from partitions' candidates (a tree reduction).
4. `details_stage`: the winners of one symbol re-simulated in record mode (equity, trades).

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
from .plan import PartitionTask
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
    """The metrics a spec asks for (all by default)."""
    return list(spec.output.metrics or M.METRICS)


ContextArg = StageContext | Callable[[], StageContext]


def _context(ctx: ContextArg) -> StageContext:
    return ctx if isinstance(ctx, StageContext) else ctx()


def partition_stage(task: PartitionTask, calendar: Calendar, artifact: str | None, n_top: int,
                    ctx: ContextArg, loader: BarsLoader | None = None,
                    cancel: Any = None) -> PartitionOutput:
    """Sweep one partition; write its ranked piece to ``artifact`` (a job's location) if given."""
    from .engine import Engine

    ctx = _context(ctx)
    if isinstance(cancel, str):
        cancel = cluster_cancel_flag(cancel)
    t0 = time.perf_counter()
    spec = ctx.spec(task.plan_hash, task.spec)
    strategy = ctx.strategy(task.strategy.name)
    symbols = list(task.symbols)
    panel, bench = _bars(task, calendar, loader)
    t1 = time.perf_counter()
    wanted = wanted_metrics(spec)
    need_series = any(m in M.SERIES_METRICS for m in wanted)
    grid = {k: np.asarray(v) for k, v in task.grid.items()}
    engine = Engine(ctx.settings, ctx.backend)
    values, n_chunks = engine.sweep(spec, strategy, grid, panel, calendar.periods_per_year, need_series,
                                    bench, cancel=cancel)
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
        table=None if artifact is not None else table, piece=piece)


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
    strategy = ctx.strategy(task.strategy.name)
    panel, bench = _bars(task, calendar, loader)
    grid = {k: np.asarray(v) for k, v in task.grid.items()}
    engine = Engine(ctx.settings, ctx.backend)
    details = engine.details(spec, strategy, grid, panel, 0, combos, calendar.periods_per_year, bench,
                             wanted_metrics(spec), sym_offset=task.partition.start)
    return details, ctx.describe()
