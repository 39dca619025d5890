"""Benchmark: build the HTML report (core/report.py) of a 180,000-column sweep; time and size.

The job is written as a finished job stores it: the ranked table as Parquet pieces (core/artifacts.py,
one piece per 100 symbols; every metric column, as the engine writes them) and the top-k details
(2,520-bar equity curves and trades). Values are seeded random (the report's cost depends on the
table's shape, not on what a strategy did). Timed: `build_report` reading the pieces as
`report_for_job` does (only the symbol, parameter and rank_by columns), the first build in the
process (reads plotly.js from the wheel) and the median of the next ones.

    python bench/report.py                      # 2,000 symbols × 90 combinations = 180,000 columns
    python bench/report.py --symbols 200
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd

from gpu_backtest.core import artifacts
from gpu_backtest.core.metrics import METRICS as ALL_METRICS

FAST = list(range(5, 51, 5))
SLOW = list(range(20, 201, 20))
PAIRS = [(f, s) for f in FAST for s in SLOW if f < s]  # 90, as bench/sweep.py


def write_job(root: str, n_symbols: int, n_bars: int, top_k: int, seed: int) -> tuple[str, dict[str, Any],
                                                                                      list[dict[str, Any]],
                                                                                      list[dict[str, Any]]]:
    """A finished sweep's artifact, info, top rows and details."""
    rng = np.random.default_rng(seed)
    k = len(PAIRS)
    loc = artifacts.job_dir(root, "0" * 32, 1)
    pieces, total, columns = [], 0, None
    per = 100
    for p, s0 in enumerate(range(0, n_symbols, per)):
        syms = range(s0, min(n_symbols, s0 + per))
        n = len(syms) * k
        df = pd.DataFrame({"column": np.arange(s0 * k, s0 * k + n),
                           "symbol": np.repeat([f"SYN{s:04d}" for s in syms], k),
                           "fast": np.tile([a for a, _ in PAIRS], len(syms)),
                           "slow": np.tile([b for _, b in PAIRS], len(syms))})
        for m in ALL_METRICS:
            df[m] = rng.normal(0.5, 0.4, n)
        artifacts.write_piece(loc, p, df, "sharpe")
        pieces.append(p)
        total += n
        columns = list(df.columns)
    artifacts.write_manifest(loc, "sharpe", columns or [], pieces, total)
    art = artifacts.Artifact.open(loc)
    top_df = art.page(0, 20)
    top = [{"rank": int(r["rank"]), "column": int(r["column"]), "symbol": r["symbol"],
            "params": {"fast": int(r["fast"]), "slow": int(r["slow"])},
            "metrics": {m: float(r[m]) for m in ALL_METRICS}} for r in top_df.to_dict("records")]
    times = [t.isoformat() for t in pd.bdate_range("2010-01-04", periods=n_bars, tz="UTC")]
    details = []
    for row in top[:top_k]:
        eq = 100_000 * np.cumprod(1 + rng.normal(4e-4, 0.01, n_bars))
        trades = [{"entry_time": times[i], "exit_time": times[i + 5], "direction": "long", "size": 10.0,
                   "entry_price": 100.0, "exit_price": 101.0, "pnl": float(rng.normal(100, 500)),
                   "return": float(rng.normal(0.01, 0.05)), "exit_reason": "signal", "bars": 5, "status": "closed"}
                  for i in range(0, n_bars - 6, 30)]
        details.append({**row, "equity": {"time": times, "value": eq.tolist()}, "trades": trades})
    info = {"mode": "signals", "strategy": "sma_crossover", "n_symbols": n_symbols, "n_combinations": k,
            "n_columns": total, "n_bars": n_bars, "rank_by": "sharpe", "periods_per_year": 252.0,
            "start": times[0], "end": times[-1], "backend": "cpu"}
    return loc, info, top, details


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=2000)
    ap.add_argument("--bars", type=int, default=2520)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--html", metavar="FILE", help="also write the page to FILE")
    args = ap.parse_args()
    from gpu_backtest.core.report import build_report

    with tempfile.TemporaryDirectory() as root:
        loc, info, top, details = write_job(root, args.symbols, args.bars, args.top_k, args.seed)

        def build() -> str:
            table = artifacts.Artifact.open(loc).piece_batches(["symbol", "fast", "slow", "sharpe"])
            return build_report(info, top, details, table=table, column_link=lambda n: f"columns/{n}/report",
                                init_cash=100_000.0)

        t0 = time.perf_counter()
        page = build()
        first = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            page = build()
            runs.append(time.perf_counter() - t0)
    size = len(page.encode())
    if args.html:
        with open(args.html, "w", encoding="utf-8") as fh:
            fh.write(page)
    from gpu_backtest.core.report import plotly_js

    js = len(plotly_js().encode())
    print(f"{info['n_columns']:,} columns ({args.symbols} symbols × {len(PAIRS)} combinations), "
          f"{args.bars} bars, top_k {args.top_k}")
    print(f"build: first {first:.3f} s, then median {statistics.median(runs):.3f} s (of {args.repeat})")
    print(f"page: {size / 1e6:.2f} MB ({size / 2**20:.2f} MiB), of which plotly.js {js / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
