"""Benchmark: ``gpu-backtest data import`` of one long Parquet file holding a whole universe.

Writes N symbols × T daily synthetic bars (``core/synthetic.py``'s GBM bars, symbols
SYM0000…, columns timestamp, symbol, open, high, low, close, volume) to one Parquet file, then
runs the import command in a subprocess against a fresh data directory (or the market root
given) and prints its wall time and peak RSS (the child's ``ru_maxrss``).

    python bench/import_universe.py --symbols 2000 --bars 2520
    python bench/import_universe.py --symbols 20000 --bars 2520 --market-root s3://bucket/prefix
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_universe(path: Path, n_symbols: int, n_bars: int, chunk: int = 500) -> None:
    """The long file, written ``chunk`` symbols at a time (bounded memory at 20,000 symbols)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpu_backtest.core.synthetic import gbm_bars

    index = pd.bdate_range("2010-01-04", periods=n_bars, tz="UTC")
    writer = None
    try:
        for lo in range(0, n_symbols, chunk):
            symbols = [f"SYM{i:04d}" for i in range(lo, min(lo + chunk, n_symbols))]
            table = pa.Table.from_pandas(gbm_bars(symbols, index), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=2000)
    ap.add_argument("--bars", type=int, default=2520)
    ap.add_argument("--market-root", help="GPU_BACKTEST_MARKET_ROOT for the import (default: in the temp dir)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep the file and the store")
    args = ap.parse_args(argv)

    cli = str(Path(sys.executable).parent / "gpu-backtest")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"universe-{args.symbols}x{args.bars}.parquet"
        if not path.exists():
            t0 = time.perf_counter()
            write_universe(path, args.symbols, args.bars)
            print(f"wrote {path.name}: {args.symbols} symbols × {args.bars} bars, "
                  f"{path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s", flush=True)
        env = {**os.environ, "GPU_BACKTEST_DATA_DIR": str(work / "data"),
               "GPU_BACKTEST_MAX_UPLOAD_BYTES": str(path.stat().st_size + 1)}
        if args.market_root:
            env["GPU_BACKTEST_MARKET_ROOT"] = args.market_root
        t0 = time.perf_counter()
        r = subprocess.run([cli, "data", "import", str(path)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return r.returncode
    print(f"gpu-backtest data import: {args.symbols} symbols × {args.bars} bars in {wall:.1f} s; "
          f"peak RSS {rss:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
