"""Portfolio mode's compute primitives: scores → target weights → portfolio kernel → metrics.

One column is one parameter combination's whole portfolio over the run's universe
(docs/semantics.md, "Portfolio mode"). `portfolio_sweep` computes the metrics of a block of
combinations in chunks of combinations sized to the backend's memory budget;
`portfolio_details` re-simulates a few combinations in record mode (equity curve, orders,
round-trip trades, holdings at each rebalance). The stages (core/stages.py) call both; the
cluster partitions a portfolio run by combinations, never by symbols (every task needs the
whole universe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import metrics as M
from . import portfolio_rules as rules
from .errors import SpecError
from .jsonsafe import json_scalar
from .panel import MarketPanel
from .portfolio_strategy import PortfolioContext, PortfolioStrategy, Scores, TargetWeights
from .simulate import portfolio_layout as P
from .simulate.portfolio_options import PortfolioOptions
from .simulate.portfolio_trades import final_last_px, position_trades
from .spec import BacktestSpec, Portfolio

# bytes per (rebalance row, symbol, combination) a chunk needs: scores, weights, ranks (int64 ×2)
# and boolean temporaries of the selection; per (bar, combination): the equity curve and returns.
BYTES_PER_ROW_CELL = 48
BYTES_PER_BAR_COLUMN = 24
NEEDS_N = ("top_n", "bottom_n", "long_short")


@dataclass(frozen=True)
class Schedule:
    """The rebalance bars: ``rows`` (host int64 ``(R,)`` bar indices) and ``map`` (``(T,)``: the
    row of each bar, −1 when the bar does not rebalance)."""

    rows: np.ndarray
    map: np.ndarray

    @classmethod
    def of(cls, index_ns: np.ndarray, rule: str | int) -> Schedule:
        flags = rules.rebalance_flags(np.asarray(index_ns, dtype=np.int64), rule, len(index_ns))
        rows = np.flatnonzero(flags).astype(np.int64)
        mapping = np.full(len(index_ns), -1, dtype=np.int64)
        mapping[rows] = np.arange(len(rows), dtype=np.int64)
        return cls(rows, mapping)


_BARS_PER_PERIOD_DAILY = {"1d": 1, "1w": 5, "1m": 21, "1q": 63}  # trading days per rebalance period


def rebalance_rows_hint(rule: str | int, frequency: str, n_bars: int) -> int:
    """About how many rebalance rows ``n_bars`` bars give (what a combination's weights cost in
    memory: rows × symbols), for sizing partitions before the calendar is known; rounded up,
    and exact for every-N-bars rules. Calendar rules on non-daily bars count every bar (an
    upper bound)."""
    n_bars = max(1, int(n_bars))
    if isinstance(rule, int):
        per = rule
    else:
        per = _BARS_PER_PERIOD_DAILY.get(rule, 1) if frequency == "1d" else 1
    return max(1, -(-n_bars // max(1, per)))


def selection_of(spec: BacktestSpec, strategy: PortfolioStrategy) -> tuple[str, str]:
    """The (select, weighting) rules a run uses: the spec's, else the strategy's."""
    p = spec.portfolio or Portfolio()
    return p.select or strategy.select, p.weighting or strategy.weighting


def check_portfolio_spec(spec: BacktestSpec, strategy: PortfolioStrategy) -> None:
    """SpecErrors that need the strategy: a selection that needs ``n`` from a strategy without one."""
    select, _ = selection_of(spec, strategy)
    if select in NEEDS_N and not any(p.name in ("top_n", "n") for p in strategy.params):
        raise SpecError("portfolio.select", f"{select} needs a number of names, and strategy {strategy.name!r} "
                                            f"has no top_n or n parameter; use all or quantile")
    ex = spec.execution
    if ex.tsl_stop:
        raise SpecError("execution.tsl_stop", "trailing stops are not available in portfolio mode")
    if ex.size_type != "percent" or ex.size != 1.0:
        raise SpecError("execution.size", "portfolio mode sizes orders from target weights; "
                                          "leave size and size_type at their defaults")
    if ex.direction == "short":
        raise SpecError("execution.direction", "portfolio mode takes long or both (both: negative "
                                               "target weights may go short)")


def portfolio_info(spec: BacktestSpec, strategy: PortfolioStrategy, notes: Mapping[str, Any]) -> dict[str, Any]:
    """A portfolio run's ``info.portfolio``: the rules it ran with and what the data said
    (``delisted``: series the source marks as ended; ``stopped_early``: data that stops before
    the run's last bar without a mark, held and marked at its last price)."""
    p = spec.portfolio or Portfolio()
    select, weighting = selection_of(spec, strategy)
    return {"rebalance": p.rebalance, "select": select, "weighting": weighting,
            "shorts": kernel_options(spec, strategy).shorts,
            "delisted": list(notes.get("delisted", [])), "stopped_early": list(notes.get("stopped_early", []))}


def kernel_options(spec: BacktestSpec, strategy: PortfolioStrategy) -> PortfolioOptions:
    """The kernel's named options for this spec."""
    select, _ = selection_of(spec, strategy)
    p, ex, co = spec.portfolio or Portfolio(), spec.execution, spec.costs
    return PortfolioOptions(init_cash=ex.init_cash, fees=co.fees, fixed_fee=co.fixed_fee, slippage=co.slippage,
                            min_trade=p.min_trade, fill=ex.fill, fractional=ex.fractional,
                            shorts=select == "long_short" or ex.direction == "both",
                            sl_stop=ex.sl_stop, tp_stop=ex.tp_stop)


def target_weights(xp: Any, strategy: PortfolioStrategy, spec: BacktestSpec, ctx: PortfolioContext) -> Any:
    """The block's target weights ``(R, S, K)`` (device array)."""
    from .engine import StrategyError, call_strategy

    out = call_strategy(strategy.name, strategy.weights, ctx)
    shape = (ctx.n_rows, ctx.n_symbols, ctx.n_combos)
    if isinstance(out, TargetWeights):
        w = xp.asarray(out.values, dtype=xp.float64)
        if tuple(w.shape) != shape:
            raise StrategyError(f"strategy {strategy.name!r} returned weights of shape {tuple(w.shape)}, "
                                f"expected {shape}", {"strategy": strategy.name})
        return w
    if not isinstance(out, Scores):
        raise StrategyError(f"strategy {strategy.name!r} returned {type(out).__name__}, expected Scores or "
                            f"TargetWeights", {"strategy": strategy.name})
    scores = xp.asarray(out.values, dtype=xp.float64)
    if tuple(scores.shape) != shape:
        raise StrategyError(f"strategy {strategy.name!r} returned scores of shape {tuple(scores.shape)}, "
                            f"expected {shape}", {"strategy": strategy.name})
    p = spec.portfolio or Portfolio()
    select, weighting = selection_of(spec, strategy)
    n = out.n
    if n is None and select in NEEDS_N:
        name = next(q.name for q in strategy.params if q.name in ("top_n", "n"))
        n = ctx.param(name, np.int64)
    vol = out.volatility
    if weighting == "inverse_volatility" and vol is None:
        lb = p.volatility_lookback
        vol = ctx.per_combo("volatility", lambda: rules.volatility(xp, ctx.close, lb)[:, :, 0])
    try:
        return rules.target_weights(xp, scores, select, n=n, quantile=p.quantile, weighting=weighting,
                                    volatility=vol, max_weight=p.max_weight, gross_leverage=p.gross_leverage,
                                    cash_buffer=p.cash_buffer, net_exposure=p.net_exposure)
    except ValueError as exc:
        raise StrategyError(f"strategy {strategy.name!r}: {exc}", {"strategy": strategy.name}) from None


def run_kernel(backend: Any, bars: Mapping[str, Any], weights: Any, schedule: Schedule, ended: np.ndarray,
               opts: PortfolioOptions, max_records: int = 0) -> Any:
    """The portfolio kernel on this backend (`PortfolioRun` of device arrays)."""
    if backend.name == "cpu":
        from .simulate.portfolio import run_portfolio_cpu

        return run_portfolio_cpu(bars["open"], bars["close"], weights, schedule.map, ended, opts, max_records)
    from .simulate.portfolio_cuda import run_portfolio_cuda

    xp = backend.xp
    return run_portfolio_cuda(xp, xp.ascontiguousarray(bars["open"]), xp.ascontiguousarray(bars["close"]),
                              xp.ascontiguousarray(weights), xp.asarray(schedule.map), xp.asarray(ended), opts,
                              max_records)


def combos_per_chunk(n_bars: int, n_rows: int, n_symbols: int, budget: int) -> int:
    """How many combinations one chunk holds within ``budget`` bytes."""
    per_combo = n_rows * n_symbols * BYTES_PER_ROW_CELL + n_bars * BYTES_PER_BAR_COLUMN
    return max(1, budget // max(1, per_combo))


def block_sums(xp: Any, returns: Any, n_blocks: int) -> Any:
    """Per column and block the return count and Σr … Σr⁴, (C, S, 5): the portfolio kernel's equity
    returns cut into the single-asset kernel's blocks (bars ⌊b·T/S⌋ ≤ t < ⌊(b+1)·T/S⌋; docs/metrics.md
    "Per-block sums"), so the overfitting statistics read both modes alike."""
    from .overfitting import block_bounds

    n_t, n_c = returns.shape
    edges = block_bounds(n_t, n_blocks)
    out = xp.zeros((n_c, n_blocks, 5), dtype=xp.float64)
    for b in range(n_blocks):
        r = returns[int(edges[b]):int(edges[b + 1])]
        out[:, b, 0] = float(r.shape[0])
        p = xp.ones_like(r)
        for k in range(1, 5):
            p = p * r
            out[:, b, k] = p.sum(axis=0)
    return out


def _metrics(xp: Any, run: Any, spec: BacktestSpec, ppy: float, bench: Any) -> dict[str, Any]:
    vals = M.portfolio_metrics(run.equity, run.acc, spec.execution.init_cash, ppy, spec.metrics.risk_free, xp=xp)
    vals.update(M.series_metrics(M.returns_from_equity(run.equity, spec.execution.init_cash, xp), ppy,
                                 spec.metrics.risk_free, bench, xp=xp))
    return vals


def portfolio_sweep(engine: Any, spec: BacktestSpec, strategy: PortfolioStrategy, grid: Mapping[str, np.ndarray],
                    panel: MarketPanel, ppy: float, bench: np.ndarray | None, ended: np.ndarray,
                    cancel: Any = None, n_blocks: int = 0) -> tuple[dict[str, np.ndarray], int]:
    """Metrics of every combination of ``grid`` (a portfolio over all of ``panel``'s symbols
    each), host ``(K,)`` arrays, and the number of chunks; ``n_blocks`` > 0: also the per-block
    sums (K, S, 5) under the engine's `BLOCKS_KEY` (`block_sums`)."""
    from .engine import BLOCKS_KEY
    from .executors import Cancelled

    be, xp = engine.backend, engine.backend.xp
    n_combo = len(next(iter(grid.values()))) if grid else 1
    schedule = Schedule.of(panel.index.as_unit("ns").asi8, (spec.portfolio or Portfolio()).rebalance)
    per = combos_per_chunk(panel.n_bars, len(schedule.rows), panel.n_symbols, be.memory_budget)
    bars = {f: be.asarray(np.ascontiguousarray(a)) for f, a in panel.bars().items()}
    bench_d = be.asarray(bench) if bench is not None else None
    opts = kernel_options(spec, strategy)
    cache: dict[Any, Any] = {}
    out: dict[str, np.ndarray] = {}
    chunks = 0
    for k0 in range(0, n_combo, per):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        k1 = min(n_combo, k0 + per)
        params = {name: v[k0:k1] for name, v in grid.items()} if grid else {}
        ctx = PortfolioContext(xp, bars, params, schedule.rows, panel.index, cache)
        w = target_weights(xp, strategy, spec, ctx)
        run = run_kernel(be, bars, w, schedule, ended, opts)
        del w
        for name, v in _metrics(xp, run, spec, ppy, bench_d).items():
            if name not in out:
                out[name] = np.full(n_combo, np.nan)
            out[name][k0:k1] = be.to_host(v)
        if n_blocks > 0:
            blk = be.to_host(block_sums(xp, M.returns_from_equity(run.equity, spec.execution.init_cash, xp), n_blocks))
            if BLOCKS_KEY not in out:
                out[BLOCKS_KEY] = np.zeros((n_combo, n_blocks, 5))
            out[BLOCKS_KEY][k0:k1] = blk
        chunks += 1
    be.synchronize()
    return out, chunks


def portfolio_details(engine: Any, spec: BacktestSpec, strategy: PortfolioStrategy, grid: Mapping[str, np.ndarray],
                      panel: MarketPanel, combos: Sequence[int], ppy: float, bench: np.ndarray | None,
                      ended: np.ndarray, wanted: Sequence[str]) -> list[dict[str, Any]]:
    """Record mode for combinations ``combos``: metrics, equity curve, orders, trades, holdings."""
    if not combos:
        return []
    be, xp = engine.backend, engine.backend.xp
    schedule = Schedule.of(panel.index.as_unit("ns").asi8, (spec.portfolio or Portfolio()).rebalance)
    bars = {f: be.asarray(np.ascontiguousarray(a)) for f, a in panel.bars().items()}
    params = {name: v[list(combos)] for name, v in grid.items()} if grid else {}
    ctx = PortfolioContext(xp, bars, params, schedule.rows, panel.index, {})
    w = target_weights(xp, strategy, spec, ctx)
    opts = kernel_options(spec, strategy)
    first = run_kernel(be, bars, w, schedule, ended, opts)  # counts the orders: the record buffer's size
    n_max = int(be.to_host(first.acc[:, P.PA_N_ORDERS]).max())
    run = run_kernel(be, bars, w, schedule, ended, opts, max_records=max(1, n_max))
    vals = {m: be.to_host(v) for m, v in _metrics(xp, run, spec, ppy,
                                                   be.asarray(bench) if bench is not None else None).items()}
    eq = be.to_host(run.equity)
    orders, counts = be.to_host(run.orders), be.to_host(run.n_orders)
    from .engine import iso_times

    times = iso_times(panel.index)
    last_px = final_last_px(panel.open, panel.close)  # once for every combination
    last_close = pd.DataFrame(panel.close).ffill().to_numpy()
    out = []
    for j, combo in enumerate(combos):
        rec = orders[j, : int(counts[j])]
        d: dict[str, Any] = {
            "column": int(combo),
            "symbol": None,
            "params": {name: json_scalar(v[combo]) for name, v in grid.items()},
            "metrics": {m: json_scalar(vals[m][j]) for m in wanted if m in vals},
        }
        if spec.output.equity_curves:
            d["equity"] = {"time": times, "value": [float(x) for x in eq[:, j]]}
        if spec.output.trades:
            d["orders"] = orders_to_dicts(rec, panel)
            d["trades"] = round_trips(rec, panel, opts, last_px)
        d["holdings"] = holdings_at_rebalances(rec, panel, eq[:, j], last_close)
        out.append(d)
    return out


def orders_to_dicts(records: np.ndarray, panel: MarketPanel) -> list[dict[str, Any]]:
    """Order records as JSON-able dicts (time, symbol, side, units, price, costs, reason)."""
    out = []
    for r in records:
        units = float(r[P.O_UNITS])
        out.append({
            "time": panel.index[int(r[P.O_BAR])].isoformat(),
            "symbol": panel.symbols[int(r[P.O_SYMBOL])],
            "side": "buy" if units > 0 else "sell",
            "units": abs(units),
            "price": float(r[P.O_PRICE]),
            "costs": float(r[P.O_COSTS]),
            "reason": P.ORDER_REASONS[int(r[P.O_REASON])],
        })
    return out


def round_trips(records: np.ndarray, panel: MarketPanel, opts: PortfolioOptions,
                last_px: np.ndarray) -> list[dict[str, Any]]:
    """The column's position trades (docs/semantics.md, "Position trades": the kernel's own
    definitions, rebuilt from its order records) as JSON-able dicts, in the single-asset trade
    shape plus ``symbol``. ``last_px``: each symbol's price after the last bar (`final_last_px`)."""
    out = []
    for t in position_trades(records, opts, last_px, panel.n_bars):
        out.append({
            "symbol": panel.symbols[t["symbol"]],
            "entry_time": panel.index[t["entry_bar"]].isoformat(),
            "exit_time": panel.index[t["exit_bar"]].isoformat(),
            "direction": "long" if t["direction"] > 0 else "short",
            "size": float(t["size"]),
            "entry_price": float(t["entry_price"]),
            "exit_price": float(t["exit_price"]),
            "entry_fees": float(t["entry_fees"]),
            "exit_fees": float(t["fees"] - t["entry_fees"]),
            "pnl": float(t["pnl"]),
            "return": float(t["return"]),
            "exit_reason": t["exit_reason"],
            "bars": int(t["bars"]),
            "status": "open" if t["open"] else "closed",
        })
    return out


def holdings_at_rebalances(records: np.ndarray, panel: MarketPanel, equity: np.ndarray,
                           last_close: np.ndarray) -> list[dict[str, Any]]:
    """After each bar with rebalance orders: every non-zero position's weight
    (units × the bar's last known close ÷ the bar's equity), by symbol. ``last_close``: the
    closes forward-filled, (T, S)."""
    pos = np.zeros(panel.n_symbols)
    out: list[dict[str, Any]] = []
    i, n = 0, len(records)
    while i < n:
        bar = int(records[i, P.O_BAR])
        rebalanced = False
        while i < n and int(records[i, P.O_BAR]) == bar:
            pos[int(records[i, P.O_SYMBOL])] += records[i, P.O_UNITS]
            rebalanced |= int(records[i, P.O_REASON]) == P.OR_REBALANCE
            i += 1
        if rebalanced and equity[bar] > 0:
            held = np.flatnonzero(pos != 0.0)
            weights = pos[held] * last_close[bar, held] / equity[bar]
            out.append({"time": panel.index[bar].isoformat(),
                        "weights": {panel.symbols[s]: float(w) for s, w in zip(held, weights, strict=True)}})
    return out
