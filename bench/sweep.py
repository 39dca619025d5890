"""Benchmark: SMA-crossover parameter sweep, our engine vs vectorbt on the same data, same run.

fast 5..50 step 5 × slow 20..200 step 20 with fast < slow = 90 combinations per symbol, on
seeded synthetic GBM prices. Both sides compute signals, simulate (close fills, fractional
units, all-in) and total return / Sharpe / max drawdown per column. Prints, per engine, the
median wall time of the timed runs after a warm-up, throughput in bar-simulations per second
(bars × columns / seconds), and the peak memory the run allocates above its baseline
(tracemalloc, which sees numpy's and pandas' buffers; measured in a separate run).

    python bench/sweep.py --symbols 100 --bars 2520
    python bench/sweep.py --symbols 2000 --bars 2520 --no-vectorbt
    python bench/sweep.py --backend cuda --symbols 2000
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

FAST = list(range(5, 51, 5))
SLOW = list(range(20, 201, 20))
PAIRS = [(f, s) for f in FAST for s in SLOW if f < s]
METRICS = ["total_return", "sharpe", "max_drawdown"]


def make_panel(n_symbols: int, n_bars: int, seed: int) -> Any:
    from gpu_backtest.core.panel import MarketPanel
    from gpu_backtest.core.synthetic import gbm_panel_frame

    return MarketPanel.from_long(gbm_panel_frame(n_symbols, n_bars, seed))


OVERFITTING_BLOCKS = 16  # output.overfitting blocks (the spec default); 0: null (off)


def spec() -> dict[str, Any]:
    return {
        "strategy": "sma_crossover",
        "params": {"fast": {"start": 5, "stop": 50, "step": 5}, "slow": {"start": 20, "stop": 200, "step": 20}},
        "execution": {"init_cash": 100_000, "fill": "close", "direction": "long", "fractional": True},
        "metrics": {"periods_per_year": 252},
        "output": {"metrics": METRICS, "rank_by": "sharpe", "top_k": 0,
                   "overfitting": {"blocks": OVERFITTING_BLOCKS} if OVERFITTING_BLOCKS else None},
    }


def ours(panel: Any, backend: str) -> Callable[[], Any]:
    from gpu_backtest.core.backend import select_backend
    from gpu_backtest.core.config import Settings
    from gpu_backtest.core.engine import Engine
    from gpu_backtest.plugins.manager import default_registry

    settings = Settings.from_env()
    engine = Engine(settings, select_backend(settings, backend), default_registry())
    sp = spec()

    def run() -> Any:
        res = engine.run(sp, panel)
        run.info = res.info  # type: ignore[attr-defined]
        return res.table

    run.engine = engine  # type: ignore[attr-defined]
    return run


def vectorbt(panel: Any) -> Callable[[], Any]:
    import pandas as pd
    import vectorbt as vbt

    close = pd.DataFrame(panel.close, index=panel.index.tz_localize(None), columns=panel.symbols)
    fast = [p[0] for p in PAIRS]
    slow = [p[1] for p in PAIRS]

    def run() -> Any:
        fast_ma = vbt.MA.run(close, window=fast, short_name="fast")
        slow_ma = vbt.MA.run(close, window=slow, short_name="slow")
        entries = fast_ma.ma_crossed_above(slow_ma)
        exits = fast_ma.ma_crossed_below(slow_ma)
        pf = vbt.Portfolio.from_signals(close, entries, exits, init_cash=100_000, freq="1D")
        return pd.DataFrame({"total_return": pf.total_return(), "sharpe": pf.sharpe_ratio(),
                             "max_drawdown": pf.max_drawdown()})

    return run


def measure(name: str, fn: Callable[[], Any], cells: int, repeat: int, sync: Callable[[], None]) -> dict[str, Any]:
    fn()  # warm-up (JIT compile, caches)
    sync()
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    med = statistics.median(times)
    row = {"engine": name, "median_s": med, "runs": repeat, "bar_sims_per_s": cells / med,
           "peak_mem_mib": peak / 2**20}
    print(f"{name:10s} median {med:8.3f} s  {cells / med:12.4g} bar-sims/s  peak +{peak / 2**20:9.1f} MiB",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--bars", type=int, default=2520)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-vectorbt", action="store_true")
    ap.add_argument("--json", help="append the result rows to this JSON-lines file")
    ap.add_argument("--overfitting", type=int, default=16,
                    help="output.overfitting blocks (CSCV's S; default 16, the spec's default); 0: off (null)")
    args = ap.parse_args(argv)
    global OVERFITTING_BLOCKS
    OVERFITTING_BLOCKS = args.overfitting

    panel = make_panel(args.symbols, args.bars, args.seed)
    cols = args.symbols * len(PAIRS)
    cells = args.bars * cols
    print(f"{args.symbols} symbols × {args.bars} bars × {len(PAIRS)} combinations = {cols} columns, "
          f"{cells:.4g} bar-simulations", flush=True)
    run = ours(panel, args.backend)
    sync = run.engine.backend.synchronize  # type: ignore[attr-defined]
    rows = [measure(f"ours-{args.backend}", run, cells, args.repeat, sync)]
    table = run()
    print(f"  chunks: {run.engine.backend.memory_budget / 2**20:.0f} MiB budget", flush=True)  # type: ignore
    print(f"  stage seconds of the last run: {run.info['stage_seconds']}", flush=True)  # type: ignore
    if run.info.get("overfitting"):  # type: ignore[attr-defined]
        o = run.info["overfitting"]  # type: ignore[attr-defined]
        print(f"  overfitting: dsr {o['dsr']}, psr {o['psr']}, pbo {o['cscv'] and o['cscv']['pbo']}", flush=True)
    if not args.no_vectorbt:
        vrun = vectorbt(panel)
        rows.append(measure("vectorbt", vrun, cells, args.repeat, lambda: None))
        ref = vrun()
        # same numbers? compare total return per (symbol, fast, slow)
        ours_tr = {(r.symbol, int(r.fast), int(r.slow)): r.total_return for r in table.itertuples()}
        diffs = []
        for (fw, sw, sym), v in ref["total_return"].items():
            diffs.append(abs(ours_tr[(sym, int(fw), int(sw))] - v))
        print(f"  max |total_return difference| vs vectorbt: {max(diffs):.3g}")
        speed = rows[0]["bar_sims_per_s"] / rows[1]["bar_sims_per_s"]
        mem = rows[1]["peak_mem_mib"] / max(rows[0]["peak_mem_mib"], 1e-9)
        print(f"  speed-up {speed:.1f}×, memory ratio (vectorbt / ours) {mem:.1f}×")
    print(f"  process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        with open(args.json, "a") as fh:
            for r in rows:
                fh.write(json.dumps({**r, "symbols": args.symbols, "bars": args.bars, "columns": cols}) + "\n")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
