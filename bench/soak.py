"""Soak benchmark: one server under a long mixed load — does it stay fast, and does its memory stay flat?

Starts ``gpu-backtest serve`` (127.0.0.1, a temporary data directory, a local Dask cluster)
and drives it with, at the same time:

- ``--small`` small jobs (one symbol, one SMA combination, 2,520 daily bars; default 2,000),
  ``--concurrency`` clients each submitting and then polling its job until it is final;
- ``--large`` large jobs (default 20: 20 symbols × 90 combinations each), spread evenly among
  the small ones;
- a poller listing ``GET /backtest?limit=50`` every 0.5 s;
- an uploader posting a ~1 MB CSV series every 5 s;
- an exporter downloading a finished large job's whole table as CSV every 5 s;
- a prober timing ``GET /health`` every 0.1 s.

Recorded: p50/p95 submit→result (POST sent → final document received) for small and large
jobs, the worst and p99 ``/health`` latency over the whole run (target < 100 ms), errors, and
the server process's RSS (and its whole process group's: the Dask workers) after every
``--every`` small jobs (target: flat after warm-up). Prints a table and writes ``--json``.

    python bench/soak.py                        # 2,000 small + 20 large jobs
    python bench/soak.py --small 400 --large 4  # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service import start_server, stop_server

FINAL = ("succeeded", "failed", "cancelled")
DEMO = [f"SYN{i:03d}" for i in range(20)]


def small_spec(i: int) -> dict[str, Any]:
    return {"strategy": "sma_crossover", "symbols": [DEMO[i % 20]],
            "params": {"fast": 5 + i % 20, "slow": 30 + 5 * ((i // 20) % 30)}}


def large_spec(i: int) -> dict[str, Any]:
    return {"strategy": "sma_crossover", "symbols": DEMO,
            "params": {"fast": {"start": 5, "stop": 50, "step": 5}, "slow": {"start": 20 + i % 3, "stop": 200,
                                                                            "step": 20}},
            "output": {"top_k": 3}}


@dataclass
class Run:
    url: str
    small_latency: list[float] = field(default_factory=list)
    large_latency: list[float] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    rss: list[dict[str, Any]] = field(default_factory=list)
    done_small: int = 0
    large_done: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def one_job(http: aiohttp.ClientSession, run: Run, spec: dict[str, Any], large: bool) -> None:
    t0 = time.perf_counter()
    async with http.post(f"{run.url}/backtest", json=spec) as resp:
        if resp.status != 202:
            run.error(f"submit {resp.status}")
            return
        job_id = (await resp.json())["job_id"]
    while True:
        async with http.get(f"{run.url}/backtest/{job_id}", params={"view": "status"}) as resp:
            doc = await resp.json()
        if doc.get("status") in FINAL:
            break
        await asyncio.sleep(0.1 if not large else 0.5)
    if doc["status"] != "succeeded":
        run.error(f"job {doc['status']}")
        return
    (run.large_latency if large else run.small_latency).append(time.perf_counter() - t0)
    if large:
        run.large_done.append(job_id)


def sample_rss(pid: int) -> tuple[float, float]:
    """(server RSS, RSS of the server and all its descendants) in MiB."""
    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    total = own
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return own / 2**20, total / 2**20


async def prober(http: aiohttp.ClientSession, run: Run) -> None:
    while not run.stop.is_set():
        t0 = time.perf_counter()
        try:
            async with http.get(f"{run.url}/health") as resp:
                await resp.read()
            run.health.append(time.perf_counter() - t0)
        except aiohttp.ClientError:
            run.error("health")
        await asyncio.sleep(0.1)


async def lister(http: aiohttp.ClientSession, run: Run) -> None:
    while not run.stop.is_set():
        async with http.get(f"{run.url}/backtest", params={"limit": "50"}) as resp:
            if resp.status != 200:
                run.error(f"list {resp.status}")
            await resp.read()
        await asyncio.sleep(0.5)


def _csv_payload(n_bars: int = 12_000, seed: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("1980-01-01", periods=n_bars, freq="B")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_bars)))
    frame = pd.DataFrame({"date": idx.strftime("%Y-%m-%d"), "open": close, "high": close * 1.01,
                          "low": close * 0.99, "close": close, "volume": rng.integers(1000, 10_000, n_bars)})
    return frame.to_csv(index=False).encode()


async def uploader(http: aiohttp.ClientSession, run: Run, source: str) -> None:
    payload = _csv_payload()
    i = 0
    while not run.stop.is_set():
        form = aiohttp.FormData()
        form.add_field("symbol", f"SOAK{i % 10}")
        form.add_field("source", source)
        form.add_field("file", payload, filename="soak.csv", content_type="text/csv")
        async with http.post(f"{run.url}/data/upload", data=form) as resp:
            if resp.status not in (200, 201):
                run.error(f"upload {resp.status}")
            await resp.read()
        i += 1
        await asyncio.sleep(5)


async def exporter(http: aiohttp.ClientSession, run: Run) -> None:
    while not run.stop.is_set():
        if run.large_done:
            async with http.get(f"{run.url}/backtest/{run.large_done[-1]}/results",
                                params={"format": "csv"}) as resp:
                body = await resp.read()
                if resp.status != 200 or len(pd.read_csv(io.BytesIO(body))) == 0:
                    run.error(f"export {resp.status}")
        await asyncio.sleep(5)


async def drive(url: str, pid: int, n_small: int, n_large: int, concurrency: int, every: int,
                source: str) -> Run:
    run = Run(url)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        background = [asyncio.create_task(f) for f in (prober(http, run), lister(http, run),
                                                        uploader(http, run, source), exporter(http, run))]
        large_at = set(np.linspace(0, n_small - 1, n_large, dtype=int).tolist()) if n_large else set()
        queue: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
        for i in range(n_small):
            if i in large_at:
                queue.put_nowait((i, True))
            queue.put_nowait((i, False))
        own, total = sample_rss(pid)
        run.rss.append({"jobs": 0, "server_mib": round(own, 1), "group_mib": round(total, 1)})

        async def client() -> None:
            while not queue.empty():
                i, large = queue.get_nowait()
                await one_job(http, run, large_spec(i) if large else small_spec(i), large)
                if not large:
                    run.done_small += 1
                    if run.done_small % every == 0:
                        own, total = sample_rss(pid)
                        run.rss.append({"jobs": run.done_small, "server_mib": round(own, 1),
                                        "group_mib": round(total, 1)})
                        print(f"  {run.done_small:>5} jobs: server RSS {own:7.1f} MiB, with workers {total:7.1f} MiB",
                              flush=True)

        await asyncio.gather(*[client() for _ in range(concurrency)])
        run.stop.set()
        await asyncio.gather(*background, return_exceptions=True)
    return run


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--every", type=int, default=200, help="record RSS after every N small jobs")
    ap.add_argument("--source", default="soak", help="the upload collection the uploader writes")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gbt-soak-") as tmp:
        log = Path(tmp) / "server.log"
        proc, url = start_server(tmp, None, "cpu", log)
        t0 = time.perf_counter()
        try:
            run = asyncio.run(drive(url, proc.pid, args.small, args.large, args.concurrency, args.every,
                                    args.source))
        finally:
            wall = time.perf_counter() - t0
            log_lines = len(log.read_text(errors="replace").splitlines())
            stop_server(proc)
    result = {
        "small_jobs": len(run.small_latency), "large_jobs": len(run.large_latency), "wall_s": round(wall, 1),
        "small_p50_s": round(pct(run.small_latency, 50), 3), "small_p95_s": round(pct(run.small_latency, 95), 3),
        "large_p50_s": round(pct(run.large_latency, 50), 3), "large_p95_s": round(pct(run.large_latency, 95), 3),
        "health_worst_ms": round(1000 * max(run.health, default=float("nan")), 1),
        "health_p99_ms": round(1000 * pct(run.health, 99), 1),
        "health_median_ms": round(1000 * statistics.median(run.health), 1) if run.health else None,
        "health_probes": len(run.health), "errors": run.errors, "rss": run.rss, "server_log_lines": log_lines,
        "cpus": os.cpu_count(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rss"}, indent=1))
    print("RSS after N small jobs (MiB):")
    for r in run.rss:
        print(f"  {r['jobs']:>5}  server {r['server_mib']:8.1f}   with workers {r['group_mib']:8.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
