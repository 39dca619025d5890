"""Benchmark: a parameter sweep, our engine vs vectorbt and a fused-loop yardstick on the same data, same run.

``--strategy sma_crossover`` (default): fast 5..50 step 5 × slow 20..200 step 20 with fast <
slow = 90 combinations per symbol; ``--strategy bollinger_reversion``: window 10..100 step 10
× k 0.5..4.5 step 0.5 = 90 combinations. Seeded synthetic GBM prices, close fills, fractional
units, all-in, long only. Rows: ours with every metric (``ours-all``), ours with vectorbt's
three (total return / Sharpe / max drawdown, ``ours-3``), vectorbt computing those three, and
(SMA only, when ../shared/tools/sweep_probe.py exists) the plain fused loop of that probe on its
own prices (``probe``: two SMAs, crossings, simulation and running sums in one pass per column).
Prints, per row, the median wall time of the timed runs after a warm-up, throughput in
bar-simulations per second (bars × columns / seconds), and the peak memory the run allocates
above its baseline (tracemalloc, which sees numpy's and pandas' buffers; a separate run).

    python bench/sweep.py --symbols 100 --bars 2520
    python bench/sweep.py --symbols 100 --strategy bollinger_reversion
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
THREE = ["total_return", "sharpe", "max_drawdown"]
METRICS: list[str] | None = THREE  # output.metrics of the spec; None: every metric
STRATEGY = "sma_crossover"
BB_WINDOWS = list(range(10, 101, 10))
BB_KS = [0.5 * i for i in range(1, 10)]


def make_panel(n_symbols: int, n_bars: int, seed: int) -> Any:
    from gpu_backtest.core.panel import MarketPanel
    from gpu_backtest.core.synthetic import gbm_panel_frame

    return MarketPanel.from_long(gbm_panel_frame(n_symbols, n_bars, seed))


OVERFITTING_BLOCKS = 16  # output.overfitting blocks (the spec default); 0: null (off)


def spec() -> dict[str, Any]:
    params = ({"fast": {"start": 5, "stop": 50, "step": 5}, "slow": {"start": 20, "stop": 200, "step": 20}}
              if STRATEGY == "sma_crossover" else {"window": BB_WINDOWS, "k": BB_KS})
    return {
        "strategy": STRATEGY,
        "params": params,
        "execution": {"init_cash": 100_000, "fill": "close", "direction": "long", "fractional": True},
        "metrics": {"periods_per_year": 252},
        "output": {"metrics": METRICS, "rank_by": "sharpe", "top_k": 0,
                   "overfitting": {"blocks": OVERFITTING_BLOCKS} if OVERFITTING_BLOCKS else None},
    }


def ours(panel: Any, backend: str, metrics: list[str] | None = None) -> Callable[[], Any]:
    from gpu_backtest.core.backend import select_backend
    from gpu_backtest.core.config import Settings
    from gpu_backtest.core.engine import Engine
    from gpu_backtest.plugins.manager import default_registry

    settings = Settings.from_env()
    engine = Engine(settings, select_backend(settings, backend), default_registry())
    sp = spec()
    sp["output"]["metrics"] = metrics

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

    def stats(pf: Any) -> Any:
        return pd.DataFrame({"total_return": pf.total_return(), "sharpe": pf.sharpe_ratio(),
                             "max_drawdown": pf.max_drawdown()})

    def run_sma() -> Any:
        fast_ma = vbt.MA.run(close, window=fast, short_name="fast")
        slow_ma = vbt.MA.run(close, window=slow, short_name="slow")
        entries = fast_ma.ma_crossed_above(slow_ma)
        exits = fast_ma.ma_crossed_below(slow_ma)
        return stats(vbt.Portfolio.from_signals(close, entries, exits, init_cash=100_000, freq="1D"))

    def run_bb() -> Any:
        # vectorbt's BBANDS (population std, like ours); one (window, alpha) per combination
        windows = [w for w in BB_WINDOWS for _ in BB_KS]
        alphas = [k for _ in BB_WINDOWS for k in BB_KS]
        bb = vbt.BBANDS.run(close, window=windows, alpha=alphas, ewm=False, param_product=False)
        entries = bb.close_crossed_below(bb.lower)
        exits = bb.close_crossed_above(bb.middle)
        return stats(vbt.Portfolio.from_signals(close, entries, exits, init_cash=100_000, freq="1D"))

    return run_sma if STRATEGY == "sma_crossover" else run_bb


def probe(n_symbols: int, n_bars: int) -> Callable[[], Any] | None:
    """../shared/tools/sweep_probe.py's fused loop (its own prices, same sizes), or None where absent."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "tools" / "sweep_probe.py"
    if not path.is_file():
        return None
    spec_ = importlib.util.spec_from_file_location("sweep_probe", path)
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)  # type: ignore[union-attr]
    from numba import njit, prange

    sim = njit(cache=False)(mod.sim_column)

    @njit(parallel=True)
    def sweep(close: Any, sma: Any, combos: Any, fee: float, out: Any) -> None:  # pragma: no cover
        n_b, n_s = close.shape
        for col in prange(combos.shape[0] * n_s):
            c = col // n_s
            s_ = col - c * n_s
            sim(close, sma, s_, combos[c, 0], combos[c, 1], n_b, fee, out, col)

    windows, combos = mod.grid(n_symbols)
    close = mod.prices(np, n_bars, n_symbols)
    out = np.zeros((5, len(combos) * n_symbols))

    def run() -> Any:
        sweep(close, mod.smas(np, close, windows), combos, 0.001, out)
        return out

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
    ap.add_argument("--strategy", default="sma_crossover", choices=["sma_crossover", "bollinger_reversion"])
    args = ap.parse_args(argv)
    global OVERFITTING_BLOCKS, STRATEGY
    OVERFITTING_BLOCKS = args.overfitting
    STRATEGY = args.strategy

    panel = make_panel(args.symbols, args.bars, args.seed)
    cols = args.symbols * len(PAIRS)
    cells = args.bars * cols
    print(f"{STRATEGY}: {args.symbols} symbols × {args.bars} bars × {len(PAIRS)} combinations = {cols} columns, "
          f"{cells:.4g} bar-simulations", flush=True)
    rows = []
    table = None
    for label, metrics in (("all", None), ("3", THREE)):
        run = ours(panel, args.backend, metrics)
        sync = run.engine.backend.synchronize  # type: ignore[attr-defined]
        rows.append(measure(f"ours-{label}", run, cells, args.repeat, sync))
        table = run() if table is None else table
        print(f"  stage seconds of the last run: {run.info['stage_seconds']}", flush=True)  # type: ignore
        if run.info.get("overfitting"):  # type: ignore[attr-defined]
            o = run.info["overfitting"]  # type: ignore[attr-defined]
            print(f"  overfitting: dsr {o['dsr']}, psr {o['psr']}, pbo {o['cscv'] and o['cscv']['pbo']}", flush=True)
    print(f"  chunks: {run.engine.backend.memory_budget / 2**20:.0f} MiB budget", flush=True)  # type: ignore
    yard = probe(args.symbols, args.bars) if STRATEGY == "sma_crossover" and args.backend == "cpu" else None
    if yard is not None:
        rows.append(measure("probe", yard, cells, args.repeat, lambda: None))
        print(f"  ours-3 / probe: {rows[1]['median_s'] / rows[-1]['median_s']:.2f}× the fused loop's time")
    if not args.no_vectorbt:
        vrun = vectorbt(panel)
        rows.append(measure("vectorbt", vrun, cells, args.repeat, lambda: None))
        ref = vrun()
        try:  # same numbers? total return per (first parameter, second parameter, symbol)
            names = list(spec()["params"])
            ours_tr = {(float(getattr(r, names[0])), float(getattr(r, names[1])), r.symbol): r.total_return
                       for r in table.itertuples()}
            diffs = [abs(ours_tr[(float(key[0]), float(key[-2]), key[-1])] - v)
                     for key, v in ref["total_return"].items()]
            print(f"  max |total_return difference| vs vectorbt: {max(diffs):.3g}")
        except (KeyError, TypeError, IndexError) as exc:
            print(f"  (total returns not compared: {exc!r})")
        speed = rows[0]["bar_sims_per_s"] / rows[-1]["bar_sims_per_s"]
        mem = rows[-1]["peak_mem_mib"] / max(rows[0]["peak_mem_mib"], 1e-9)
        print(f"  speed-up (every metric) {speed:.1f}×, memory ratio (vectorbt / ours) {mem:.1f}×")
    print(f"  process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        with open(args.json, "a") as fh:
            for r in rows:
                fh.write(json.dumps({**r, "symbols": args.symbols, "bars": args.bars, "columns": cols}) + "\n")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
