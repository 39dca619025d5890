"""The engine: spec → run plan → executor (stages, here or on a cluster) → ranked result.

`run_backtest(spec, data)` is the Python API. Work is a matrix of columns (symbol ×
parameter combination, symbol-major) over T bars. `Engine.plan` turns a spec into a
`RunPlan` (core/plan.py) once; an executor (core/executors.py: in-process, or Dask with
``client=``) runs its stages; the compute primitives every stage uses live here:
`Engine.sweep` (chunks sized to the backend's memory budget, sweep mode: O(columns) running
sums) and `Engine.details` (record mode: equity curves and trades of a few columns).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import artifacts
from . import metrics as M
from .backend import Backend, select_backend
from .config import Settings
from .errors import DataError, GpuBacktestError, NotFoundError, SpecError
from .executors import CancelFn, Cancelled, Executor, LocalExecutor, ProgressFn, calendar_tasks, run_calendar
from .expr import expression_strategy, is_expression
from .expr.strategy import source_info
from .fused import FusedSignals, column_operands
from .jsonsafe import json_scalar
from .loaders import BarsLoader, PanelLoader, data_info
from .marketdata import bounds_ns
from .panel import MarketPanel, to_panel
from .plan import (
    MODE_PORTFOLIO,
    MODE_SIGNALS,
    DataSelection,
    Partition,
    RunPlan,
    StrategyRef,
    content_hash,
    partition_symbols,
    symbols_per_partition,
)
from .portfolio_engine import check_portfolio_spec, portfolio_info, rebalance_rows_hint
from .portfolio_strategy import KIND_PORTFOLIO, strategy_kind
from .ranking import rank_sorted
from .registry import Registry, get_strategy
from .simulate import layout as L
from .simulate.sim_options import SimOptions
from .spec import BacktestSpec, Portfolio, expand_grid, grid_size
from .stages import calendar_stage, details_stage, union_calendars, wanted_metrics
from .strategy import SignalContext, Signals, Strategy
from .worker import StageContext

# bytes per (bar, column) a chunk needs: 4 bool signals, ~2 gathered float64 indicators and
# boolean temporaries; plus 8 when the return series is kept for series metrics.
BYTES_PER_CELL = 40
BYTES_PER_CELL_SERIES = 8

BLOCKS_KEY = "_blocks"  # Engine.sweep's output key of the per-block sums (not a metric)
SUMMARY_ROWS = 20  # candidates kept per partition at least: the job summary's top rows

__all__ = ["BacktestResult", "CancelFn", "Cancelled", "Engine", "ProgressFn", "StrategyError"]


STRATEGY_MESSAGE_CHARS = 500  # a strategy's own error message is cut to this length


class StrategyError(GpuBacktestError):
    """A strategy's ``signals`` raised, or returned something that is not boolean (T, C) arrays.

    The job fails with code ``strategy_error`` and a message naming the strategy and the
    exception (type and text, never a traceback)."""

    code = "strategy_error"
    status = 500

    @classmethod
    def raised(cls, strategy: str, exc: BaseException) -> StrategyError:
        """The error for an exception a strategy's code raised."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if len(text) > STRATEGY_MESSAGE_CHARS:
            text = text[:STRATEGY_MESSAGE_CHARS - 1] + "…"
        return cls(f"strategy {strategy!r} raised {text}", {"strategy": strategy, "exception": type(exc).__name__})


def call_strategy(name: str, fn: Callable[[Any], Any], ctx: Any) -> Any:
    """``fn(ctx)`` — a strategy's code, maybe a plugin's: what it raises is the job's
    `StrategyError` (strategy_error), not ours; our own errors and MemoryError pass through."""
    try:
        return fn(ctx)
    except (GpuBacktestError, MemoryError):
        raise
    except Exception as exc:
        raise StrategyError.raised(name, exc) from None


@dataclass
class Chunk:
    """One unit of work: a block of symbols × a block of combinations."""

    sym_start: int
    sym_stop: int
    combo_start: int
    combo_stop: int

    @property
    def n_columns(self) -> int:
        return (self.sym_stop - self.sym_start) * (self.combo_stop - self.combo_start)


def plan_chunks(n_symbols: int, n_combos: int, n_bars: int, budget: int, bytes_per_cell: int) -> list[Chunk]:
    """Split S × K columns into chunks of whole symbols (or of combinations when one symbol's
    combinations alone exceed the budget) so one chunk needs at most ``budget`` bytes."""
    per_column = max(1, n_bars * bytes_per_cell)
    max_cols = max(1, budget // per_column)
    chunks = []
    if n_combos <= max_cols:
        syms = max(1, max_cols // n_combos)
        for s0 in range(0, n_symbols, syms):
            chunks.append(Chunk(s0, min(n_symbols, s0 + syms), 0, n_combos))
    else:
        for s0 in range(n_symbols):
            for k0 in range(0, n_combos, max_cols):
                chunks.append(Chunk(s0, s0 + 1, k0, min(n_combos, k0 + max_cols)))
    return chunks


@dataclass(frozen=True)
class RunOptions:
    """The spec's options as the single-asset kernel's named `SimOptions` (and its option arrays)."""

    sim: SimOptions

    @classmethod
    def from_spec(cls, spec: BacktestSpec) -> RunOptions:
        ex, co = spec.execution, spec.costs
        return cls(SimOptions(
            init_cash=ex.init_cash,
            fees=co.fees,
            fixed_fee=co.fixed_fee,
            slippage=co.slippage,
            size=ex.size,
            size_type=ex.size_type,
            fill=ex.fill,
            direction=ex.direction,
            fractional=bool(ex.fractional),
            sl_stop=ex.sl_stop,
            tp_stop=ex.tp_stop,
            tsl_stop=ex.tsl_stop,
            risk_free=spec.metrics.risk_free,
        ))

    @property
    def fopts(self) -> np.ndarray:
        """The kernel's float option array."""
        return self.sim.arrays()[0]

    @property
    def iopts(self) -> np.ndarray:
        """The kernel's int option array (no returns, no records)."""
        return self.sim.arrays()[1]

    def with_flags(self, want_returns: bool, record: bool, n_blocks: int = 0, n_tail: int = 0,
                   fused: bool = False) -> np.ndarray:
        """The int option array with the output switches set (``n_blocks`` > 0: per-block sums;
        ``n_tail`` > 0: tail heaps of that size; ``fused``: signals from the fused form)."""
        return dataclasses.replace(self.sim, want_returns=want_returns, record=record, n_blocks=n_blocks,
                                   n_tail=n_tail, fused=fused).arrays()[1]


@dataclass
class BacktestResult:
    """The outcome: ``table`` (one row per column, ranked — or, when the run wrote its table to
    an ``artifact`` location, the top rows), ``details`` (top-k), ``info``."""

    spec: BacktestSpec
    table: pd.DataFrame
    details: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    param_names: list[str] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)
    artifact: str | None = None  # where the full table's pieces are (then ``table`` holds the top rows)

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Ranked result rows as ``{"rank", "column", "symbol", "params", "metrics"}`` dicts."""
        df = self.table if limit is None else self.table.head(limit)
        out = []
        for rec in df.to_dict("records"):
            out.append({
                "rank": int(rec["rank"]),
                "column": int(rec["column"]),
                "symbol": rec["symbol"],
                "params": {p: json_scalar(rec[p]) for p in self.param_names},
                "metrics": {m: json_scalar(rec[m]) for m in self.metric_names},
            })
        return out

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """The JSON-able result document (non-finite numbers become null)."""
        return {"info": self.info, "results": self.rows(limit), "details": self.details}


def resolve_strategy(spec: BacktestSpec, registry: Registry) -> Strategy:
    """The spec's strategy: an expression strategy object compiled (core/expr), or a name looked
    up in the registry; SpecError on ``strategy`` naming the known ones otherwise."""
    if is_expression(spec.strategy):
        return expression_strategy(spec.strategy)  # type: ignore[return-value]
    try:
        return get_strategy(registry, spec.strategy)
    except NotFoundError as exc:
        raise SpecError("strategy", exc.message) from None


def check_mode(spec: BacktestSpec, strategy: Any) -> BacktestSpec:
    """The spec for its strategy's kind: a portfolio strategy gets its ``portfolio`` rules (the
    defaults when null) and the portfolio checks; a single-asset strategy takes no ``portfolio``
    and none of the portfolio-only metrics. SpecError naming the field otherwise."""
    if strategy_kind(strategy) == KIND_PORTFOLIO:
        if spec.validation is not None:
            raise SpecError("validation", "walk-forward validation is not supported for portfolio strategies "
                                          f"({strategy.name!r} is one); use a single-asset strategy")
        spec = dataclasses.replace(spec, portfolio=spec.portfolio or Portfolio())
        check_portfolio_spec(spec, strategy)
        return spec
    if spec.portfolio is not None:
        raise SpecError("portfolio", f"strategy {strategy.name!r} is a single-asset strategy (one column per "
                                     f"symbol); portfolio options need a portfolio strategy (GET /strategies, kind "
                                     f"portfolio)")
    only = set(M.PORTFOLIO_METRICS)
    if spec.output.rank_by in only:
        raise SpecError("output.rank_by", f"{spec.output.rank_by!r} is a portfolio-mode metric; strategy "
                                          f"{strategy.name!r} is a single-asset strategy")
    for i, m in enumerate(spec.output.metrics or ()):
        if m in only:
            raise SpecError(f"output.metrics[{i}]", f"{m!r} is a portfolio-mode metric; strategy "
                                                    f"{strategy.name!r} is a single-asset strategy")
    return spec


def _bool_signal(xp: Any, arr: Any, shape: tuple[int, int], name: str, strategy: str) -> Any:
    if arr is None:
        return xp.zeros(shape, dtype=bool)
    if tuple(arr.shape) != shape:
        raise StrategyError(f"strategy {strategy!r} returned {name} of shape {tuple(arr.shape)}, expected {shape}")
    if arr.dtype != bool:
        arr = arr.astype(bool)
    return arr


class Engine:
    """Plans specs and computes on one backend; `run` is the whole pipeline."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None,
                 registry: Registry | None = None, data_service: Any = None) -> None:
        self.settings = settings or Settings.from_env()
        self.backend = backend or select_backend(self.settings)
        self._registry = registry
        self._data_service = data_service
        # sweeps use a strategy's fused form where it has one (core/fused.py); False: the array form
        self.fused_signals = self.settings.fused_signals

    @property
    def registry(self) -> Registry:
        """The strategies and data sources this engine plans with (passed in by the caller)."""
        if self._registry is None:
            raise TypeError("this Engine was built without a registry; pass plugins.manager.default_registry()")
        return self._registry

    @property
    def data_service(self) -> Any:
        """The market-data service specs without explicit data load from (created on first use)."""
        if self._data_service is None:
            from .dataservice import MarketDataService

            self._data_service = MarketDataService(self.settings, self.registry)
        return self._data_service

    def stage_context(self) -> StageContext:
        """This engine as a stage context (in-process executors)."""
        return StageContext(self.settings, self.backend, dict(self.registry.strategies()))

    # -- planning -----------------------------------------------------------------------------
    def plan(self, spec: Any, data: Any = None) -> tuple[RunPlan, BarsLoader | None]:
        """Validate the spec and resolve everything a run depends on into a `RunPlan`; every
        user error that can be known before computing is raised here.

        ``data`` None: the spec's ``source`` (default synthetic) through the data store (missing
        bars are fetched first; workers then read the store); else bars in memory, served by
        the returned loader."""
        spec = BacktestSpec.from_dict(spec)
        strategy = resolve_strategy(spec, self.registry)
        spec = check_mode(spec, strategy)
        portfolio = spec.portfolio is not None
        grid = expand_grid(strategy, spec.params, self.settings.max_grid)
        loader: BarsLoader | None = None
        if spec.symbols is not None:  # the limit before any data is fetched or read
            self._check_columns((1 if portfolio else len(dict.fromkeys(spec.symbols))) * grid_size(grid))
        if data is None:
            selection, bars_hint = self.data_service.selection_for(spec)
        else:
            panel = to_panel(data)
            lo, hi = bounds_ns(spec.start, spec.end)
            symbols = tuple(spec.symbols) if spec.symbols is not None else tuple(panel.symbols)
            missing = [s for s in symbols if s not in set(panel.symbols)]
            if missing:
                raise DataError(f"no data for symbol(s): {', '.join(missing)}", ",".join(missing))
            bench = spec.metrics.benchmark
            if bench is not None and bench not in panel.symbols:
                raise SpecError("metrics.benchmark", f"no data for benchmark symbol {bench!r}")
            selection = DataSelection(None, spec.frequency, spec.adjusted, symbols, bench, lo, hi)
            loader = PanelLoader(panel, lo, hi)
            bars_hint = panel.n_bars
        k = grid_size(grid)
        self._check_columns((1 if portfolio else len(selection.symbols)) * k)
        if selection.benchmark != spec.metrics.benchmark:  # the source's spelling of the benchmark symbol
            spec = dataclasses.replace(spec, metrics=dataclasses.replace(spec.metrics, benchmark=selection.benchmark))
        if portfolio:  # blocks of combinations, each a portfolio over every symbol
            rows_hint = rebalance_rows_hint(spec.portfolio.rebalance, spec.frequency, bars_hint)  # type: ignore[union-attr]
            per = symbols_per_partition(len(selection.symbols), rows_hint, self.settings.partition_cells)
            partitions = partition_symbols(k, per)
        else:
            per = symbols_per_partition(k, bars_hint, self.settings.partition_cells)
            partitions = partition_symbols(len(selection.symbols), per)
        ref = (self.strategy_ref(strategy.name) if not is_expression(spec.strategy) else
               StrategyRef(name=strategy.name, plugin="expression", version=source_info(spec.strategy)["digest"]))
        plan = RunPlan(strategy=ref, spec=spec.to_dict(),
                       grid={name: v.tolist() for name, v in grid.items()}, data=selection,
                       partitions=partitions, mode=MODE_PORTFOLIO if portfolio else MODE_SIGNALS)
        return dataclasses.replace(plan, hash=content_hash(plan)), loader

    def _check_columns(self, n_cols: int) -> None:
        if n_cols > self.settings.max_columns:
            raise SpecError("params", f"{n_cols} columns (symbols × combinations) exceed the limit "
                                      f"{self.settings.max_columns} (GPU_BACKTEST_MAX_COLUMNS)")

    def strategy_ref(self, name: str) -> StrategyRef:
        """The strategy and the plugin/distribution/version that provide it."""
        return StrategyRef(name=name, **self.registry.provenance(name))

    # -- running ------------------------------------------------------------------------------
    def run(self, spec: Any, data: Any = None, progress: ProgressFn | None = None,
            cancel: CancelFn | None = None, executor: Executor | None = None,
            artifact: str | None = None) -> BacktestResult:
        """Run a spec on data (any form `to_panel` accepts; None: the spec's data source).

        ``executor``: in-process by default; a `DaskExecutor` runs the stages on a cluster.
        ``artifact``: where the full table's ranked Parquet pieces go (the result then holds
        the top rows only; `BacktestResult.artifact` names the location)."""
        t0 = time.perf_counter()
        plan, loader = self.plan(spec, data)
        spec = BacktestSpec.from_dict(plan.spec)
        if executor is None:
            executor = LocalExecutor(self.stage_context(), loader)
        elif loader is not None and getattr(executor, "loader", None) is None:
            executor.loader = loader  # type: ignore[attr-defined]
        single = plan.n_columns == 1
        top_k = 1 if single else spec.output.top_k
        n_top = max(top_k, SUMMARY_ROWS)
        ex = executor.execute(plan, n_top, top_k, artifact, progress, cancel)
        wanted = wanted_metrics(spec)
        rank_by = spec.output.rank_by
        if ex.table is not None:
            table = rank_sorted(ex.table, rank_by)
        else:
            table = ex.top.reset_index(drop=True)
            artifacts.write_manifest(artifact or "", rank_by, list(ex.top.columns), ex.pieces, ex.n_rows)
        table.insert(0, "rank", np.arange(1, len(table) + 1))
        backends = sorted({str(r["backend"]) for r in ex.ran_on if r["stage"] == "partition"})
        info = {
            "mode": plan.mode,
            "strategy": plan.strategy.name,
            "strategy_source": (source_info(spec.strategy) if is_expression(spec.strategy) else
                                {"plugin": plan.strategy.plugin, "distribution": plan.strategy.distribution,
                                 "version": plan.strategy.version}),
            "backend": backends[0] if len(backends) == 1 else ",".join(backends),
            "n_bars": ex.calendar.n_bars,
            "n_symbols": plan.n_symbols,
            "n_combinations": plan.n_combinations,
            "n_columns": plan.n_columns,
            "chunks": ex.chunks,
            "partitions": len(plan.partitions),
            "periods_per_year": ex.calendar.periods_per_year,
            "annualisation": ex.calendar.annualisation,
            "start": ex.calendar.index[0].isoformat(),
            "end": ex.calendar.index[-1].isoformat(),
            "rank_by": rank_by,
            "plan_hash": plan.hash,
            "ran_on": ex.ran_on,
            "stage_seconds": {k: round(v, 6) for k, v in ex.seconds.items()},
            "elapsed_s": round(time.perf_counter() - t0, 6),
        }
        without = (loader.symbols_without_data(plan.data.symbols) if isinstance(loader, PanelLoader)
                   else self.data_service.symbols_without_data(plan.data))
        info["data"] = data_info(plan.data, ex.calendar, without)
        if plan.mode == MODE_PORTFOLIO:
            info["portfolio"] = portfolio_info(spec, resolve_strategy(spec, self.registry), ex.notes)
        # every info has these keys (null when the run has none): the API's documents list every field
        info["overfitting"] = ex.overfitting
        info["walk_forward"] = None
        if spec.validation is not None:  # walk-forward folds (core/walkforward.py)
            if progress:
                progress(0.95, "walk-forward")
            t_wf = time.perf_counter()
            info["walk_forward"] = self._walk_forward(plan, spec, ex.calendar, executor, loader, cancel)
            info["stage_seconds"]["walk_forward"] = round(time.perf_counter() - t_wf, 6)
            info["elapsed_s"] = round(time.perf_counter() - t0, 6)
        if progress:
            progress(1.0, "done")
        return BacktestResult(spec, table, ex.details, info, list(plan.grid), wanted, artifact=artifact)

    def _walk_forward(self, plan: RunPlan, spec: BacktestSpec, calendar: Any, executor: Any,
                      loader: BarsLoader | None, cancel: CancelFn | None) -> dict[str, Any]:
        """The walk-forward document (core/walkforward.py), its stages run by ``executor``."""
        from .loaders import StoreLoader, benchmark_returns
        from .walkforward import run_walk_forward

        if not hasattr(executor, "run_tasks"):  # an executor without task support: in this process
            executor = LocalExecutor(self.stage_context(), loader)

        def run_tasks(fn: Any, args_list: list[Any]) -> list[Any]:
            return executor.run_tasks(fn, args_list, cancel)

        def bench() -> np.ndarray | None:
            b = plan.data.benchmark
            if b is None:
                return None
            src = loader if loader is not None else StoreLoader(plan.data)
            return benchmark_returns(src.series([b])[0], calendar.ns)

        return run_walk_forward(plan, spec, calendar, run_tasks, bench)

    def column_details(self, spec: Any, column: int, *, start: str | None = None, end: str | None = None,
                       top_columns: Sequence[int] = (), data: Any = None) -> dict[str, Any]:
        """One column's details — equity curve, trades, record-mode metrics — computed on demand.

        The same stages as a run's top-k details (the calendar of every symbol of the run, then
        `details_stage` for the column's symbol). ``top_columns``: the run's top-k columns in rank
        order; a column among them is simulated in the same batch as in the run (its symbol's
        top-k columns), so its numbers equal the run's to the last bit. ``start``/``end`` pin the
        date range to the run's first and last bar (a finished job's ``info.start``/``info.end``),
        so bars stored after the run do not change the answer. Equity curve and trades are always
        included. NotFoundError naming ``column`` when the run has no such column."""
        doc = BacktestSpec.from_dict(spec).to_dict()
        doc["start"] = start or doc.get("start")
        doc["end"] = end or doc.get("end")
        doc["output"] = {**doc["output"], "equity_curves": True, "trades": True}
        plan, loader = self.plan(doc, data)
        n = plan.n_columns
        if isinstance(column, bool) or not 0 <= column < n:
            raise NotFoundError(f"no column {column}: the run has {n} columns (0 to {n - 1})",
                                {"column": column, "n_columns": n})
        tasks = [plan.task(p) for p in plan.partitions]
        calendar = run_calendar(plan, union_calendars(*[calendar_stage(t, loader)
                                                        for t in calendar_tasks(plan, tasks)]))
        k = plan.n_combinations
        s, combo = divmod(int(column), k)
        batch = [c % k for c in top_columns if c // k == s and 0 <= c < n]  # as `executors._winners` groups them
        if plan.mode == MODE_PORTFOLIO:  # a column is a combination; the winners run as one batch
            s, combo = 0, int(column)
            batch = [int(c) for c in top_columns if 0 <= c < n]
        if combo not in batch:
            batch = [combo]
        found, _ = details_stage(plan.task(Partition(-1, s, s + 1)), calendar, batch, self.stage_context(), loader)
        return next(d for d in found if d["column"] == column)

    # -- compute primitives (what the stages call) ----------------------------------------
    def sweep(self, spec: BacktestSpec, strategy: Strategy, grid: Mapping[str, np.ndarray], panel: MarketPanel,
              ppy: float, wanted: Sequence[str], benchmark: np.ndarray | None,
              cancel: CancelFn | None = None, n_blocks: int = 0) -> tuple[dict[str, np.ndarray], int]:
        """Sweep-mode metrics of every (symbol, combination) column of ``panel`` (symbol-major),
        in chunks within this backend's memory budget; host arrays out, and the chunk count.
        ``wanted``: the metrics asked for — the quantile metrics come from the kernel's tail heaps
        (O(columns × 5 % of bars)), alpha/beta from the (T, C) return series, kept only for them
        and only with a benchmark. ``n_blocks`` > 0: also the columns' per-block sums, (C, B,
        N_BLOCK_ACC), under `BLOCKS_KEY`."""
        be, xp = self.backend, self.backend.xp
        n_bars, n_sym, n_combo = panel.n_bars, panel.n_symbols, grid_size(grid)
        need_tails, need_series = M.series_needs(wanted, benchmark is not None)
        n_tail = M.tail_size(n_bars) if need_tails else 0
        # a strategy may say it needs more per cell (an expression strategy with many gathered arrays)
        cell = max(BYTES_PER_CELL, int(getattr(strategy, "bytes_per_cell", 0) or 0))
        cell += BYTES_PER_CELL_SERIES if need_series else 0
        cell += -(-16 * n_tail // max(n_bars, 1))  # the two tail heaps of a column, per bar
        chunks = plan_chunks(n_sym, n_combo, n_bars, be.memory_budget, cell)
        opts = RunOptions.from_spec(spec)
        use_fused = self.fused_signals and getattr(strategy, "fused", None) is not None
        iopts = be.asarray(opts.with_flags(need_series, False, n_blocks, n_tail, use_fused))
        fopts = be.asarray(opts.fopts)
        dummies = self._dummies()
        blocks_all = np.zeros((n_sym * n_combo, n_blocks, L.N_BLOCK_ACC)) if n_blocks > 0 else None
        bench = be.asarray(benchmark) if (need_series and benchmark is not None) else None
        bars_host = panel.bars()
        out: dict[str, np.ndarray] = {}
        cache: dict[Any, Any] = {}
        block = None
        for chunk in chunks:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            if (chunk.sym_start, chunk.sym_stop) != block:  # indicators are shared within a symbol block
                cache, block = {}, (chunk.sym_start, chunk.sym_stop)
            bars = {f: be.kernel_layout(be.asarray(a[:, chunk.sym_start:chunk.sym_stop])) for f, a in bars_host.items()}
            params = {name: v[chunk.combo_start:chunk.combo_stop] for name, v in grid.items()}
            n_s = chunk.sym_stop - chunk.sym_start
            n_k = chunk.combo_stop - chunk.combo_start
            fused = None
            if use_fused:
                fz = self._fused(strategy, bars, params, cache)
                idx, w = column_operands(fz, n_s, spec.execution.direction)
                fused = (fz.bank, be.asarray(idx), be.asarray(w))
                off = xp.zeros((1, 1), dtype=bool)
                sig = Signals(off, off, off, off)
            else:
                sig = self._signals(strategy, bars, params, cache, spec)
            sym = xp.repeat(xp.arange(n_s, dtype=xp.int64), n_k)
            ret_buf = xp.empty((n_bars, n_s * n_k), dtype=xp.float64) if need_series else dummies[0]
            blk = xp.empty((n_s * n_k, n_blocks, L.N_BLOCK_ACC), dtype=xp.float64) if n_blocks > 0 else None
            tails = xp.empty((n_s * n_k, 2, n_tail), dtype=xp.float64) if n_tail > 0 else None
            acc = be.simulate(bars["open"], bars["high"], bars["low"], bars["close"], sym,
                              sig.entries, sig.exits, sig.short_entries, sig.short_exits,
                              fopts, iopts, ret_buf, dummies[1], dummies[2], dummies[3],
                              blocks_out=blk, n_blocks=n_blocks, tails_out=tails, n_tail=n_tail, fused=fused)
            del sig, fused
            vals = M.metrics_from_accumulators(acc, spec.execution.init_cash, ppy, spec.metrics.risk_free, xp=xp)
            if n_tail > 0:
                vals.update(M.tail_metrics(tails, n_bars, xp=xp))
            if need_series:
                vals.update(M.benchmark_metrics(ret_buf, ppy, spec.metrics.risk_free, bench, xp=xp))
            # column of (symbol s, combo k) within the panel is s * K + k
            s_idx = np.arange(chunk.sym_start, chunk.sym_stop)
            k_idx = np.arange(chunk.combo_start, chunk.combo_stop)
            cols = (s_idx[:, None] * n_combo + k_idx[None, :]).reshape(-1)
            for name, v in vals.items():
                if name not in out:
                    out[name] = np.full(n_sym * n_combo, np.nan)
                out[name][cols] = be.to_host(v)
            if blocks_all is not None:
                blocks_all[cols] = be.to_host(blk)
        be.synchronize()
        if blocks_all is not None:
            out[BLOCKS_KEY] = blocks_all
        return out, len(chunks)

    def _dummies(self) -> tuple[Any, Any, Any, Any]:
        xp = self.backend.xp
        return (xp.zeros((1, 1), dtype=xp.float64), xp.zeros((1, 1), dtype=xp.float64),
                xp.zeros((1, 1, 1), dtype=xp.float64), xp.zeros(1, dtype=xp.int64))

    def _fused(self, strategy: Strategy, bars: Mapping[str, Any], params: Mapping[str, np.ndarray],
               cache: dict[Any, Any]) -> FusedSignals:
        """The strategy's fused form for one block (core/fused.py); a failure is the strategy's."""
        ctx = SignalContext(self.backend.xp, bars, params, cache, order="F" if self.backend.name == "cpu" else "C")
        fz = call_strategy(strategy.name, strategy.fused, ctx)
        if not isinstance(fz, FusedSignals):
            raise StrategyError(f"strategy {strategy.name!r}: fused returned {type(fz).__name__}, expected "
                                "FusedSignals", {"strategy": strategy.name})
        return fz

    def _signals(self, strategy: Strategy, bars: Mapping[str, Any], params: Mapping[str, np.ndarray],
                 cache: dict[Any, Any], spec: BacktestSpec) -> Signals:
        xp = self.backend.xp
        ctx = SignalContext(xp, bars, params, cache, order="F" if self.backend.name == "cpu" else "C")
        sig = call_strategy(strategy.name, strategy.signals, ctx)
        if not isinstance(sig, Signals):
            raise StrategyError(f"strategy {strategy.name!r} returned {type(sig).__name__}, expected Signals",
                                {"strategy": strategy.name})
        shape = (ctx.n_bars, ctx.n_columns)

        def check(arr: Any, name: str) -> Any:
            if arr is not None and not (hasattr(arr, "shape") and hasattr(arr, "dtype")):
                raise StrategyError(f"strategy {strategy.name!r} returned {name} of type {type(arr).__name__}, "
                                    f"expected a boolean array", {"strategy": strategy.name})
            return self.backend.kernel_layout(_bool_signal(xp, arr, shape, name, strategy.name))

        entries, exits = check(sig.entries, "entries"), check(sig.exits, "exits")
        if spec.execution.direction == "long":
            dummy = xp.zeros((1, 1), dtype=bool)
            return Signals(entries, exits, dummy, dummy)
        return Signals(entries, exits, check(sig.short_entries, "short_entries"),
                       check(sig.short_exits, "short_exits"))

    def details(self, spec: BacktestSpec, strategy: Strategy, grid: Mapping[str, np.ndarray], panel: MarketPanel,
                s: int, combos: Sequence[int], ppy: float, benchmark: np.ndarray | None,
                wanted: Sequence[str], sym_offset: int = 0) -> list[dict[str, Any]]:
        """Re-simulate combinations ``combos`` of panel symbol ``s`` in record mode: equity
        curves, trades, record-mode metrics (global column = (sym_offset + s) × K + combo)."""
        if not combos:
            return []
        be, xp = self.backend, self.backend.xp
        k = grid_size(grid)
        opts = RunOptions.from_spec(spec)
        iopts = be.asarray(opts.with_flags(True, True))
        fopts = be.asarray(opts.fopts)
        n_bars = panel.n_bars
        times = iso_times(panel.index) if spec.output.equity_curves else []
        bars = {f: be.kernel_layout(be.asarray(a[:, s:s + 1])) for f, a in panel.bars().items()}
        params = {name: v[list(combos)] for name, v in grid.items()}
        sig = self._signals(strategy, bars, params, {}, spec)
        n = len(combos)
        ret = xp.empty((n_bars, n), dtype=xp.float64)
        eq = xp.empty((n_bars, n), dtype=xp.float64)
        trades = xp.zeros((n, n_bars + 1, L.N_TFIELDS), dtype=xp.float64)
        ntr = xp.zeros(n, dtype=xp.int64)
        sym = xp.zeros(n, dtype=xp.int64)
        be.simulate(bars["open"], bars["high"], bars["low"], bars["close"], sym,
                    sig.entries, sig.exits, sig.short_entries, sig.short_exits,
                    fopts, iopts, ret, eq, trades, ntr)
        vals = M.metrics_from_records(eq, trades, ntr, spec.execution.init_cash, ppy, spec.metrics.risk_free, xp=xp)
        vals.update(M.series_metrics(ret, ppy, spec.metrics.risk_free,
                                     be.asarray(benchmark) if benchmark is not None else None, xp=xp))
        eq_h, tr_h, nt_h = be.to_host(eq), be.to_host(trades), be.to_host(ntr)
        vals_h = {m: be.to_host(v) for m, v in vals.items()}
        out = []
        for j, combo in enumerate(combos):
            d: dict[str, Any] = {
                "column": (sym_offset + s) * k + combo,
                "symbol": panel.symbols[s],
                "params": {name: json_scalar(v[combo]) for name, v in grid.items()},
                "metrics": {m: json_scalar(vals_h[m][j]) for m in wanted if m in vals_h},
            }
            if spec.output.equity_curves:
                d["equity"] = {"time": times, "value": [float(x) for x in eq_h[:, j]]}
            if spec.output.trades:
                d["trades"] = trades_to_dicts(tr_h[j, : int(nt_h[j])], panel.index)
            out.append(d)
        return out


def iso_times(index: pd.DatetimeIndex) -> list[str]:
    """UTC timestamps as ISO strings (``2010-01-04T00:00:00+00:00``), vectorised."""
    naive = index.tz_convert("UTC").tz_localize(None).to_numpy(dtype="datetime64[s]")
    return np.char.add(np.datetime_as_string(naive, unit="s"), "+00:00").tolist()


def trades_to_dicts(records: np.ndarray, index: pd.DatetimeIndex) -> list[dict[str, Any]]:
    """Trade records (rows of N_TFIELDS floats) as JSON-able dicts with timestamps."""
    out = []
    for r in records:
        reason = L.EXIT_REASONS[int(r[L.T_EXIT_REASON])]
        out.append({
            "entry_time": index[int(r[L.T_ENTRY_IDX])].isoformat(),
            "exit_time": index[int(r[L.T_EXIT_IDX])].isoformat(),
            "direction": "long" if r[L.T_DIRECTION] > 0 else "short",
            "size": float(r[L.T_SIZE]),
            "entry_price": float(r[L.T_ENTRY_PRICE]),
            "exit_price": float(r[L.T_EXIT_PRICE]),
            "entry_fees": float(r[L.T_ENTRY_FEES]),
            "exit_fees": float(r[L.T_EXIT_FEES]),
            "pnl": float(r[L.T_PNL]),
            "return": float(r[L.T_RETURN]),
            "exit_reason": reason,
            "bars": int(r[L.T_EXIT_IDX] - r[L.T_ENTRY_IDX]),
            "status": "open" if reason == "open" else "closed",
        })
    return out
