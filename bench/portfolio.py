"""Benchmark: cross-sectional momentum portfolios, our engine vs vectorbt on the same data, same run.

Workload (issue 14): the ``xs_momentum`` portfolio over S symbols × T daily bars × 100
parameter combinations — lookback 21·k for k = 1..10 × skip ∈ {0, 5} × top_n ∈ {10, 20, 30,
40, 50} — rebalanced on the first bar of each month ("1m") to equal weights of the top_n
scores (score = close[t − skip] / close[t − skip − lookback] − 1; a name without a finite
score is not eligible, ties go to the lower symbol), fees 0.001, close fills, fractional
units, one shared cash balance per combination, init cash 100,000. Seeded synthetic GBM bars
(`core/synthetic.py`); ``--gaps F`` drops a fraction F of the (symbol, bar) rows.

Four timings on the same data in one process (median of ``--repeat`` runs after a warm-up
that compiles the kernels; peak memory above the run's starting point by ``tracemalloc``,
which sees numpy's and pandas' buffers, in a separate untimed run):

* ``vectorbt e2e``: weights with vectorised numpy (scores and ranks on the rebalance bars,
  NaN weights on every other bar, so no orders there), the close tiled to combination ×
  symbol columns, ``vbt.Portfolio.from_orders(size_type="targetpercent", group_by=combination,
  cash_sharing=True, call_seq="auto")``, then total return, Sharpe and max drawdown per group;
* ``vectorbt sim``: the ``from_orders`` call alone, on inputs prepared beforehand;
* ``ours e2e``: ``gpu_backtest.api.run_backtest(spec, data=<long DataFrame>, backend="cpu")``;
* ``ours sim``: the portfolio kernel ``run_portfolio_cpu`` alone on the same weights as vectorbt's.

Throughput is bar-simulations per second: bars × symbols × combinations ÷ median time. The
agreement check is the largest |total return difference| over the combinations between
vectorbt and each of ours: ~1e-14 without gaps, with or without fees (our fills follow
vectorbt's ``call_seq="auto"`` order, so the same buy is cut when the cash runs short:
docs/semantics.md). With ``--gaps`` a few combinations still differ (bench/RESULTS.md).

    python bench/portfolio.py                                  # 500 symbols × 2,520 bars × 100
    python bench/portfolio.py --symbols 50 --bars 504 --combos 20 --repeat 2
    python bench/portfolio.py --gaps 0.01 --no-vectorbt
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
from dataclasses import dataclass
from typing import Any

import numpy as np

SKIPS = [0, 5]
TOP_N = [10, 20, 30, 40, 50]
MONTH = 21  # lookbacks are multiples of one trading month
INIT_CASH = 100_000.0
FEES = 0.001
PERIODS_PER_YEAR = 252
METRICS = ["total_return", "sharpe", "max_drawdown"]


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """The data and parameter grid both engines run: prices (T, S), rebalance rows, combinations."""

    frame: Any                   # long DataFrame (timestamp, symbol, open, high, low, close, volume)
    index: Any                   # pandas DatetimeIndex (UTC), T bars
    symbols: list[str]
    open_: np.ndarray            # (T, S), NaN = no bar
    close: np.ndarray            # (T, S), NaN = no bar
    rows: np.ndarray             # int64 (R,): the rebalance bars (first bar of each month)
    combos: list[tuple[int, int, int]]  # (lookback, skip, top_n), in spec product order
    lookbacks: list[int]
    fees: float = FEES

    @property
    def cells(self) -> int:
        """Bar-simulations: bars × symbols × combinations."""
        return self.close.size * len(self.combos)


def grid(n_combos: int) -> tuple[list[int], list[tuple[int, int, int]]]:
    """Lookbacks and the (lookback, skip, top_n) product for ``n_combos`` (a multiple of 10)."""
    per = len(SKIPS) * len(TOP_N)
    if n_combos < per or n_combos % per:
        raise SystemExit(f"--combos must be a positive multiple of {per}, got {n_combos}")
    lookbacks = [MONTH * k for k in range(1, n_combos // per + 1)]
    return lookbacks, [(lb, sk, n) for lb in lookbacks for sk in SKIPS for n in TOP_N]


def make_workload(n_symbols: int, n_bars: int, n_combos: int, seed: int, gaps: float, fees: float = FEES) -> Workload:
    """Seeded GBM bars; with ``gaps > 0`` that fraction of (symbol, bar) rows is dropped (no bar)."""
    import pandas as pd

    from gpu_backtest.core.portfolio_rules import rebalance_flags
    from gpu_backtest.core.synthetic import gbm_panel_frame

    frame = gbm_panel_frame(n_symbols, n_bars, seed)
    if gaps > 0:
        keep = np.random.default_rng(seed + 1).random(len(frame)) >= gaps
        frame = frame[keep].reset_index(drop=True)
    index = pd.DatetimeIndex(np.sort(frame["timestamp"].unique()))
    symbols = sorted(frame["symbol"].unique())
    wide = frame.pivot(index="timestamp", columns="symbol").reindex(index=index)
    close = np.ascontiguousarray(wide["close"][symbols].to_numpy(dtype=np.float64))
    open_ = np.ascontiguousarray(wide["open"][symbols].to_numpy(dtype=np.float64))
    flags = rebalance_flags(index.as_unit("ns").asi8, "1m", len(index))
    lookbacks, combos = grid(n_combos)
    return Workload(frame, index, symbols, open_, close, np.flatnonzero(flags).astype(np.int64), combos, lookbacks,
                    fees)


def momentum_weights(close: np.ndarray, rows: np.ndarray, combos: list[tuple[int, int, int]]) -> np.ndarray:
    """Target weights on the rebalance rows, ``(R, S, C)``: equal weights of each combination's top_n.

    Vectorised numpy, each distinct (lookback, skip) scored and ranked once, on the rebalance
    bars only (the other bars' weights are never used). Names without a finite score get 0.
    """
    n_sym = close.shape[1]
    out = np.zeros((len(rows), n_sym, len(combos)), dtype=np.float64)
    keys = sorted({(lb, sk) for lb, sk, _ in combos})
    with np.errstate(all="ignore"):
        for lb, sk in keys:
            now, then = rows - sk, rows - sk - lb
            ok = then >= 0
            score = np.full((len(rows), n_sym), np.nan)
            score[ok] = close[now[ok]] / close[then[ok]] - 1.0
            eligible = np.isfinite(score)
            order = np.argsort(np.where(eligible, -score, np.inf), axis=1, kind="stable")
            ranks = np.argsort(order, axis=1)
            for c, (lb2, sk2, n) in enumerate(combos):
                if (lb2, sk2) != (lb, sk):
                    continue
                chosen = eligible & (ranks < n)
                count = chosen.sum(axis=1, keepdims=True)
                out[:, :, c] = np.where(chosen, 1.0 / np.maximum(count, 1), 0.0)
    return out


# --------------------------------------------------------------------------- our kernel (adapter)


def kernel_runner(wl: Workload, weights: np.ndarray) -> Callable[[], np.ndarray]:
    """A no-argument call of the portfolio kernel on ``weights`` (R, S, C); returns final equity (C,).

    The one place that knows `run_portfolio_cpu`'s signature (``rebalance`` int64 (T,): the
    weights row of each bar or −1; ``ended`` (S,) all −1; `PortfolioOptions`). Inputs are
    prepared here, outside the timed call.
    """
    from gpu_backtest.core.simulate import portfolio as kp
    from gpu_backtest.core.simulate import portfolio_layout as pl
    from gpu_backtest.core.simulate.portfolio_options import PortfolioOptions

    n_bars, n_sym = wl.close.shape
    opts = PortfolioOptions(init_cash=INIT_CASH, fees=wl.fees, fill="close", fractional=True)
    rebalance = np.full(n_bars, -1, dtype=np.int64)
    rebalance[wl.rows] = np.arange(len(wl.rows), dtype=np.int64)
    ended = np.full(n_sym, -1, dtype=np.int64)
    w = np.ascontiguousarray(weights)

    def run() -> np.ndarray:
        res = kp.run_portfolio_cpu(wl.open_, wl.close, w, rebalance, ended, opts)
        return np.asarray(res.acc[:, pl.PA_FINAL_EQUITY])

    return run


def ours_sim(wl: Workload) -> Callable[[], Any]:
    """Kernel alone; returns total return per combination (C,)."""
    run = kernel_runner(wl, momentum_weights(wl.close, wl.rows, wl.combos))
    return lambda: run() / INIT_CASH - 1.0


def spec(wl: Workload) -> dict[str, Any]:
    """The run_backtest document of the workload."""
    return {
        "strategy": "xs_momentum",
        "params": {"lookback": wl.lookbacks, "skip": SKIPS, "top_n": TOP_N},
        "portfolio": {"rebalance": "1m"},
        "costs": {"fees": wl.fees},
        "execution": {"init_cash": INIT_CASH, "fill": "close", "fractional": True},
        "metrics": {"periods_per_year": PERIODS_PER_YEAR},
        "output": {"top_k": 0, "metrics": METRICS},
    }


def ours_e2e(wl: Workload) -> Callable[[], Any]:
    """`run_backtest` from the long frame; returns its result table."""
    from gpu_backtest.api import run_backtest

    sp = spec(wl)
    return lambda: run_backtest(sp, data=wl.frame, backend="cpu").table


def table_by_combo(table: Any) -> dict[tuple[int, int, int], Any]:
    """Our result table's rows keyed by (lookback, skip, top_n)."""
    return {(int(r.lookback), int(r.skip), int(r.top_n)): r for r in table.itertuples()}


# --------------------------------------------------------------------------- vectorbt


def vectorbt_inputs(wl: Workload, weights: np.ndarray) -> tuple[Any, np.ndarray]:
    """The close tiled to (T, C × S) columns (combination, symbol) and the matching size array."""
    import pandas as pd

    n_bars, n_sym = wl.close.shape
    n_cols = weights.shape[2]
    columns = pd.MultiIndex.from_arrays(
        [np.repeat(np.arange(n_cols), n_sym), np.tile(np.asarray(wl.symbols, dtype=object), n_cols)],
        names=["combo", "symbol"],
    )
    close = pd.DataFrame(np.tile(wl.close, (1, n_cols)), index=wl.index.tz_localize(None), columns=columns)
    size = np.full((n_bars, n_cols * n_sym), np.nan)
    size[wl.rows] = weights.transpose(0, 2, 1).reshape(len(wl.rows), n_cols * n_sym)
    return close, size


def vectorbt_portfolio(close: Any, size: np.ndarray, fees: float) -> Any:
    """One ``from_orders`` call: every combination a cash-sharing group of its symbols."""
    import vectorbt as vbt

    vbt.settings.returns["year_freq"] = f"{PERIODS_PER_YEAR} days"  # annualise as ours: 252 bars a year
    return vbt.Portfolio.from_orders(
        close, size=size, size_type="targetpercent", group_by="combo", cash_sharing=True,
        call_seq="auto", init_cash=INIT_CASH, fees=fees, freq="1D",
    )


def vectorbt_metrics(pf: Any) -> Any:
    """Total return, Sharpe, max drawdown per group (combination)."""
    import pandas as pd

    return pd.DataFrame({"total_return": pf.total_return(), "sharpe": pf.sharpe_ratio(),
                         "max_drawdown": pf.max_drawdown()})


def vectorbt_e2e(wl: Workload) -> Callable[[], Any]:
    """Weights + inputs + simulation + metrics."""
    def run() -> Any:
        close, size = vectorbt_inputs(wl, momentum_weights(wl.close, wl.rows, wl.combos))
        return vectorbt_metrics(vectorbt_portfolio(close, size, wl.fees))

    return run


def vectorbt_sim(wl: Workload) -> Callable[[], Any]:
    """The ``from_orders`` call alone."""
    close, size = vectorbt_inputs(wl, momentum_weights(wl.close, wl.rows, wl.combos))
    return lambda: vectorbt_portfolio(close, size, wl.fees)


# --------------------------------------------------------------------------- measurement


def measure(name: str, fn: Callable[[], Any], cells: int, repeat: int, warm: bool = False) -> dict[str, Any]:
    """Warm-up (unless ``warm``), ``repeat`` timed runs (median), then one untimed run under tracemalloc.

    The memory figure is the tracemalloc peak of that run above its starting point.
    """
    if not warm:
        fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    gc.collect()
    med = statistics.median(times)
    row = {"engine": name, "median_s": med, "min_s": min(times), "max_s": max(times), "runs": repeat,
           "bar_sims_per_s": cells / med, "peak_mem_mib": peak / 2**20}
    print(f"{name:14s} median {med:8.3f} s (min {min(times):.3f}, max {max(times):.3f})  "
          f"{cells / med:10.4g} bar-sims/s  peak +{peak / 2**20:9.1f} MiB", flush=True)
    return row


def compare(name: str, ours_tr: dict[tuple[int, int, int], float], ref: Any, wl: Workload) -> float:
    """Largest |total return difference| vs vectorbt over the combinations (printed)."""
    diffs = np.array([abs(ours_tr[k] - ref["total_return"].iloc[c]) for c, k in enumerate(wl.combos)])
    worst = int(np.nanargmax(diffs)) if np.isfinite(diffs).any() else 0
    print(f"  {name}: max |total_return difference| vs vectorbt {np.nanmax(diffs):.3g} "
          f"(combination {wl.combos[worst]}; median {np.nanmedian(diffs):.3g}; NaN pairs {int(np.isnan(diffs).sum())})",
          flush=True)
    return float(np.nanmax(diffs))


def try_measure(name: str, make: Callable[[], Callable[[], Any]], cells: int, repeat: int) -> dict[str, Any] | None:
    """`measure`, or a printed reason when this side cannot run yet (e.g. portfolio mode not wired)."""
    try:
        fn = make()
        fn()  # the warm-up (compiles the kernels)
    except Exception as exc:  # a benchmark reports and goes on
        print(f"{name:14s} not run: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        return None
    row = measure(name, fn, cells, repeat, warm=True)
    row["fn"] = fn
    return row


def ratios(label: str, ours: dict[str, Any] | None, vbt: dict[str, Any] | None) -> None:
    """Speed-up and memory ratio, vectorbt over ours."""
    if ours is None or vbt is None:
        return
    speed = vbt["median_s"] / ours["median_s"]
    mem = vbt["peak_mem_mib"] / max(ours["peak_mem_mib"], 1e-9)
    print(f"  {label}: speed-up {speed:.1f}×, memory ratio (vectorbt / ours) {mem:.1f}×", flush=True)


def profile(fn: Callable[[], Any], top: int = 25) -> None:
    """One more run under cProfile: the ``top`` functions by cumulative time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--bars", type=int, default=2520)
    ap.add_argument("--combos", type=int, default=100, help="a multiple of 10 (lookbacks 21·k, k = 1..combos/10)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fees", type=float, default=FEES, help="fraction of traded value per order")
    ap.add_argument("--gaps", type=float, default=0.0, help="fraction of (symbol, bar) rows dropped (no bar)")
    ap.add_argument("--no-vectorbt", action="store_true")
    ap.add_argument("--no-e2e", action="store_true", help="skip our run_backtest end-to-end timing")
    ap.add_argument("--profile", action="store_true", help="then profile one run of ours end to end (cProfile)")
    ap.add_argument("--json", help="append the result rows to this JSON-lines file")
    args = ap.parse_args(argv)

    wl = make_workload(args.symbols, args.bars, args.combos, args.seed, args.gaps, args.fees)
    n_bars, n_sym = wl.close.shape
    print(f"{n_sym} symbols × {n_bars} bars × {len(wl.combos)} combinations, {len(wl.rows)} rebalances, "
          f"gaps {args.gaps:g} ({int(np.isnan(wl.close).sum())} missing closes): {wl.cells:.4g} bar-simulations",
          flush=True)

    rows: dict[str, dict[str, Any] | None] = {}
    rows["ours sim"] = try_measure("ours sim", lambda: ours_sim(wl), wl.cells, args.repeat)
    if not args.no_e2e:
        rows["ours e2e"] = try_measure("ours e2e", lambda: ours_e2e(wl), wl.cells, args.repeat)
    if not args.no_vectorbt:
        rows["vectorbt sim"] = try_measure("vectorbt sim", lambda: vectorbt_sim(wl), wl.cells, args.repeat)
        rows["vectorbt e2e"] = try_measure("vectorbt e2e", lambda: vectorbt_e2e(wl), wl.cells, args.repeat)

    vrow = rows.get("vectorbt e2e")
    if vrow is not None:
        ref = vrow["fn"]()
        srow = rows["ours sim"]
        if srow is not None:
            sim_tr = srow["fn"]()
            compare("ours sim", {k: float(sim_tr[c]) for c, k in enumerate(wl.combos)}, ref, wl)
        erow = rows.get("ours e2e")
        if erow is not None:
            by = table_by_combo(erow["fn"]())
            compare("ours e2e", {k: float(by[k].total_return) for k in wl.combos}, ref, wl)
            sh = np.array([abs(float(by[k].sharpe) - float(ref["sharpe"].iloc[c])) for c, k in enumerate(wl.combos)])
            print(f"  ours e2e: max |sharpe difference| vs vectorbt {np.nanmax(sh):.3g}", flush=True)
        ratios("end to end", rows.get("ours e2e"), vrow)
        ratios("simulation alone", rows.get("ours sim"), rows.get("vectorbt sim"))
    if args.profile and rows.get("ours e2e") is not None:
        profile(rows["ours e2e"]["fn"])  # type: ignore[index]
    print(f"  process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", flush=True)
    if args.json:
        with open(args.json, "a") as fh:
            for r in rows.values():
                if r is not None:
                    r = {k: v for k, v in r.items() if k != "fn"}
                    fh.write(json.dumps({**r, "symbols": n_sym, "bars": n_bars, "combos": len(wl.combos),
                                         "gaps": args.gaps}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
