"""Benchmark: load a universe from the MarketDataStore into the engine's panel.

Fills a temporary store with N symbols × T daily synthetic bars (one Parquet file per
symbol), then times ``MarketDataStore.load_panel`` (median of the timed runs after a warm-up)
and measures its peak allocation above baseline (tracemalloc) and the process's max RSS.

    python bench/load.py --symbols 2000 --bars 2520
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc

import pandas as pd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=2000)
    ap.add_argument("--bars", type=int, default=2520)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from gpu_backtest.core.marketdata import MarketDataStore
    from gpu_backtest.core.synthetic import symbol_bars

    index = pd.bdate_range("2010-01-04", periods=args.bars, tz="UTC")
    symbols = [f"S{i:05d}" for i in range(args.symbols)]
    with tempfile.TemporaryDirectory() as tmp:
        store = MarketDataStore(f"{tmp}/market", f"sqlite:///{tmp}/jobs.sqlite")
        t0 = time.perf_counter()
        for s in symbols:
            b = symbol_bars(s, args.bars)
            store.write("synthetic", s, "1d", pd.DataFrame({"timestamp": index, "open": b[0], "high": b[1],
                                                            "low": b[2], "close": b[3], "volume": b[4]}))
        print(f"filled the store: {args.symbols} symbols × {args.bars} bars in {time.perf_counter() - t0:.1f} s",
              flush=True)
        store.load_panel("synthetic", symbols[:10], "1d")  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            panel = store.load_panel("synthetic", symbols, "1d")
            times.append(time.perf_counter() - t0)
        assert panel.close.shape == (args.bars, args.symbols)
        del panel
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        panel = store.load_panel("synthetic", symbols, "1d")
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    med = statistics.median(times)
    print(f"load_panel: median {med:.3f} s over {args.repeat} runs; peak +{peak / 2**20:.0f} MiB; "
          f"panel {sum(a.nbytes for a in panel.bars().values()) / 2**20:.0f} MiB; "
          f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
