"""Benchmark: the HTTP service under N concurrent clients submitting small backtests.

Each submission is a single-symbol, single-combination SMA-crossover backtest on 2,520 daily
synthetic bars (2010-01-01 … 2019-08-29); each is distinct (``--distinct params``: one of the
20 pre-warmed demo symbols with its own (fast, slow); ``--distinct symbols``: a new symbol
per job, so the data is generated and stored during the job). Each client submits, then polls
``GET /backtest/{id}`` every ``--poll`` seconds until the job is final. Reported: requests/s,
jobs/s, errors, and the p50/p95/p99 submit-to-result latency (POST sent → final job document
received), with the server's own timings (queue wait, run time, engine time) to show where the
time goes.

By default it starts a server itself (``gpu-backtest serve`` on 127.0.0.1, a temporary data
directory, the server's default MAX_CONCURRENT_JOBS=10 unless ``--max-concurrent-jobs``);
``--url`` points it at a running one on this machine instead (loopback addresses only); every
wait is bounded.

    python bench/service.py                          # 200 submissions, 50 at a time
    python bench/service.py --n 50 --concurrency 1   # unloaded latency, one job at a time
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gpu_backtest.core.jobstatus import FINAL_STATUSES, SUCCEEDED

START, END, N_BARS = "2010-01-01", "2019-08-29", 2520
DEMO = [f"SYN{i:03d}" for i in range(20)]
FINAL = FINAL_STATUSES


def spec_for(i: int, distinct: str, lean: bool = False) -> dict[str, Any]:
    """The i-th submission: one symbol, one (fast, slow) combination, 2,520 daily bars.

    ``lean``: no equity curve and no trades in the result (only the metrics)."""
    fast, slow = 5 + i % 20, 30 + 5 * (i // 20)
    symbol = DEMO[i % len(DEMO)] if distinct == "params" else f"BENCH{i:05d}"
    spec: dict[str, Any] = {"strategy": "sma_crossover", "source": "synthetic", "symbols": [symbol], "start": START,
                            "end": END, "params": {"fast": fast, "slow": slow}}
    if lean:
        spec["output"] = {"equity_curves": False, "trades": False}
    return spec


@dataclass
class Outcome:
    latency: float | None = None
    status: str | None = None
    error: str | None = None
    requests: int = 0
    polls: int = 0
    server: dict[str, float] = field(default_factory=dict)


def _ts(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s).timestamp()


async def one_job(http: aiohttp.ClientSession, url: str, spec: dict[str, Any], poll: float,
                  timeout: float) -> Outcome:
    out = Outcome()
    t0 = time.perf_counter()
    deadline = t0 + timeout
    try:
        async with http.post(f"{url}/backtest", json=spec) as resp:
            out.requests += 1
            body = await resp.json()
            if resp.status != 202:
                out.error = f"submit {resp.status} {body.get('error', {}).get('code')}"
                return out
        job_id = body["job_id"]
        while True:
            if time.perf_counter() > deadline:
                out.error = "timeout"
                return out
            await asyncio.sleep(poll)
            async with http.get(f"{url}/backtest/{job_id}") as resp:
                out.requests += 1
                out.polls += 1
                doc = await resp.json()
                if resp.status != 200:
                    out.error = f"poll {resp.status}"
                    return out
            if doc["status"] in FINAL:
                break
        out.latency = time.perf_counter() - t0
        out.status = doc["status"]
        if doc["status"] != SUCCEEDED:
            out.error = f"job {doc['status']}: {(doc.get('error') or {}).get('code')}"
            return out
        info = doc["info"]
        if info["n_bars"] != N_BARS or info["n_columns"] != 1:
            out.error = f"unexpected shape {info['n_bars']} bars × {info['n_columns']} columns"
        created, started, finished = (_ts(doc["timings"][k]) for k in ("created_at", "started_at", "finished_at"))
        out.server = {"queue_s": started - created, "run_s": finished - started, "engine_s": info["elapsed_s"],
                      "server_total_s": finished - created}
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:200]
    return out


async def run_load(url: str, n: int, concurrency: int, poll: float, distinct: str, timeout: float,
                   offset: int = 0, lean: bool = False) -> tuple[list[Outcome], float]:
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as http:

        async def guarded(i: int) -> Outcome:
            async with sem:
                return await one_job(http, url, spec_for(offset + i, distinct, lean), poll, timeout)

        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(guarded(i) for i in range(n)))
        return list(outcomes), time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def report(outcomes: list[Outcome], wall: float, label: str) -> dict[str, Any]:
    lat = [o.latency for o in outcomes if o.latency is not None and o.error is None]
    errors = [o.error for o in outcomes if o.error]
    requests = sum(o.requests for o in outcomes)
    res: dict[str, Any] = {"label": label, "jobs": len(outcomes), "ok": len(lat), "errors": len(errors),
                           "wall_s": wall, "requests": requests, "requests_per_s": requests / wall,
                           "jobs_per_s": len(lat) / wall,
                           "polls_per_job": statistics.mean(o.polls for o in outcomes) if outcomes else 0}
    if lat:
        res.update({f"p{q}_ms": 1000 * pct(lat, q) for q in (50, 95, 99)})
        res["max_ms"] = 1000 * max(lat)
        for key in ("queue_s", "run_s", "engine_s", "server_total_s"):
            vals = [o.server[key] for o in outcomes if key in o.server]
            res[f"{key.removesuffix('_s')}_p50_ms"] = 1000 * statistics.median(vals)
        # what the client waited beyond the server's own created→finished span (HTTP, JSON, polling)
        res["client_overhead_p50_ms"] = 1000 * statistics.median(
            o.latency - o.server["server_total_s"] for o in outcomes if o.latency and "server_total_s" in o.server)
    if errors:
        res["error_kinds"] = dict(sorted({e: errors.count(e) for e in set(errors)}.items())[:10])
    print(f"\n== {label}: {res['jobs']} jobs, {res['ok']} ok, {res['errors']} errors in {wall:.2f} s")
    print(f"   {res['requests_per_s']:.1f} requests/s ({requests} requests), {res['jobs_per_s']:.2f} jobs/s, "
          f"{res['polls_per_job']:.1f} polls/job")
    if lat:
        print(f"   submit-to-result latency: p50 {res['p50_ms']:.0f} ms, p95 {res['p95_ms']:.0f} ms, "
              f"p99 {res['p99_ms']:.0f} ms, max {res['max_ms']:.0f} ms")
        print(f"   server (p50): queue {res['queue_p50_ms']:.0f} ms, run {res['run_p50_ms']:.0f} ms "
              f"(engine {res['engine_p50_ms']:.0f} ms), created→finished {res['server_total_p50_ms']:.0f} ms; "
              f"client overhead (HTTP + polling) {res['client_overhead_p50_ms']:.0f} ms")
    if errors:
        print(f"   errors: {res['error_kinds']}")
    return res


# -- the server ------------------------------------------------------------------------------
def _loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: str, max_jobs: int | None, backend: str | None, log_path: Path
                 ) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DASK_SCHEDULER_ADDRESS",
                                                             "API_KEY_REQUIRED", "MAX_CONCURRENT_JOBS")}
    env.update({"GPU_SERVER_HOST": "127.0.0.1", "GPU_SERVER_PORT": str(port), "GPU_BACKTEST_DATA_DIR": data_dir,
                "GPU_SERVER_DEBUG": "false"})
    if max_jobs is not None:
        env["MAX_CONCURRENT_JOBS"] = str(max_jobs)
    if backend is not None:
        env["GPU_BACKTEST_BACKEND"] = backend
    cli = str(Path(sys.executable).parent / "gpu-backtest")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([cli, "serve", "--dashboard", ":0"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise SystemExit(f"the server did not start; its log ({log_path}):\n" + log_path.read_text()[-3000:])


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # Dask processes left in the group
    proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running server (default: start one on 127.0.0.1)")
    ap.add_argument("--n", type=int, default=200, help="submissions (default 200)")
    ap.add_argument("--concurrency", type=int, default=50, help="clients at once (default 50)")
    ap.add_argument("--poll", type=float, default=0.02, help="seconds between status polls (default 0.02)")
    ap.add_argument("--warmup", type=int, default=3, help="jobs run one by one first, not counted (default 3)")
    ap.add_argument("--distinct", choices=["params", "symbols"], default="params",
                    help="what makes each job distinct (default params on the warm demo symbols)")
    ap.add_argument("--lean", action="store_true",
                    help="ask for metrics only (output.equity_curves and output.trades false)")
    ap.add_argument("--max-concurrent-jobs", type=int, default=None,
                    help="MAX_CONCURRENT_JOBS of the started server (default: the server's, 10)")
    ap.add_argument("--backend", choices=["auto", "cpu", "cuda"], default=None,
                    help="GPU_BACKTEST_BACKEND of the started server (default: inherited)")
    ap.add_argument("--timeout", type=float, default=300, help="per-job limit in seconds (default 300)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    if not (0 < args.n <= 100_000 and 0 < args.concurrency <= 1000 and args.poll > 0):
        ap.error("need 0 < n <= 100000, 0 < concurrency <= 1000, poll > 0")

    proc = None
    tmp = tempfile.TemporaryDirectory(prefix="gbt-bench-")
    try:
        if args.url:
            url = args.url.rstrip("/")
            if not _loopback(url):
                ap.error(f"--url must be a loopback address (127.0.0.1, ::1, localhost), got {url}")
        else:
            proc, url = start_server(tmp.name + "/data", args.max_concurrent_jobs, args.backend,
                                     Path(tmp.name) / "server.log")
            print(f"server: {url} (pid {proc.pid}, data {tmp.name}/data, "
                  f"MAX_CONCURRENT_JOBS={args.max_concurrent_jobs or 'default'})")
        results = {"settings": vars(args)}
        if args.warmup:
            warm, wall = asyncio.run(run_load(url, args.warmup, 1, args.poll, args.distinct, args.timeout,
                                              offset=args.n, lean=args.lean))
            results["warmup"] = report(warm, wall, "warm-up (one at a time, first includes compile)")
            if warm and warm[0].latency is not None:
                print(f"   first job: {1000 * warm[0].latency:.0f} ms")
        outcomes, wall = asyncio.run(run_load(url, args.n, args.concurrency, args.poll, args.distinct, args.timeout,
                                              lean=args.lean))
        results["load"] = report(outcomes, wall, f"{args.n} submissions, concurrency {args.concurrency}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0 if results["load"]["errors"] == 0 else 1
    finally:
        if proc is not None:
            stop_server(proc)
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
