"""The engine: spec + market data → plan → signals → simulate → metrics → ranked table + details.

`run_backtest(spec, data)` is the Python API. Work is a matrix of columns (symbol ×
parameter combination, symbol-major) over T bars, processed in chunks sized to the
backend's memory budget. Sweep mode keeps O(columns) running sums per column; the top-k
columns (or the single column of a single backtest) are re-simulated in record mode for their
equity curves and trades.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pluggy

from . import metrics as M
from .backend import Backend, select_backend
from .config import Settings
from .errors import GpuBacktestError, NotFoundError, SpecError
from .panel import MarketPanel, to_panel
from .simulate import layout as L
from .spec import BacktestSpec, expand_grid, grid_size
from .strategy import SignalContext, Signals, Strategy

# bytes per (bar, column) a chunk needs: 4 bool signals, ~2 gathered float64 indicators and
# boolean temporaries; plus 8 when the return series is kept for series metrics.
BYTES_PER_CELL = 40
BYTES_PER_CELL_SERIES = 8

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


class Cancelled(GpuBacktestError):
    """The caller asked the run to stop (checked between chunks)."""

    code = "cancelled"
    status = 409


class StrategyError(GpuBacktestError):
    """A strategy's ``signals`` returned something that is not boolean (T, C) arrays."""

    code = "strategy_error"
    status = 500


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


@dataclass
class ChunkTask:
    """One chunk as plain data (picklable, so a Dask worker can run it): host bars of a
    symbol block, the combinations' parameter values, and what the metrics need."""

    index: int
    spec: dict[str, Any]
    strategy: str
    bars: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    block: tuple[int, int]
    ppy: float
    need_series: bool
    benchmark: np.ndarray | None


ChunkMap = Callable[[Iterable[ChunkTask], "CancelFn | None"], Iterator[tuple[int, dict[str, np.ndarray]]]]


@dataclass
class RunOptions:
    """The spec's options as the kernel's float and int option arrays."""

    fopts: np.ndarray
    iopts: np.ndarray

    @classmethod
    def from_spec(cls, spec: BacktestSpec) -> RunOptions:
        f = np.zeros(L.N_FOPTS, dtype=np.float64)
        ex, co = spec.execution, spec.costs
        f[L.F_INIT_CASH] = ex.init_cash
        f[L.F_FEES] = co.fees
        f[L.F_FIXED_FEE] = co.fixed_fee
        f[L.F_SLIPPAGE] = co.slippage
        f[L.F_SIZE] = ex.size
        f[L.F_SL_STOP] = ex.sl_stop
        f[L.F_TP_STOP] = ex.tp_stop
        f[L.F_TSL_STOP] = ex.tsl_stop
        f[L.F_RISK_FREE] = spec.metrics.risk_free
        i = np.zeros(L.N_IOPTS, dtype=np.int64)
        i[L.I_FILL] = {"close": L.FILL_CLOSE, "next_open": L.FILL_NEXT_OPEN}[ex.fill]
        i[L.I_DIRECTION] = {"long": L.DIR_LONG, "short": L.DIR_SHORT, "both": L.DIR_BOTH}[ex.direction]
        i[L.I_SIZE_TYPE] = {"percent": L.SIZE_PERCENT, "value": L.SIZE_VALUE, "units": L.SIZE_UNITS}[ex.size_type]
        i[L.I_FRACTIONAL] = 1 if ex.fractional else 0
        return cls(f, i)

    def with_flags(self, want_returns: bool, record: bool) -> np.ndarray:
        i = self.iopts.copy()
        i[L.I_WANT_RETURNS] = int(want_returns)
        i[L.I_RECORD] = int(record)
        return i


@dataclass
class BacktestResult:
    """The outcome: ``table`` (one row per column, ranked), ``details`` (top-k), ``info``."""

    spec: BacktestSpec
    table: pd.DataFrame
    details: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    param_names: list[str] = field(default_factory=list)
    metric_names: list[str] = field(default_factory=list)

    def rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Ranked result rows as ``{"rank", "column", "symbol", "params", "metrics"}`` dicts."""
        df = self.table if limit is None else self.table.head(limit)
        out = []
        for rec in df.to_dict("records"):
            out.append({
                "rank": int(rec["rank"]),
                "column": int(rec["column"]),
                "symbol": rec["symbol"],
                "params": {p: _json_scalar(rec[p]) for p in self.param_names},
                "metrics": {m: _json_scalar(rec[m]) for m in self.metric_names},
            })
        return out

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        """The JSON-able result document (non-finite numbers become null)."""
        return {"info": self.info, "results": self.rows(limit), "details": self.details}


def _json_scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def resolve_strategy(spec: BacktestSpec, pm: pluggy.PluginManager | None = None) -> Strategy:
    """The spec's strategy; SpecError on ``strategy`` naming the known ones otherwise."""
    from ..plugins.manager import get_strategy

    try:
        return get_strategy(spec.strategy, pm)
    except NotFoundError as exc:
        raise SpecError("strategy", exc.message) from None


def _bool_signal(xp: Any, arr: Any, shape: tuple[int, int], name: str, strategy: str) -> Any:
    if arr is None:
        return xp.zeros(shape, dtype=bool)
    if tuple(arr.shape) != shape:
        raise StrategyError(f"strategy {strategy!r} returned {name} of shape {tuple(arr.shape)}, expected {shape}")
    if arr.dtype != bool:
        arr = arr.astype(bool)
    return arr


class Engine:
    """Runs specs on one backend; `run` is the whole pipeline."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None,
                 pm: pluggy.PluginManager | None = None, data_service: Any = None) -> None:
        self.settings = settings or Settings.from_env()
        self.backend = backend or select_backend(self.settings)
        self.pm = pm
        self._data_service = data_service

    @property
    def data_service(self) -> Any:
        """The market-data service specs without explicit data load from (created on first use)."""
        if self._data_service is None:
            from .dataservice import MarketDataService

            self._data_service = MarketDataService(self.settings, self.pm)
        return self._data_service

    def prepare(self, spec: Any, data: Any = None
                ) -> tuple[BacktestSpec, Strategy, dict[str, np.ndarray], MarketPanel, MarketPanel]:
        """Validate the spec, build the grid and load the panel; every user error raised here.

        Returns the spec, strategy, grid, the whole loaded panel (benchmark included) and the
        panel the run trades (the spec's symbols and dates). ``data`` None: the spec's
        ``source`` (default synthetic) through the data store."""
        spec = BacktestSpec.from_dict(spec)
        strategy = resolve_strategy(spec, self.pm)
        grid = expand_grid(strategy, spec.params, self.settings.max_grid)
        if data is None:
            panel, symbols, bench = self.data_service.panel_for(spec)
            if bench != spec.metrics.benchmark:  # the source's spelling of the benchmark symbol
                spec = dataclasses.replace(spec, metrics=dataclasses.replace(spec.metrics, benchmark=bench))
        else:
            panel = to_panel(data)
            symbols = list(spec.symbols) if spec.symbols is not None else None
        selected = panel.select(symbols, spec.start, spec.end)
        if selected.n_bars == 0:
            raise SpecError("start", "no bars in the requested date range")
        n_cols = selected.n_symbols * grid_size(grid)
        if n_cols > self.settings.max_columns:
            raise SpecError("params", f"{n_cols} columns (symbols × combinations) exceed the limit "
                                      f"{self.settings.max_columns} (GPU_BACKTEST_MAX_COLUMNS)")
        if spec.metrics.benchmark is not None and spec.metrics.benchmark not in panel.symbols:
            raise SpecError("metrics.benchmark", f"no data for benchmark symbol {spec.metrics.benchmark!r}")
        return spec, strategy, grid, panel, selected

    def run(self, spec: Any, data: Any = None, progress: ProgressFn | None = None,
            cancel: CancelFn | None = None, chunk_map: ChunkMap | None = None) -> BacktestResult:
        """Run a spec on data (any form `to_panel` accepts; None: the spec's data source).

        ``chunk_map(tasks, cancel)`` runs the sweep's chunk tasks and yields ``(index, metrics)``
        in any order: `map_chunks` (default) runs them here; the service passes a Dask map."""
        t0 = time.perf_counter()
        spec, strategy, grid, full_panel, panel = self.prepare(spec, data)
        ppy = spec.metrics.periods_per_year or panel.periods_per_year()
        wanted = list(spec.output.metrics or M.METRICS)
        need_series = any(m in M.SERIES_METRICS for m in wanted)
        benchmark = self._benchmark(spec, full_panel, panel)
        sweep = self._sweep(spec, strategy, grid, panel, ppy, need_series, benchmark, progress, cancel, chunk_map)
        k = grid_size(grid)
        table = self._table(panel, grid, sweep, wanted, spec)
        top = table.head(spec.output.top_k if panel.n_symbols * k > 1 else 1)
        details = self._details(spec, strategy, grid, panel, top, ppy, benchmark, wanted)
        self.backend.synchronize()
        info = {
            "strategy": strategy.name,
            "backend": self.backend.name,
            "n_bars": panel.n_bars,
            "n_symbols": panel.n_symbols,
            "n_combinations": k,
            "n_columns": panel.n_symbols * k,
            "chunks": sweep["chunks"],
            "periods_per_year": ppy,
            "start": panel.index[0].isoformat(),
            "end": panel.index[-1].isoformat(),
            "rank_by": spec.output.rank_by,
            "elapsed_s": round(time.perf_counter() - t0, 6),
        }
        if progress:
            progress(1.0, "done")
        return BacktestResult(spec, table, details, info, list(grid), wanted)

    # -- pieces ---------------------------------------------------------------------------
    def _benchmark(self, spec: BacktestSpec, full: MarketPanel, panel: MarketPanel) -> np.ndarray | None:
        if spec.metrics.benchmark is None:
            return None
        b = full.select([spec.metrics.benchmark])
        close = pd.Series(b.close[:, 0], index=b.index).reindex(panel.index)
        r = close.pct_change(fill_method=None).to_numpy(dtype=np.float64, copy=True)
        r[~np.isfinite(r)] = 0.0
        return r

    def _sweep(self, spec: BacktestSpec, strategy: Strategy, grid: Mapping[str, np.ndarray], panel: MarketPanel,
               ppy: float, need_series: bool, benchmark: np.ndarray | None,
               progress: ProgressFn | None, cancel: CancelFn | None,
               chunk_map: ChunkMap | None = None) -> dict[str, Any]:
        be = self.backend
        n_bars, n_sym, n_combo = panel.n_bars, panel.n_symbols, grid_size(grid)
        cell = BYTES_PER_CELL + (BYTES_PER_CELL_SERIES if need_series else 0)
        chunks = plan_chunks(n_sym, n_combo, n_bars, be.memory_budget, cell)
        bars_host = panel.bars()
        spec_doc = spec.to_dict()

        def tasks() -> Iterator[ChunkTask]:
            for i, chunk in enumerate(chunks):
                yield ChunkTask(
                    index=i, spec=spec_doc, strategy=strategy.name,
                    bars={f: a[:, chunk.sym_start:chunk.sym_stop] for f, a in bars_host.items()},
                    params={name: v[chunk.combo_start:chunk.combo_stop] for name, v in grid.items()},
                    block=(chunk.sym_start, chunk.sym_stop), ppy=ppy, need_series=need_series,
                    benchmark=benchmark)

        out: dict[str, np.ndarray] = {}
        done = 0
        def runner(tasks: Iterable[ChunkTask], cancel: CancelFn | None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
            return self.map_chunks(tasks, cancel, strategy)

        if chunk_map is not None:
            runner = chunk_map
        for i, vals in runner(tasks(), cancel):
            chunk = chunks[i]
            # global column index of (symbol s, combo k) is s * K + k
            s_idx = np.arange(chunk.sym_start, chunk.sym_stop)
            k_idx = np.arange(chunk.combo_start, chunk.combo_stop)
            cols = (s_idx[:, None] * n_combo + k_idx[None, :]).reshape(-1)
            for name, v in vals.items():
                if name not in out:
                    out[name] = np.full(n_sym * n_combo, np.nan)
                out[name][cols] = v
            done += chunk.n_columns
            if progress:
                progress(0.9 * done / (n_sym * n_combo), "simulating")
        return {"metrics": out, "chunks": len(chunks)}

    def map_chunks(self, tasks: Iterable[ChunkTask], cancel: CancelFn | None = None,
                   strategy: Strategy | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Run chunk tasks here, one after the other (indicators shared within a symbol block;
        ``strategy`` saves resolving the tasks' strategy by name for every chunk)."""
        cache: dict[Any, Any] = {}
        block = None
        for task in tasks:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            if task.block != block:
                cache, block = {}, task.block
            yield task.index, self.run_chunk(task, cache, strategy)

    def run_chunk(self, task: ChunkTask, cache: dict[Any, Any] | None = None,
                  strategy: Strategy | None = None) -> dict[str, np.ndarray]:
        """Signals → simulate (sweep mode) → metrics for one chunk; host arrays out."""
        be, xp = self.backend, self.backend.xp
        spec = BacktestSpec.from_dict(task.spec)
        if strategy is None:
            strategy = resolve_strategy(spec, self.pm)
        opts = RunOptions.from_spec(spec)
        iopts = be.asarray(opts.with_flags(task.need_series, False))
        fopts = be.asarray(opts.fopts)
        dummies = self._dummies()
        bars = {f: be.kernel_layout(be.asarray(a)) for f, a in task.bars.items()}
        sig = self._signals(strategy, bars, task.params, {} if cache is None else cache, spec)
        n_bars, n_s = bars["close"].shape
        n_k = grid_size(task.params) if task.params else 1
        sym = xp.repeat(xp.arange(n_s, dtype=xp.int64), n_k)
        ret_buf = xp.empty((n_bars, n_s * n_k), dtype=xp.float64) if task.need_series else dummies[0]
        acc = be.simulate(bars["open"], bars["high"], bars["low"], bars["close"], sym,
                          sig.entries, sig.exits, sig.short_entries, sig.short_exits,
                          fopts, iopts, ret_buf, dummies[1], dummies[2], dummies[3])
        vals = M.metrics_from_accumulators(acc, spec.execution.init_cash, task.ppy, spec.metrics.risk_free, xp=xp)
        if task.need_series:
            bench = be.asarray(task.benchmark) if task.benchmark is not None else None
            vals.update(M.series_metrics(ret_buf, task.ppy, spec.metrics.risk_free, bench, xp=xp))
        return {name: be.to_host(v) for name, v in vals.items()}

    def _dummies(self) -> tuple[Any, Any, Any, Any]:
        xp = self.backend.xp
        return (xp.zeros((1, 1), dtype=xp.float64), xp.zeros((1, 1), dtype=xp.float64),
                xp.zeros((1, 1, 1), dtype=xp.float64), xp.zeros(1, dtype=xp.int64))

    def _signals(self, strategy: Strategy, bars: Mapping[str, Any], params: Mapping[str, np.ndarray],
                 cache: dict[Any, Any], spec: BacktestSpec) -> Signals:
        xp = self.backend.xp
        ctx = SignalContext(xp, bars, params, cache, order="F" if self.backend.name == "cpu" else "C")
        sig = strategy.signals(ctx)
        shape = (ctx.n_bars, ctx.n_columns)

        def check(arr: Any, name: str) -> Any:
            return self.backend.kernel_layout(_bool_signal(xp, arr, shape, name, strategy.name))

        entries, exits = check(sig.entries, "entries"), check(sig.exits, "exits")
        if spec.execution.direction == "long":
            dummy = xp.zeros((1, 1), dtype=bool)
            return Signals(entries, exits, dummy, dummy)
        return Signals(entries, exits, check(sig.short_entries, "short_entries"),
                       check(sig.short_exits, "short_exits"))

    def _table(self, panel: MarketPanel, grid: Mapping[str, np.ndarray], sweep: dict[str, Any],
               wanted: Sequence[str], spec: BacktestSpec) -> pd.DataFrame:
        k = grid_size(grid)
        n = panel.n_symbols * k
        cols: dict[str, Any] = {"column": np.arange(n),
                                "symbol": np.repeat(np.array(panel.symbols, dtype=object), k)}
        for name, values in grid.items():
            cols[name] = np.tile(values, panel.n_symbols)
        for m in wanted:
            cols[m] = sweep["metrics"].get(m, np.full(n, np.nan))
        df = pd.DataFrame(cols)
        key = spec.output.rank_by
        direction = M.metric_direction(key)
        score = df[key].to_numpy(dtype=np.float64) * direction
        score = np.where(np.isnan(score), -np.inf, score)
        order = np.lexsort((df["column"].to_numpy(), -score))
        df = df.iloc[order].reset_index(drop=True)
        df.insert(0, "rank", np.arange(1, n + 1))
        return df

    def _details(self, spec: BacktestSpec, strategy: Strategy, grid: Mapping[str, np.ndarray],
                 panel: MarketPanel, top: pd.DataFrame, ppy: float, benchmark: np.ndarray | None,
                 wanted: Sequence[str]) -> list[dict[str, Any]]:
        """Re-simulate the top columns in record mode: equity curves, trades, record-mode metrics."""
        if top.empty:
            return []
        be, xp = self.backend, self.backend.xp
        k = grid_size(grid)
        opts = RunOptions.from_spec(spec)
        iopts = be.asarray(opts.with_flags(True, True))
        fopts = be.asarray(opts.fopts)
        n_bars = panel.n_bars
        times = iso_times(panel.index) if spec.output.equity_curves else []
        details: dict[int, dict[str, Any]] = {}
        order = [int(c) for c in top["column"]]
        by_symbol: dict[int, list[int]] = {}
        for col in order:
            by_symbol.setdefault(col // k, []).append(col % k)
        for s, combos in by_symbol.items():
            bars = {f: be.kernel_layout(be.asarray(a[:, s:s + 1])) for f, a in panel.bars().items()}
            params = {name: v[combos] for name, v in grid.items()}
            sig = self._signals(strategy, bars, params, {}, spec)
            n = len(combos)
            max_trades = n_bars + 1
            ret = xp.empty((n_bars, n), dtype=xp.float64)
            eq = xp.empty((n_bars, n), dtype=xp.float64)
            trades = xp.zeros((n, max_trades, L.N_TFIELDS), dtype=xp.float64)
            ntr = xp.zeros(n, dtype=xp.int64)
            sym = xp.zeros(n, dtype=xp.int64)
            be.simulate(bars["open"], bars["high"], bars["low"], bars["close"], sym,
                        sig.entries, sig.exits, sig.short_entries, sig.short_exits,
                        fopts, iopts, ret, eq, trades, ntr)
            vals = M.metrics_from_records(eq, trades, ntr, spec.execution.init_cash, ppy,
                                          spec.metrics.risk_free, xp=xp)
            vals.update(M.series_metrics(ret, ppy, spec.metrics.risk_free,
                                         be.asarray(benchmark) if benchmark is not None else None, xp=xp))
            eq_h, tr_h, nt_h = be.to_host(eq), be.to_host(trades), be.to_host(ntr)
            vals_h = {m: be.to_host(v) for m, v in vals.items()}
            for j, combo in enumerate(combos):
                col = s * k + combo
                d: dict[str, Any] = {
                    "column": col,
                    "symbol": panel.symbols[s],
                    "params": {name: _json_scalar(v[combo]) for name, v in grid.items()},
                    "metrics": {m: _json_scalar(vals_h[m][j]) for m in wanted if m in vals_h},
                }
                if spec.output.equity_curves:
                    d["equity"] = {"time": times, "value": [float(x) for x in eq_h[:, j]]}
                if spec.output.trades:
                    d["trades"] = trades_to_dicts(tr_h[j, : int(nt_h[j])], panel.index)
                details[col] = d
        return [details[c] for c in order]


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


def run_backtest(spec: Any, data: Any = None, *, settings: Settings | None = None, backend: Backend | str | None = None,
                 progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                 pm: pluggy.PluginManager | None = None) -> BacktestResult:
    """Run one backtest or a parameter sweep.

    ``spec``: a dict (the POST /backtest document) or a `BacktestSpec`. ``data``: a long
    DataFrame (timestamp/date, symbol, open, high, low, close, volume), a dict of per-symbol
    DataFrames, a `MarketPanel`, CSV/Parquet path(s), or None: the spec's ``source`` (default
    ``synthetic``) through the market-data store, fetching what is missing. Raises `SpecError` / `DataError`
    (subclasses of `GpuBacktestError`) naming the bad field or file.
    """
    settings = settings or Settings.from_env()
    if isinstance(backend, str):
        backend = select_backend(settings, backend)
    return Engine(settings, backend, pm).run(spec, data, progress=progress, cancel=cancel)
