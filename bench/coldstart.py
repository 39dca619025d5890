"""Benchmark: a fresh server's first job — from its "serving on" line to the README curl block's result.

Starts ``gpu-backtest serve`` as a subprocess (its own process group) on a free port with a
temporary data directory, waits for the "serving on" log line, then runs the README's request
sequence (POST /backtest the sma_crossover sweep, long-poll ``?view=status&wait=30`` until the
job is final, GET the job, GET ``/results?limit=3&format=csv``) over plain HTTP like the curl
block does, and prints the seconds from "serving on" to the CSV.

Each start is a fresh data directory. The numba cache: by default a fresh temporary directory
given as ``NUMBA_CACHE_DIR`` (the first start compiles from nothing: a fresh install), kept for
the following starts (a second start finds the cache on disk); ``--numba-cache DIR`` names one,
``--numba-cache server`` leaves NUMBA_CACHE_DIR unset so the server picks its own default.

    python bench/coldstart.py                       # cold start, then one warm start
    python bench/coldstart.py --starts 3 --json
    python bench/coldstart.py --env GPU_BACKTEST_WARMUP=0   # without the background warm-up
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

SPEC = {"strategy": "sma_crossover", "params": {"fast": [5, 10, 20], "slow": {"start": 50, "stop": 200, "step": 50}}}
FINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 120) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def readme_sequence(base: str) -> dict[str, Any]:
    """The README curl block's requests, in order; returns the job document and the CSV page."""
    job = json.loads(http("POST", f"{base}/backtest", SPEC))["job_id"]
    while json.loads(http("GET", f"{base}/backtest/{job}?view=status&wait=30"))["status"] not in FINAL:
        pass
    doc = json.loads(http("GET", f"{base}/backtest/{job}"))
    csv = http("GET", f"{base}/backtest/{job}/results?limit=3&format=csv").decode()
    return {"job": doc, "csv": csv}


class Server:
    """``gpu-backtest serve`` with its log lines timestamped as they arrive."""

    def __init__(self, cli: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**env, "GPU_SERVER_PORT": str(self.port)}
        self.lines: list[tuple[float, str]] = []
        self.serving = threading.Event()
        self.t_spawn = time.monotonic()
        self.proc = subprocess.Popen([cli, "serve", "--dashboard", ":0"], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append((time.monotonic(), line))
            if "serving on http://" in line:
                self.serving.set()

    def when(self, text: str) -> float | None:
        return next((t for t, line in self.lines if text in line), None)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def one_start(cli: str, env: dict[str, str], data_dir: Path, wait_warmup: bool = False,
              show_log: bool = False) -> dict[str, Any]:
    srv = Server(cli, {**env, "GPU_BACKTEST_DATA_DIR": str(data_dir)})
    try:
        deadline = time.monotonic() + 180
        while not srv.serving.wait(0.2) and time.monotonic() < deadline and srv.proc.poll() is None:
            pass
        if not srv.serving.is_set():
            raise SystemExit("no 'serving on' line after 180 s:\n" + "\n".join(line for _, line in srv.lines[-30:]))
        t_serving = srv.when("serving on http://")
        assert t_serving is not None
        if wait_warmup:  # a second measurement: the first job after the warm-up has finished
            deadline = time.monotonic() + 300
            while srv.when("warm-up done") is None and time.monotonic() < deadline:
                time.sleep(0.1)
        t0 = time.monotonic()
        out = readme_sequence(f"http://127.0.0.1:{srv.port}")
        t_result = time.monotonic()
        warm = srv.when("warm-up done")
        warm_line = next((line for _, line in srv.lines if "warm-up done" in line), None)
        return {
            "spawn_to_serving_s": round(t_serving - srv.t_spawn, 3),
            "serving_to_result_s": round(t_result - t_serving, 3),
            "first_request_to_result_s": round(t_result - t0, 3),
            "status": out["job"]["status"],
            "run_s": (out["job"].get("timings") or {}).get("run_s"),
            "warmup_done_after_serving_s": None if warm is None else round(warm - t_serving, 3),
            "warmup_line": warm_line,
            "csv_rows": len([ln for ln in out["csv"].splitlines() if ln[:1].isdigit()]),
        }
    finally:
        srv.stop()
        if show_log:
            print("\n".join(f"{t - srv.t_spawn:8.2f} {line}" for t, line in srv.lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=2, help="server starts (the first on a cold numba cache)")
    ap.add_argument("--numba-cache", default="", help="NUMBA_CACHE_DIR for every start ('server': leave unset); "
                                                      "default: a fresh temporary directory")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server (repeatable)")
    ap.add_argument("--after-warmup", action="store_true",
                    help="send the first request only once the server logged 'warm-up done'")
    ap.add_argument("--cli", default=str(Path(sys.executable).parent / "gpu-backtest"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--show-log", action="store_true", help="print each server's log after its run")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="gbt-coldstart-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_", "DASK_", "NUMBA_")) and k != "DATABASE_URL"}
    env.update({"GPU_SERVER_HOST": "127.0.0.1", "GPU_BACKTEST_BACKEND": "cpu", "GPU_SERVER_DEBUG": "false",
                "PYTHONUNBUFFERED": "1", "HOME": str(tmp / "home")})
    if args.numba_cache != "server":
        env["NUMBA_CACHE_DIR"] = args.numba_cache or str(tmp / "numba-cache")
    for kv in args.env:
        key, _, value = kv.partition("=")
        env[key] = value
    results = []
    try:
        for i in range(args.starts):
            r = one_start(args.cli, env, tmp / f"data-{i}", args.after_warmup, args.show_log)
            r["start"] = i + 1
            results.append(r)
            if not args.json:
                print(f"start {i + 1}: serving on → README result {r['serving_to_result_s']:.2f} s "
                      f"(spawn → serving on {r['spawn_to_serving_s']:.2f} s, job run_s {r['run_s']}, "
                      f"status {r['status']}, warm-up done {r['warmup_done_after_serving_s']} s after serving on)",
                      flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
