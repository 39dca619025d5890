"""Benchmark: an expression strategy's sweep vs the built-in array form, same data, same run.

The SMA crossover both ways — the built-in ``sma_crossover`` and its expression form
(``cross_above(sma(close, fast), sma(close, slow))`` …) — at fast 5..50 step 5 × slow 20..200
step 20 with fast < slow = 90 combinations, on seeded synthetic GBM prices. Prints, per form,
the median wall time of the whole run (signals + simulation + metrics) and of the signals alone
(the strategy's ``signals`` over the panel in the engine's chunks), after a warm-up, and the
ratio expression / built-in (target ≤ 1.5×). Also: the parser's worst time over the hostile
inputs of tests/test_expr_safety.py (each refused; the limits bound the work).

    python bench/expression.py --symbols 100 --bars 2520
    python bench/expression.py --backend cuda
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

UP = "cross_above(sma(close, fast), sma(close, slow))"
DOWN = "cross_below(sma(close, fast), sma(close, slow))"
EXPRESSION = {"name": "sma_crossover_expr",
              "signals": {"entry": UP, "exit": DOWN, "short_entry": DOWN, "short_exit": UP},
              "params": {"fast": {"type": "int", "default": 10}, "slow": {"type": "int", "default": 50}},
              "constraint": "fast < slow"}


def spec(strategy: Any) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "params": {"fast": {"start": 5, "stop": 50, "step": 5}, "slow": {"start": 20, "stop": 200, "step": 20}},
        "execution": {"init_cash": 100_000, "fill": "close", "direction": "long", "fractional": True},
        "metrics": {"periods_per_year": 252},
        "output": {"metrics": ["total_return", "sharpe", "max_drawdown"], "rank_by": "sharpe", "top_k": 0},
    }


def median_time(fn: Callable[[], Any], repeat: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def signals_only(engine: Any, strategy: Any, grid: dict[str, np.ndarray], panel: Any) -> Callable[[], Any]:
    """The strategy's signals over the panel in the chunks a sweep uses (no simulation)."""
    from gpu_backtest.core.engine import BYTES_PER_CELL, plan_chunks
    from gpu_backtest.core.spec import BacktestSpec, grid_size

    be = engine.backend
    sp = BacktestSpec.from_dict(spec("sma_crossover"))
    bars_host = panel.bars()
    chunks = plan_chunks(panel.n_symbols, grid_size(grid), panel.n_bars, be.memory_budget, BYTES_PER_CELL)

    def run() -> None:
        block, cache = None, {}
        for c in chunks:
            if (c.sym_start, c.sym_stop) != block:
                cache, block = {}, (c.sym_start, c.sym_stop)
            bars = {f: be.kernel_layout(be.asarray(a[:, c.sym_start:c.sym_stop])) for f, a in bars_host.items()}
            params = {n: v[c.combo_start:c.combo_stop] for n, v in grid.items()}
            engine._signals(strategy, bars, params, cache, sp)

    return run


def parse_worst() -> tuple[float, str]:
    """The slowest refusal among the hostile inputs (seconds, which)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_expr_safety import ATTACKS, doc_with

    from gpu_backtest.core.errors import SpecError
    from gpu_backtest.core.expr import canonical

    worst, which = 0.0, ""
    for src, _ in ATTACKS:
        t0 = time.perf_counter()
        try:
            canonical(doc_with(src))
        except SpecError:
            pass
        dt = time.perf_counter() - t0
        if dt > worst:
            worst, which = dt, (src[:40] + "…" if len(src) > 40 else src) + f" ({len(src):,} chars)"
    return worst, which


def main(argv: list[str] | None = None) -> int:
    from gpu_backtest.core.backend import select_backend
    from gpu_backtest.core.config import Settings
    from gpu_backtest.core.engine import Engine, resolve_strategy
    from gpu_backtest.core.panel import MarketPanel
    from gpu_backtest.core.spec import BacktestSpec, expand_grid
    from gpu_backtest.core.synthetic import gbm_panel_frame
    from gpu_backtest.plugins.manager import default_registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--bars", type=int, default=2520)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args(argv)

    panel = MarketPanel.from_long(gbm_panel_frame(args.symbols, args.bars, args.seed))
    settings = Settings.from_env()
    engine = Engine(settings, select_backend(settings, args.backend), default_registry())
    sync = engine.backend.synchronize
    rows = {}
    tables = {}
    for label, strat in (("built-in", "sma_crossover"), ("expression", EXPRESSION)):
        sp = spec(strat)
        s = BacktestSpec.from_dict(sp)
        strategy = resolve_strategy(s, engine.registry)
        grid = expand_grid(strategy, s.params)
        run_s = median_time(lambda sp=sp: engine.run(sp, panel), args.repeat, sync)
        sig_s = median_time(signals_only(engine, strategy, grid, panel), args.repeat, sync)
        tables[label] = engine.run(sp, panel).table
        rows[label] = (run_s, sig_s, len(next(iter(grid.values()))))
    a, b = tables["built-in"], tables["expression"]
    same = a.drop(columns=[]).equals(b)
    print(f"{args.symbols} symbols × {args.bars} bars × {rows['built-in'][2]} combinations, backend "
          f"{engine.backend.name}, median of {args.repeat} after a warm-up; tables identical: {same}")
    print("| form | whole run (s) | signals only (s) |\n|---|---:|---:|")
    for label, (run_s, sig_s, _) in rows.items():
        print(f"| {label} | {run_s:.3f} | {sig_s:.3f} |")
    r = rows["expression"][0] / rows["built-in"][0]
    q = rows["expression"][1] / rows["built-in"][1]
    print(f"| **expression / built-in** | **{r:.2f}×** | **{q:.2f}×** |")
    worst, which = parse_worst()
    print(f"parser: slowest refusal of the hostile inputs {worst * 1e3:.2f} ms ({which})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
