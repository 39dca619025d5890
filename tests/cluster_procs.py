"""A real external Dask cluster for tests: ``dask scheduler`` and ``dask worker`` processes
started from their commands on loopback, and a ``gpu-backtest serve`` process pointed at it.

Every wait is bounded; every process is killed (its whole group) at exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("ab")
    return subprocess.Popen(args, env=dict(env), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process group: ``sig``, then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@dataclass
class ExternalCluster:
    """Scheduler + workers as processes; ``address`` is the scheduler's."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def close(self) -> None:
        for w in self.workers:
            stop(w)
        stop(self.scheduler)


@contextlib.contextmanager
def external_cluster(env: Mapping[str, str], logs: Path, n_workers: int = 2,
                     nthreads: int = 1) -> Iterator[ExternalCluster]:
    """`dask scheduler` + ``n_workers`` `dask worker` processes (each with a nanny) on loopback."""
    from distributed import Client

    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched = _spawn([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                    "--no-dashboard"], env, logs / "scheduler.log")
    cluster = ExternalCluster(address, sched)
    try:
        for i in range(n_workers):
            cluster.workers.append(_spawn(
                [str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads", str(nthreads),
                 "--nworkers", "1", "--name", f"w{i}", "--no-dashboard", "--memory-limit", "4GiB"],
                env, logs / f"worker{i}.log"))
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=90)
        yield cluster
    finally:
        cluster.close()


@dataclass
class Server:
    """A `gpu-backtest serve` process; ``url`` is its base URL."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
                return resp.status, json.loads(raw) if "json" in ctype else raw
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_final(self, job_id: str, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, doc = self.request("GET", f"/backtest/{job_id}")
            if status == 200 and doc["status"] in ("succeeded", "failed", "cancelled"):
                return doc
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} not final after {timeout} s; log:\n{self.log.read_text()[-3000:]}")


@contextlib.contextmanager
def server(env: Mapping[str, str], log: Path, timeout: float = 90) -> Iterator[Server]:
    """`gpu-backtest serve` on a free loopback port with ``env``; yields once /health answers."""
    port = free_port()
    full = {**env, "GPU_SERVER_HOST": "127.0.0.1", "GPU_SERVER_PORT": str(port)}
    proc = _spawn([str(BIN / "gpu-backtest"), "serve"], full, log)
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if srv.request("GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield srv
    finally:
        stop(proc)
