"""Executors: run a `RunPlan`'s stages in this process (`LocalExecutor`) or on a Dask cluster
(`DaskExecutor`). Both run the same stage functions (`core/stages.py`) in the same order:

1. calendar — each partition's timestamps, unioned (a tree reduction on the cluster);
2. partitions — load → signals → sweep → metrics; each writes its ranked Parquet piece to the
   job's artifact location (or returns its rows when no location is given);
3. ranking — per-partition top-n candidates merged into the global top-n (a tree reduction);
4. details — the top-k columns re-simulated in record mode, one task per symbol, on workers
   that load only that symbol.

On a cluster the server sends each task only its partition's slice of the plan; the calendar
is computed once on a worker and moves worker to worker; bars are read by the workers from the store,
so neither the server nor the scheduler carries market data or the result table. A worker
lost mid-task: the scheduler reruns its tasks elsewhere (pieces are rewritten atomically with
the same content); a task that raises is retried ``retries`` times, then its own error fails
the run.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from . import overfit_stages as OS
from .errors import GpuBacktestError, SpecError
from .loaders import BarsLoader, Calendar
from .plan import MODE_PORTFOLIO, Partition, RunPlan
from .stages import (
    PartitionOutput,
    calendar_stage,
    details_stage,
    merge_candidates,
    partition_stage,
    union_calendars,
)
from .worker import StageContext

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


class Cancelled(GpuBacktestError):
    """The caller asked the run to stop (checked between chunks and while waiting on tasks)."""

    code = "cancelled"
    status = 409


class TaskFailed(GpuBacktestError):
    """A cluster task failed with an error that is not one of ours (after its retries)."""

    code = "task_failed"
    status = 500


class TaskTimeout(GpuBacktestError):
    """No task of a run finished within GPU_BACKTEST_TASK_TIMEOUT_S (a stuck or frozen worker)."""

    code = "task_timeout"
    status = 500


@dataclass
class Execution:
    """What an executor hands back: never the whole table unless it was asked to keep it."""

    calendar: Calendar
    top: pd.DataFrame  # the best n rows, ranked, without the rank column
    details: list[dict[str, Any]]
    n_rows: int
    chunks: int
    ran_on: list[dict[str, Any]] = field(default_factory=list)  # per stage: where and on what
    table: pd.DataFrame | None = None  # all rows (any order), when no artifact location was given
    pieces: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # portfolio mode: series ended or stopped early
    overfitting: dict[str, Any] | None = None  # info.overfitting (core/overfit_stages.py)


class Executor(Protocol):
    """Runs a plan's stages."""

    def execute(self, plan: RunPlan, n_top: int, top_k: int, artifact: str | None,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Execution: ...


def run_calendar(plan: RunPlan, ns: np.ndarray) -> Calendar:
    return _calendar_of(plan.spec.get("metrics", {}).get("periods_per_year"), ns)


def _calendar_of(periods_per_year: float | None, ns: np.ndarray) -> Calendar:
    """The run's calendar from the union of its timestamps; SpecError when there is no bar."""
    if len(ns) == 0:
        raise SpecError("start", "no bars in the requested date range")
    return Calendar.build(ns, periods_per_year)


def calendar_tasks(plan: RunPlan, tasks: list[Any]) -> list[Any]:
    """The tasks whose symbols make the calendar: every partition's, or in portfolio mode (where
    every partition holds every symbol) the first one's only."""
    return tasks[:1] if plan.mode == MODE_PORTFOLIO else tasks


def _winners(plan: RunPlan, top: pd.DataFrame, top_k: int) -> dict[int, list[int]]:
    """Global symbol index → combination indices of the top-k columns (in rank order); in
    portfolio mode one group (key 0) of every winning combination (a column is a combination)."""
    k = plan.n_combinations
    out: dict[int, list[int]] = {}
    if plan.mode == MODE_PORTFOLIO:
        winners = [int(c) for c in top["column"].head(top_k)] if len(top) else []
        return {0: winners} if winners else {}
    for col in top["column"].head(top_k).astype(int) if len(top) else []:
        out.setdefault(col // k, []).append(col % k)
    return out


def _order_details(top: pd.DataFrame, top_k: int, found: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by_col = {d["column"]: d for d in found}
    return [by_col[int(c)] for c in top["column"].head(top_k)] if len(top) else []


def summarize_ran_on(entries: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """(stage, where) pairs → one row per (stage, worker, backend, device) with a task count."""
    counts = Counter((stage, w.get("worker"), w.get("host"), w.get("backend"), w.get("device"))
                     for stage, w in entries)
    return [{"stage": s, "worker": wk, "host": h, "backend": b, "device": d, "tasks": n}
            for (s, wk, h, b, d), n in sorted(counts.items(), key=lambda kv: (str(kv[0]), kv[1]))]


class LocalExecutor:
    """Runs every stage in this process, one partition after another."""

    def __init__(self, ctx: StageContext, loader: BarsLoader | None = None) -> None:
        self.ctx = ctx
        self.loader = loader

    def execute(self, plan: RunPlan, n_top: int, top_k: int, artifact: str | None,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Execution:
        t0 = time.perf_counter()
        tasks = [plan.task(p) for p in plan.partitions]
        cal = run_calendar(plan, union_calendars(*[calendar_stage(t, self.loader)
                                                   for t in calendar_tasks(plan, tasks)]))
        if progress:
            progress(0.05, "calendar")
        t1 = time.perf_counter()
        outs: list[PartitionOutput] = []
        done = 0
        for t in tasks:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            out = partition_stage(t, cal, artifact, n_top, self.ctx, self.loader, cancel)
            outs.append(out)
            done += out.n_rows
            if progress:
                progress(0.05 + 0.85 * done / max(1, plan.n_columns), "simulating")
        t2 = time.perf_counter()
        top = merge_candidates(plan.spec["output"]["rank_by"], n_top, *[o.top for o in outs])
        found: list[dict[str, Any]] = []
        ran_on = [("partition", o.ran_on) for o in outs]
        for s, combos in _winners(plan, top, top_k).items():
            d, where = details_stage(plan.task(Partition(-1, s, s + 1)), cal, combos, self.ctx, self.loader)
            found += d
            ran_on.append(("details", where))
        table = None
        if artifact is None:
            table = pd.concat([o.table for o in outs if o.table is not None], ignore_index=True)
        t3 = time.perf_counter()
        over = _overfitting_local(plan, top, cal, outs)
        return Execution(cal, top, _order_details(top, top_k, found), sum(o.n_rows for o in outs),
                         sum(o.chunks for o in outs), summarize_ran_on(ran_on), table,
                         [o.index for o in outs],
                         {"calendar": t1 - t0, "partitions": t2 - t1, "details": t3 - t2,
                          **({"overfitting": time.perf_counter() - t3} if over is not None else {})},
                         outs[0].notes if outs else {}, over)

    def run_tasks(self, fn: Callable[..., Any], args_list: list[tuple[Any, ...]],
                  cancel: CancelFn | None = None) -> list[Any]:
        """``fn(*args, ctx=…, loader=…)`` for each args tuple, in order (walk-forward stages)."""
        out = []
        for args in args_list:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            out.append(fn(*args, ctx=self.ctx, loader=self.loader))
        return out


def _best_column(top: pd.DataFrame) -> int | None:
    return int(top["column"].iloc[0]) if len(top) else None


def _rf(plan: RunPlan) -> float:
    return float((plan.spec.get("metrics") or {}).get("risk_free") or 0.0)


def _overfitting_local(plan: RunPlan, top: pd.DataFrame, cal: Calendar, outs: list[PartitionOutput]) -> Any:
    """info.overfitting from partition outputs held in this process (None when none kept block sums)."""
    rf = _rf(plan)
    merged = OS.merge_pass1(*[OS.pass1(o, rf) for o in outs])
    if merged is None:
        return None
    best = _best_column(top)
    parts = [OS.pass2(o, merged, best, rf) for o in outs]
    return OS.finish(merged, parts, plan.n_columns, best, cal.periods_per_year, rf)


def _out_summary(*outs: PartitionOutput) -> list[dict[str, Any]]:
    """Per-partition bookkeeping without rows (what the server fetches)."""
    return [{"index": o.index, "n_rows": o.n_rows, "chunks": o.chunks, "ran_on": o.ran_on,
             "seconds": o.seconds, "notes": o.notes} for o in outs]


def _top_of(rank_by: str, n: int, *parts: Any) -> pd.DataFrame:
    return merge_candidates(rank_by, n, *[p.top if isinstance(p, PartitionOutput) else p for p in parts])


EVENT_CLEAR_S = 60.0  # a cancelled run's stop event is removed from the scheduler after this long


def _stop_tasks(event: Any) -> None:
    """Set a run's stop event (its running tasks stop at their next chunk), and remove it from
    the scheduler a minute later, so that a server running for weeks does not keep one per cancel."""
    if event is None:
        return
    event.set()

    def clear() -> None:
        with contextlib.suppress(Exception):
            event.clear()  # no waiters: the scheduler deletes the event

    timer = threading.Timer(EVENT_CLEAR_S, clear)
    timer.daemon = True
    timer.start()


def _raise_task_error(fut: Any, retries: int) -> None:
    """Raise a failed task's error: ours as they are (code, message, details), others as
    `TaskFailed` naming the stage and the error (never a traceback)."""
    try:
        fut.result()
    except GpuBacktestError:
        raise
    except Exception as exc:
        stage = str(fut.key).split("-", 1)[0] if isinstance(fut.key, str) else "task"
        name = type(exc).__name__
        reason = "its worker was lost too many times" if name == "KilledWorker" else f"{name}: {exc}"
        raise TaskFailed(f"{stage} failed after {retries} retries: {reason}"[:2000],
                         {"stage": stage, "error": name, "retries": retries}) from None


class DaskExecutor:
    """Runs the stages as Dask tasks on ``client``'s cluster (see the module docstring)."""

    def __init__(self, client: Any, context_factory: Callable[[], StageContext], retries: int = 3,
                 fan_in: int = 8, poll_s: float = 0.25, loader: BarsLoader | None = None,
                 stall_timeout_s: float | None = None) -> None:
        self.client = client
        self.stall_timeout_s = stall_timeout_s  # no task finished for this long: the run fails (task_timeout)
        self.context_factory = context_factory  # runs on each worker: its own device, budget, plugins
        self.retries = retries
        self.fan_in = max(2, fan_in)
        self.poll_s = poll_s
        self.loader = loader  # in-memory bars (run_backtest(data, client=…)); None: workers read the store

    def _submit(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, retries=self.retries, **kw)

    def _tree(self, fn: Callable[..., Any], futs: list[Any], *lead: Any) -> Any:
        """Reduce futures with ``fn(*lead, *group)`` in groups of ``fan_in`` until one is left."""
        level = list(futs)
        while len(level) > 1:
            level = [self._submit(fn, *lead, *level[i:i + self.fan_in]) for i in range(0, len(level), self.fan_in)]
        return level[0]

    def _wait(self, futs: list[Any], cancel: CancelFn | None, on_done: Callable[[Any], None] | None = None,
              event: Any = None) -> None:
        """Wait for ``futs``, polling ``cancel``; raise the first task error as it is."""
        from distributed import wait

        pending = list(futs)
        last_done = time.monotonic()
        while pending:
            if self.stall_timeout_s is not None and time.monotonic() - last_done > self.stall_timeout_s:
                _stop_tasks(event)
                self.client.cancel(list(futs))
                raise TaskTimeout(
                    f"no task of this job finished for {self.stall_timeout_s:g} s (GPU_BACKTEST_TASK_TIMEOUT_S); "
                    f"{len(pending)} task(s) were still running or waiting — a worker may be stuck",
                    {"timeout_s": self.stall_timeout_s, "pending_tasks": len(pending)})
            if cancel is not None and cancel():
                _stop_tasks(event)  # running partition tasks stop at their next chunk
                self.client.cancel(list(futs))
                raise Cancelled("cancelled")
            try:
                wait(pending, timeout=self.poll_s, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            still = []
            if any(f.done() for f in pending):
                last_done = time.monotonic()
            for f in pending:
                if not f.done():
                    still.append(f)
                    continue
                if f.status == "error":
                    _raise_task_error(f, self.retries)
                if f.status == "cancelled":
                    raise Cancelled("cancelled")
                if on_done is not None:
                    on_done(f)
            pending = still

    def run_tasks(self, fn: Callable[..., Any], args_list: list[tuple[Any, ...]],
                  cancel: CancelFn | None = None) -> list[Any]:
        """``fn(*args, ctx=…, loader=…)`` for each args tuple as cluster tasks; results in order."""
        loader = self.client.scatter(self.loader, hash=False, broadcast=True) if self.loader is not None else None
        futs = [self._submit(fn, *args, ctx=self.context_factory, loader=loader) for args in args_list]
        self._wait(futs, cancel)
        return list(self.client.gather(futs))

    def execute(self, plan: RunPlan, n_top: int, top_k: int, artifact: str | None,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Execution:
        t0 = time.perf_counter()
        rank_by = plan.spec["output"]["rank_by"]
        # in-memory bars cannot be recomputed: a replica on every worker, so losing one loses nothing
        loader = self.client.scatter(self.loader, hash=False, broadcast=True) if self.loader is not None else None
        tasks = [plan.task(p) for p in plan.partitions]
        cal_parts = [self._submit(calendar_stage, t, loader) for t in calendar_tasks(plan, tasks)]
        cal_f = self._tree(union_calendars, cal_parts)
        # the Calendar as a computed future (not scattered data): if the worker holding it is
        # lost, the scheduler recomputes it from its lineage instead of losing the run
        cal_d = self._submit(_calendar_of, plan.spec.get("metrics", {}).get("periods_per_year"), cal_f)
        self._wait([cal_d], cancel)
        cal = cal_d.result()
        del cal_parts, cal_f
        if progress:
            progress(0.05, "calendar")
        t1 = time.perf_counter()
        from distributed import Event

        event_name = f"gpu-backtest-cancel-{uuid.uuid4().hex}"
        event = Event(event_name, client=self.client)
        outs = [self._submit(partition_stage, t, cal_d, artifact, n_top, self.context_factory, loader,
                             event_name) for t in tasks]
        done_rows = [0]
        per_task = {f.key: plan.partition_columns(t.partition) for f, t in zip(outs, tasks, strict=True)}

        def tick(f: Any) -> None:
            done_rows[0] += per_task.get(f.key, 0)
            if progress:
                progress(0.05 + 0.85 * done_rows[0] / max(1, plan.n_columns), "simulating")

        self._wait(outs, cancel, tick, event)
        t2 = time.perf_counter()
        top_f = self._tree(_top_of, outs, rank_by, n_top) if len(outs) > 1 else \
            self._submit(_top_of, rank_by, n_top, outs[0])
        summary_f = self._submit(_out_summary, *outs)
        self._wait([top_f, summary_f], cancel)
        top, summary = top_f.result(), summary_f.result()
        table = None
        if artifact is None:  # the caller asked for the rows in memory (run_backtest with a client)
            table = pd.concat([o.table for o in self.client.gather(outs)], ignore_index=True)
        over = self._overfitting(plan, top, cal, outs, cancel)
        del outs, top_f, summary_f
        ran_on = [("partition", s["ran_on"]) for s in summary]
        det_futs = []
        for s, combos in _winners(plan, top, top_k).items():
            det_futs.append(self._submit(details_stage, plan.task(Partition(-1, s, s + 1)), cal_d, combos,
                                         self.context_factory, loader))
        self._wait(det_futs, cancel)
        found: list[dict[str, Any]] = []
        for d, where in self.client.gather(det_futs):
            found += d
            ran_on.append(("details", where))
        del cal_d, det_futs
        return Execution(cal, top, _order_details(top, top_k, found), sum(s["n_rows"] for s in summary),
                         sum(s["chunks"] for s in summary), summarize_ran_on(ran_on), table,
                         [s["index"] for s in summary],
                         {"calendar": t1 - t0, "partitions": t2 - t1, "details": time.perf_counter() - t2},
                         summary[0]["notes"] if summary else {}, over)

    def _overfitting(self, plan: RunPlan, top: pd.DataFrame, cal: Calendar, outs: list[Any],
                     cancel: CancelFn | None) -> Any:
        """info.overfitting as two reductions on the workers holding the partition outputs: only
        O(splits) pieces travel (core/overfit_stages.py)."""
        rf = _rf(plan)
        p1 = [self._submit(OS.pass1, o, rf) for o in outs]
        m1 = self._tree(OS.merge_pass1, p1) if len(p1) > 1 else self._submit(OS.merge_pass1, p1[0])
        self._wait([m1], cancel)
        merged = m1.result()
        if merged is None:
            return None
        best = _best_column(top)
        p2 = [self._submit(OS.pass2, o, m1, best, rf) for o in outs]
        self._wait(p2, cancel)
        return OS.finish(merged, self.client.gather(p2), plan.n_columns, best, cal.periods_per_year, rf)
