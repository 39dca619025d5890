"""Benchmark: one Parquet file per symbol vs one file per bucket of symbols, at 20,000 symbols.

Reads a store filled with per-symbol files (e.g. by ``bench/import_universe.py --keep DIR``:
``DIR/data/market/upload/1d/symbol=*/bars-<hash>.parquet``, the newest file of each), writes the
same bars as bucket files of ``--bucket`` symbols (one row group per symbol, sorted by symbol and time, zstd without
dictionary, as the store writes), then times, warm page cache, median of ``--repeat``:

- a partition of ``--partition`` consecutive symbols: per-symbol files through
  `read_symbol_arrays` on the store's thread pool, vs the one bucket file that holds them;
- the same number of symbols scattered over the universe (every 40th): per-symbol files, vs
  the row groups of those symbols from every bucket;
- the whole universe: every per-symbol file vs every bucket file (on the same thread pool).

    python bench/layout.py /tmp/bench/u20000/data/market --source upload --bucket 500 --partition 500
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="the store's root directory")
    ap.add_argument("--source", default="upload")
    ap.add_argument("--frequency", default="1d")
    ap.add_argument("--bucket", type=int, default=500)
    ap.add_argument("--partition", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--s3", action="store_true",
                    help="also: the partition read from a local moto S3 server (tests/s3_server.py)")
    args = ap.parse_args(argv)

    from gpu_backtest.core.marketdata import IO_THREADS, PARQUET_OPTIONS, read_many, read_symbol_arrays
    from gpu_backtest.core.storage import write_table

    root = Path(args.root)
    series_dir = root / args.source / args.frequency
    symbols = sorted(p.name.removeprefix("symbol=") for p in series_dir.glob("symbol=*"))
    # each series' current version: the newest file of its directory (the store's catalog names it)
    files = {s: max((series_dir / f"symbol={s}").glob("bars*.parquet"), key=lambda p: p.stat().st_mtime).name
             for s in symbols}
    n = len(symbols)
    print(f"{n} symbols under {series_dir}; {IO_THREADS} I/O threads", flush=True)

    # the bucket layout, built from the per-symbol files
    bucket_dir = root.parent / f"buckets-{args.bucket}"
    buckets = [symbols[i:i + args.bucket] for i in range(0, n, args.bucket)]
    bucket_files = [bucket_dir / f"bucket={b:05d}" / "bars.parquet" for b in range(len(buckets))]
    if not all(f.exists() for f in bucket_files):
        t0 = time.perf_counter()
        for names, path in zip(buckets, bucket_files, strict=True):
            tables = []
            for s in names:
                t = pq.read_table(series_dir / f"symbol={s}" / files[s])
                tables.append(t.append_column("symbol", pa.array([s] * len(t), pa.string())))
            rows = len(tables[0])
            write_table(str(path), pa.concat_tables(tables), row_group_size=rows, **PARQUET_OPTIONS)
        print(f"wrote {len(bucket_files)} bucket files in {time.perf_counter() - t0:.1f} s", flush=True)
    size_sym = sum((series_dir / f"symbol={s}" / f).stat().st_size for s, f in files.items())
    size_bkt = sum(p.stat().st_size for p in bucket_files)
    print(f"bytes: per-symbol {size_sym / 2**20:.0f} MiB, buckets {size_bkt / 2**20:.0f} MiB")

    def read_bucket(path: Path, wanted: set[str] | None = None) -> dict[str, tuple[np.ndarray, dict]]:
        pf = pq.ParquetFile(path)
        if wanted is None:
            table = pf.read()
        else:  # only the row groups of the wanted symbols (one row group per symbol)
            groups = [i for i in range(pf.num_row_groups)
                      if pf.metadata.row_group(i).column(pf.schema_arrow.get_field_index("symbol"))
                      .statistics.min in wanted]
            table = pf.read_row_groups(groups) if groups else None
            if table is None:
                return {}
        sym = table.column("symbol")
        out = {}
        ts_all = table.column("timestamp").cast(pa.timestamp("ns", tz="UTC")).to_numpy().astype("datetime64[ns]")
        ts_all = ts_all.view(np.int64)
        # rows are sorted by symbol: cut at the boundaries
        starts = np.flatnonzero(np.concatenate([[True], pc.not_equal(sym[1:], sym[:-1]).to_numpy(
            zero_copy_only=False)])) if len(sym) else np.array([], int)
        ends = np.append(starts[1:], len(sym))
        cols = {f: table.column(f).to_numpy() for f in ("open", "high", "low", "close", "volume")}
        for a, b in zip(starts, ends, strict=True):
            out[sym[int(a)].as_py()] = (ts_all[a:b], {f: v[a:b] for f, v in cols.items()})
        return out

    def many_buckets(paths: list[Path], wanted: set[str] | None = None) -> dict:
        with ThreadPoolExecutor(max_workers=max(1, min(IO_THREADS, len(paths)))) as pool:
            out: dict = {}
            for part in pool.map(lambda p: read_bucket(p, wanted), paths):
                out.update(part)
        return out

    part = symbols[: args.partition]
    scattered = symbols[:: max(1, n // args.partition)][: args.partition]
    rows = []

    t = median_time(lambda: read_many(str(root), args.source, args.frequency, part, None, None, True,
                                      files=[files[s] for s in part]), args.repeat)
    rows.append((f"{len(part)} consecutive symbols", "per-symbol files", len(part), t))
    t = median_time(lambda: read_bucket(bucket_files[0]), args.repeat)
    rows.append((f"{len(part)} consecutive symbols", f"1 bucket file of {args.bucket}", 1, t))
    t = median_time(lambda: read_many(str(root), args.source, args.frequency, scattered, None, None, True,
                                      files=[files[s] for s in scattered]),
                    args.repeat)
    rows.append((f"{len(scattered)} scattered symbols", "per-symbol files", len(scattered), t))
    t = median_time(lambda: many_buckets(bucket_files, set(scattered)), args.repeat)
    rows.append((f"{len(scattered)} scattered symbols", f"their row groups in {len(bucket_files)} buckets",
                 len(bucket_files), t))
    t = median_time(lambda: read_many(str(root), args.source, args.frequency, symbols, None, None, True,
                                      files=[files[s] for s in symbols]),
                    args.repeat)
    rows.append((f"all {n} symbols", "per-symbol files", n, t))
    t = median_time(lambda: many_buckets(bucket_files), args.repeat)
    rows.append((f"all {n} symbols", f"{len(bucket_files)} bucket files", len(bucket_files), t))
    # one symbol alone (what an incremental fetch rewrites, what a worker reads for a symbol)
    t = median_time(lambda: read_symbol_arrays(str(root), args.source, args.frequency, symbols[0], None, None,
                                               True, files[symbols[0]]), args.repeat)
    rows.append(("1 symbol", "per-symbol file", 1, t))
    t = median_time(lambda: read_bucket(bucket_files[0], {symbols[0]}), args.repeat)
    rows.append(("1 symbol", "its row group in a bucket file", 1, t))

    if args.s3:
        rows += s3_rows(root, series_dir, part, bucket_files[0], args, read_bucket, files)

    print("| read | layout | files | median time |\n|---|---|---|---|")
    for what, layout, files, secs in rows:
        print(f"| {what} | {layout} | {files:,} | {secs:.3f} s |")
    return 0


def s3_rows(root: Path, series_dir: Path, part: list[str], bucket_file: Path, args: argparse.Namespace,
            read_bucket, files: dict[str, str]) -> list[tuple[str, str, int, float]]:
    """The consecutive partition from a moto S3 server on 127.0.0.1: every request is a real HTTP
    round trip (on loopback; a remote store adds its latency to each)."""
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from s3_server import moto_s3

    from gpu_backtest.core import storage
    from gpu_backtest.core.marketdata import IO_THREADS, read_many

    with moto_s3(prefix="market") as srv:
        def put(sym: str) -> None:
            key = f"{args.source}/{args.frequency}/symbol={sym}/{files[sym]}"
            data = (series_dir / f"symbol={sym}" / files[sym]).read_bytes()
            storage.write_bytes(storage.join(srv.uri, key), data)

        with ThreadPoolExecutor(IO_THREADS) as pool:
            list(pool.map(put, part))
        bucket_uri = storage.join(srv.uri, "buckets", "bucket=00000", "bars.parquet")
        storage.write_bytes(bucket_uri, bucket_file.read_bytes())

        def s3_bucket() -> None:
            local = root.parent / ".s3-bucket.parquet"
            local.write_bytes(storage.read_bytes(bucket_uri))
            read_bucket(local)

        t_sym = median_time(lambda: read_many(srv.uri, args.source, args.frequency, part, None, None, True,
                                              files=[files[s] for s in part]),
                            args.repeat)
        t_bkt = median_time(s3_bucket, args.repeat)
    return [(f"{len(part)} consecutive symbols, moto S3", "per-symbol objects", len(part), t_sym),
            (f"{len(part)} consecutive symbols, moto S3", f"1 bucket object of {args.bucket}", 1, t_bkt)]


if __name__ == "__main__":
    sys.exit(main())
