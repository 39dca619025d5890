"""Benchmark: a whole-universe SMA sweep from the store through the service (issue 11).

For each ``--symbols`` size N: N symbols × ``--bars`` daily synthetic bars (seeded GBM,
symbols SYM0000…, as ``core.synthetic.gbm_panel_frame``) are written to ONE long Parquet file
and imported with ``gpu-backtest data import <file> --source <source>`` (a subprocess: wall
time and peak RSS). Then a Dask cluster of separate processes is started on 127.0.0.1 — ``dask
scheduler`` and ``--workers`` × ``dask worker --nworkers 1`` — and ``gpu-backtest serve``
connected to it (``DASK_SCHEDULER_ADDRESS``), all with the same data directory and
``GPU_BACKTEST_BACKEND``. After a warm-up (two small sweeps per worker at once, on two symbols:
they compile or load the kernels in the server and in every worker) one sweep is submitted
over HTTP: ``sma_crossover``, fast 5..50 step 5 ×
slow 20..200 step 20 with fast < slow (90 combinations), on every stored symbol of the source
(N × 90 columns), close fills, fractional units; metrics total_return, sharpe, max_drawdown,
ranked by sharpe, top 5. Reported per size:

- wall time POST → final job document (polled every ``--poll`` s), bar-simulations per second
  (bars × columns ÷ that wall time), and the job's own timings (queue, run, engine, chunks);
- the server's RSS above its idle level (idle: median RSS over ``--settle`` s after the
  warm-up; above idle: peak during the job minus idle), each worker process's peak RSS, the
  scheduler's peak RSS (psutil, sampled every 0.1 s);
- bytes through the scheduler: every byte the scheduler process received or sent on its TCP
  connections (Dask comms) from POST to final, counted inside it by a ``--preload`` module
  that wraps tornado's ``IOStream.read_from_fd`` / ``write_to_fd`` (the calls every Dask TCP
  comm reads and writes through), split by peer (the server, each worker); the workers are
  counted the same way. (``rchar``/``wchar`` of ``/proc/<pid>/io`` do NOT see this traffic:
  they count read()/write()-family system calls, and sockets are read and written with
  recv_into()/send(); they are reported too, as file and pipe I/O of each process);
- CPU seconds of each process during the job, and the 1-minute load average before and after
  (the machine may be shared);
- that the table is readable (``GET /backtest/{id}/results?limit=10``) and the time to
  download the whole table as CSV (and the server's RSS during that download).

Every address is loopback; every wait is bounded; every process it started is stopped
(process groups) and the temporary directory is removed unless ``--keep``.

    python bench/universe.py --symbols 2000
    python bench/universe.py --symbols 2000 20000 --workers 2 --json universe.jsonl
    python bench/universe.py --symbols 2000 --keep            # keep data and logs
    python bench/universe.py --symbols 2000 --data-dir /tmp/gbt-universe-XXXX/n2000/data   # sweep only

The upload source is the default ``--source``: a spec can only name a registered data
source, so bars imported under another name cannot be selected by a spec (yet). The import
raises ``GPU_BACKTEST_MAX_UPLOAD_BYTES`` for its own process when the file is larger than the
default 100 MiB limit (the CLI import obeys the upload limit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

FINAL = ("succeeded", "failed", "cancelled")
METRICS = ["total_return", "sharpe", "max_drawdown"]
N_COMBOS = 90  # fast 5..50 step 5 × slow 20..200 step 20, fast < slow
MiB = 2**20
#: variables of the caller's environment that would point the processes elsewhere
SCRUB = ("DATABASE_URL", "DASK_SCHEDULER_ADDRESS", "API_KEY_REQUIRED", "MAX_CONCURRENT_JOBS",
         "GPU_BACKTEST_MARKET_ROOT", "GPU_BACKTEST_ARTIFACT_ROOT", "GPU_BACKTEST_MAX_UPLOAD_BYTES")


def spec(source: str, symbols: list[str] | None = None) -> dict[str, Any]:
    """The sweep (as bench/sweep.py's, top 5), on ``symbols`` or every stored symbol of ``source``."""
    doc: dict[str, Any] = {
        "strategy": "sma_crossover",
        "source": source,
        "params": {"fast": {"start": 5, "stop": 50, "step": 5}, "slow": {"start": 20, "stop": 200, "step": 20}},
        "execution": {"init_cash": 100_000, "fill": "close", "direction": "long", "fractional": True},
        "metrics": {"periods_per_year": 252},
        "output": {"metrics": METRICS, "rank_by": "sharpe", "top_k": 5},
    }
    if symbols is not None:
        doc["symbols"] = symbols
    return doc


def warmup_spec(source: str) -> dict[str, Any]:
    """The sweep on two symbols: compiles the kernels (same types and layouts) where it runs."""
    return spec(source, ["SYM0000", "SYM0001"])


def symbol_names(n: int) -> list[str]:
    """gbm_panel_frame's names: SYM0000 … (valid store symbols)."""
    return [f"SYM{i:04d}" for i in range(n)]


# -- the data file and the import ---------------------------------------------------------------
def write_universe(path: Path, n_symbols: int, n_bars: int, seed: int, block: int = 250) -> dict[str, Any]:
    """One long Parquet file (timestamp, symbol, OHLCV) with the bars of ``gbm_panel_frame(n_symbols,
    n_bars, seed)``, written ``block`` symbols at a time (one row group each) to bound memory."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpu_backtest.core.synthetic import gbm_bars

    t0 = time.perf_counter()
    index = pd.bdate_range("2010-01-04", periods=n_bars, tz="UTC")
    names = symbol_names(n_symbols)
    writer = None
    schema = None
    try:
        for i in range(0, n_symbols, block):
            table = pa.Table.from_pandas(gbm_bars(names[i:i + block], index, seed), preserve_index=False)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table.cast(schema))
    finally:
        if writer is not None:
            writer.close()
    return {"rows": n_symbols * n_bars, "file_bytes": path.stat().st_size, "write_s": time.perf_counter() - t0,
            "first": str(index[0].date()), "last": str(index[-1].date())}


def run_import(cli: str, path: Path, source: str, env: dict[str, str], log_path: Path,
               timeout: float) -> dict[str, Any]:
    """``gpu-backtest data import <path> --source <source>``: wall time and the child's peak RSS
    (``ru_maxrss`` of exactly that process, from ``wait4``)."""
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([cli, "data", "import", str(path), "--source", source], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the import did not finish within {timeout:.0f} s; its log: {log_path}")
            time.sleep(0.05)
    except BaseException:
        _kill_group(proc)
        raise
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the import failed (exit {proc.returncode}):\n" + log_path.read_text()[-3000:])
    return {"import_s": wall, "import_peak_rss_mib": usage.ru_maxrss / 1024}  # ru_maxrss: KiB on Linux


# -- processes ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the process group, wait (bounded), then SIGKILL what is left of the group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children left in the group (a nanny's worker)
    with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
        proc.wait(timeout=10)


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start; its log ({log_path}):\n" + log_path.read_text()[-3000:])


class Service:
    """scheduler + workers + server, as separate process groups; `stop` ends them all."""

    def __init__(self, workdir: Path, env: dict[str, str], workers: int, nthreads: int, memory_limit: str,
                 nanny: bool) -> None:
        self.workdir = workdir
        self.counters = workdir / "sockbytes"
        self.counters.mkdir()
        self.preload = workdir / "sockbytes_preload.py"
        self.preload.write_text(PRELOAD)
        self.env = {**env, "BENCH_SOCKBYTES_DIR": str(self.counters)}
        self.n_workers, self.nthreads, self.memory_limit, self.nanny = workers, nthreads, memory_limit, nanny
        self.procs: list[subprocess.Popen[bytes]] = []
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.server: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float) -> None:
        bindir = Path(sys.executable).parent
        port = _free_port()
        address = f"tcp://127.0.0.1:{port}"
        log = self.workdir / "scheduler.log"
        self.scheduler = _spawn([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                 "--no-dashboard", "--preload", str(self.preload)], self.env, log)
        self.procs.append(self.scheduler)
        _wait_port(port, self.scheduler, timeout, "the Dask scheduler", log)
        for i in range(self.n_workers):
            argv = [str(bindir / "dask"), "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                    "--nthreads", str(self.nthreads), "--memory-limit", self.memory_limit, "--no-dashboard",
                    "--name", f"bench-w{i}", "--local-directory", str(self.workdir / f"dask-w{i}"),
                    "--nanny" if self.nanny else "--no-nanny", "--preload", str(self.preload)]
            w = _spawn(argv, self.env, self.workdir / f"worker{i}.log")
            self.procs.append(w)
            self.workers.append(w)
        sport = _free_port()
        senv = {**self.env, "DASK_SCHEDULER_ADDRESS": address, "GPU_SERVER_HOST": "127.0.0.1",
                "GPU_SERVER_PORT": str(sport)}
        log = self.workdir / "server.log"
        self.server = _spawn([str(bindir / "gpu-backtest"), "serve"], senv, log)
        self.procs.append(self.server)
        self.url = f"http://127.0.0.1:{sport}"
        deadline = time.monotonic() + timeout
        while True:
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; its log ({log}):\n" + log.read_text()[-3000:])
            try:
                status = http_json("GET", f"{self.url}/gpu/status", timeout=10)
                if len((status.get("cluster") or {}).get("workers") or []) >= self.n_workers:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.3)

    def worker_pids(self) -> list[int | None]:
        """The pid of each worker process (the nanny's child when there is a nanny)."""
        out: list[int | None] = []
        for w in self.workers:
            if not self.nanny:
                out.append(w.pid)
                continue
            try:
                kids = [p for p in psutil.Process(w.pid).children(recursive=True)
                        if "spawn_main" in " ".join(p.cmdline())]
            except psutil.Error:
                kids = []
            out.append(kids[0].pid if kids else None)
        return out

    def stop(self) -> None:
        for p in reversed(self.procs):  # server first, then workers, scheduler last
            _kill_group(p)


# -- sampling -----------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """RSS of named pids every ``interval`` s: ``samples`` = [(t, {name: bytes})]."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            row = {}
            for name, p in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    row[name] = p.memory_info().rss
            self.samples.append((time.monotonic(), row))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def values(self, name: str, t0: float, t1: float) -> list[int]:
        return [row[name] for t, row in list(self.samples) if t0 <= t <= t1 and name in row]

    def peak(self, name: str, t0: float, t1: float) -> float:
        v = self.values(name, t0, t1)
        return max(v) / MiB if v else float("nan")

    def median(self, name: str, t0: float, t1: float) -> float:
        v = self.values(name, t0, t1)
        return statistics.median(v) / MiB if v else float("nan")


PRELOAD = '''"""bench/universe.py preload: count the bytes this Dask process moves over TCP (tornado IOStreams).

SIGUSR1 writes {"seq", "read", "written", "peers": {"host:port": [read, written]}} to
$BENCH_SOCKBYTES_DIR/<pid>.json (atomically)."""
import json
import os
import signal

from tornado.iostream import IOStream

# distributed may execute a preload file more than once: patch once, keep one set of counters
if not hasattr(IOStream, "_bench_counts"):
    IOStream._bench_counts = {"seq": 0, "read": 0, "written": 0, "peers": {}}
    IOStream._bench_orig = (IOStream.read_from_fd, IOStream.write_to_fd)
COUNTS = IOStream._bench_counts
_read, _write = IOStream._bench_orig


def _peer(stream):
    key = getattr(stream, "_bench_peer", None)
    if key is None:
        try:
            host, port = stream.socket.getpeername()[:2]
            key = f"{host}:{port}"
        except (OSError, AttributeError):
            return "?"
        stream._bench_peer = key
    return key


def read_from_fd(self, buf):
    n = _read(self, buf)
    if n:
        COUNTS["read"] += n
        COUNTS["peers"].setdefault(_peer(self), [0, 0])[0] += n
    return n


def write_to_fd(self, data):
    n = _write(self, data)
    if n:
        COUNTS["written"] += n
        COUNTS["peers"].setdefault(_peer(self), [0, 0])[1] += n
    return n


IOStream.read_from_fd = read_from_fd
IOStream.write_to_fd = write_to_fd


def dump(*_):
    COUNTS["seq"] += 1
    path = os.path.join(os.environ["BENCH_SOCKBYTES_DIR"], f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(COUNTS, fh)
    os.replace(path + ".tmp", path)


signal.signal(signal.SIGUSR1, dump)


def dask_setup(server):
    pass
'''


def sock_bytes(pid: int, directory: Path, timeout: float = 10) -> dict[str, Any]:
    """The socket counters of a preloaded Dask process (SIGUSR1, then its fresh dump)."""
    path = directory / f"{pid}.json"
    seq = -1
    with contextlib.suppress(OSError, ValueError):
        seq = json.loads(path.read_text())["seq"]
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(path.read_text())
            if doc["seq"] > seq:
                return doc
        time.sleep(0.02)
    raise SystemExit(f"no socket counters from pid {pid} (is the preload loaded?)")


def local_ports(pid: int) -> set[str]:
    """``host:port`` of the local end of each TCP connection of ``pid``."""
    try:
        return {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process(pid).net_connections("tcp") if c.laddr}
    except psutil.Error:
        return set()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def proc_io(pid: int) -> dict[str, int]:
    """rchar / wchar of ``/proc/<pid>/io``: bytes passed to read()/write()-family system calls
    (files, pipes, /proc; not socket recv()/send())."""
    out = {}
    with open(f"/proc/{pid}/io") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("rchar", "wchar"):
                out[k] = int(v)
    return out


# -- HTTP ---------------------------------------------------------------------------------------
def http_json(method: str, url: str, body: Any = None, timeout: float = 60) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {url}: HTTP {exc.code}: {exc.read()[:2000].decode(errors='replace')}") from None


def submit(url: str, doc: dict[str, Any]) -> str:
    return http_json("POST", f"{url}/backtest", doc)["job_id"]


def wait_final(url: str, job_id: str, poll: float, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = http_json("GET", f"{url}/backtest/{job_id}", timeout=60)
        if doc["status"] in FINAL:
            return doc
        if time.monotonic() > deadline:
            with contextlib.suppress(SystemExit, OSError):
                http_json("DELETE", f"{url}/backtest/{job_id}")
            raise SystemExit(f"job {job_id} not final after {timeout:.0f} s (last: {doc['status']}, "
                             f"progress {doc.get('progress')}); cancelled")
        time.sleep(poll)


def _ts(s: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(s).timestamp()


# -- one size -----------------------------------------------------------------------------------
def run_size(n_symbols: int, args: argparse.Namespace, base_env: dict[str, str], root: Path) -> dict[str, Any]:
    work = root / f"n{n_symbols}"
    work.mkdir()
    data_dir = Path(args.data_dir).resolve() if args.data_dir else work / "data"
    env = {**base_env, "GPU_BACKTEST_DATA_DIR": str(data_dir)}
    bindir = Path(sys.executable).parent
    res: dict[str, Any] = {"symbols": n_symbols, "bars": args.bars, "combinations": N_COMBOS,
                           "columns": n_symbols * N_COMBOS, "source": args.source, "workers": args.workers,
                           "nthreads": args.nthreads, "backend": args.backend}

    # 1. the file and the import (not with --data-dir: that store is used as it is)
    if args.data_dir:
        res["data_dir"] = str(data_dir)
    else:
        path = work / f"universe-{n_symbols}.parquet"
        res.update(write_universe(path, n_symbols, args.bars, args.seed))
        print(f"[{n_symbols}] wrote {path.name}: {res['rows']:,} rows, {res['file_bytes'] / MiB:.0f} MiB "
              f"in {res['write_s']:.1f} s", flush=True)
        ienv = dict(env)
        default_limit = 100 * MiB  # core/config.py max_upload_bytes
        if res["file_bytes"] > default_limit:  # the CLI import obeys the upload limit too
            ienv["GPU_BACKTEST_MAX_UPLOAD_BYTES"] = str(res["file_bytes"] + MiB)
            res["upload_limit_raised_to"] = res["file_bytes"] + MiB
        res.update(run_import(str(bindir / "gpu-backtest"), path, args.source, ienv, work / "import.log",
                              args.import_timeout))
        print(f"[{n_symbols}] import: {res['import_s']:.1f} s, peak RSS {res['import_peak_rss_mib']:.0f} MiB",
              flush=True)
        if not args.keep:
            path.unlink()

    # 2. cluster + server
    svc = Service(work, env, args.workers, args.nthreads, args.worker_memory_limit, not args.no_nanny)
    sampler = None
    try:
        svc.start(args.start_timeout)
        url = svc.url
        stored = http_json("GET", f"{url}/data/symbols?source={args.source}&limit=1")["total"]
        res["stored_symbols"] = stored
        if stored != n_symbols:
            raise SystemExit(f"{stored} symbols stored for source {args.source}, expected {n_symbols}")
        wpids = svc.worker_pids()
        pids = {"server": svc.server.pid, "scheduler": svc.scheduler.pid}  # type: ignore[union-attr]
        for i, p in enumerate(wpids):
            if p is not None:
                pids[f"worker{i}"] = p
        sampler = RssSampler(pids, args.sample_interval)
        sampler.start()
        print(f"[{n_symbols}] service: {url}, scheduler pid {pids['scheduler']}, server pid {pids['server']}, "
              f"worker pids {wpids}", flush=True)

        # 3. warm-up: 2 tiny jobs per worker at once (compile in the server and in each worker)
        t0 = time.monotonic()
        ids = [submit(url, warmup_spec(args.source)) for _ in range(2 * args.workers)]
        for j in ids:
            d = wait_final(url, j, 0.1, args.start_timeout)
            if d["status"] != "succeeded":
                raise SystemExit(f"warm-up job {j} {d['status']}: {d.get('error')}")
        res["warmup_s"] = time.monotonic() - t0
        time.sleep(args.settle)
        t_idle1 = time.monotonic()
        res["server_idle_rss_mib"] = sampler.median("server", t_idle1 - args.settle, t_idle1)
        for name in pids:
            if name.startswith("worker") or name == "scheduler":
                res[f"{name}_idle_rss_mib"] = sampler.median(name, t_idle1 - args.settle, t_idle1)

        # 4. the sweep
        dask_pids = {name: pid for name, pid in pids.items() if name != "server"}
        ports = {name: local_ports(pid) for name, pid in pids.items()}
        io0 = {name: proc_io(pid) for name, pid in pids.items()}
        sb0 = {name: sock_bytes(pid, svc.counters) for name, pid in dask_pids.items()}
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        res["loadavg_1m_before"] = os.getloadavg()[0]
        symbols = symbol_names(n_symbols) if args.list_symbols else None
        t0 = time.monotonic()
        job_id = submit(url, spec(args.source, symbols))
        doc = wait_final(url, job_id, args.poll, args.job_timeout)
        t1 = time.monotonic()
        cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        res["loadavg_1m_after"] = os.getloadavg()[0]
        sb1 = {name: sock_bytes(pid, svc.counters) for name, pid in dask_pids.items()}
        io1 = {name: proc_io(pid) for name, pid in pids.items()}
        for name, pid in pids.items():
            ports[name] |= local_ports(pid)
        wall = t1 - t0
        res["job_id"] = job_id
        res["status"] = doc["status"]
        if doc["status"] != "succeeded":
            res["error"] = doc.get("error")
            print(f"[{n_symbols}] job {doc['status']}: {doc.get('error')}", flush=True)
            return res
        info = doc["info"]
        created, started, finished = (_ts(doc["timings"][k]) for k in ("created_at", "started_at", "finished_at"))
        res.update({"wall_s": wall, "bar_sims_per_s": info["n_bars"] * info["n_columns"] / wall,
                    "n_bars": info["n_bars"], "n_columns": info["n_columns"], "chunks": info["chunks"],
                    "engine_s": info["elapsed_s"], "queue_s": started - created, "run_s": finished - started,
                    "info": info})
        res["server_peak_rss_mib"] = sampler.peak("server", t0, t1)
        res["server_rss_above_idle_mib"] = res["server_peak_rss_mib"] - res["server_idle_rss_mib"]
        for name in pids:
            if name != "server":
                res[f"{name}_peak_rss_mib"] = sampler.peak(name, t0, t1)
            for k in ("rchar", "wchar"):
                res[f"{name}_{k}_bytes"] = io1[name][k] - io0[name][k]
            res[f"{name}_cpu_s"] = cpu1[name] - cpu0[name]
        for name in dask_pids:  # socket bytes, in total and by the process at the other end
            res[f"{name}_sock_read_bytes"] = sb1[name]["read"] - sb0[name]["read"]
            res[f"{name}_sock_written_bytes"] = sb1[name]["written"] - sb0[name]["written"]
            by: dict[str, list[int]] = {}
            for peer, (r1, w1) in sb1[name]["peers"].items():
                r0, w0 = sb0[name]["peers"].get(peer, (0, 0))
                if r1 - r0 or w1 - w0:
                    who = next((other for other, p in ports.items() if peer in p and other != name), "other")
                    acc = by.setdefault(who, [0, 0])
                    acc[0] += r1 - r0
                    acc[1] += w1 - w0
            res[f"{name}_sock_by_peer"] = {k: {"read": v[0], "written": v[1]} for k, v in sorted(by.items())}
        res["scheduler_bytes"] = res["scheduler_sock_read_bytes"] + res["scheduler_sock_written_bytes"]

        # 5. the results: a page, then the whole table as CSV
        page = http_json("GET", f"{url}/backtest/{job_id}/results?limit=10")
        res["results_total"] = page["total"]
        res["results_page_rows"] = len(page["rows"])
        if page["total"] != info["n_columns"] or len(page["rows"]) != min(10, info["n_columns"]):
            raise SystemExit(f"results: total {page['total']}, {len(page['rows'])} rows on the first page")
        res["top"] = [{k: r[k] for k in ("rank", "symbol", "fast", "slow", "sharpe")} for r in page["rows"][:5]]
        t2 = time.monotonic()
        size = lines = 0
        with urllib.request.urlopen(f"{url}/backtest/{job_id}/results?format=csv", timeout=args.job_timeout) as r:
            while chunk := r.read(1 << 20):
                size += len(chunk)
                lines += chunk.count(b"\n")
        t3 = time.monotonic()
        time.sleep(3 * args.sample_interval)  # a sample after the end, for a download shorter than the period
        res.update({"csv_s": t3 - t2, "csv_bytes": size, "csv_rows": lines - 1,
                    "server_peak_rss_csv_mib": sampler.peak("server", t2, t3 + 2 * args.sample_interval)})
        return res
    finally:
        if sampler is not None:
            sampler.stop()
        svc.stop()


# -- output -------------------------------------------------------------------------------------
def _f(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, fmt)


def print_table(rows: list[dict[str, Any]]) -> None:
    workers = max((r.get("workers", 0) for r in rows), default=0)
    lines = [("symbols", "{:,}", "symbols"), ("columns", "{:,}", "columns"),
             ("import (wall)", "{:.1f} s", "import_s"), ("import peak RSS", "{:.0f} MiB", "import_peak_rss_mib"),
             ("sweep wall (POST → final)", "{:.2f} s", "wall_s"), ("bar-sims/s", "{:.3g}", "bar_sims_per_s"),
             ("job run (started → finished)", "{:.2f} s", "run_s"), ("engine elapsed", "{:.2f} s", "engine_s"),
             ("chunks", "{}", "chunks"),
             ("CPU s in the job: server", "{:.1f} s", "server_cpu_s")]
    lines += [(f"CPU s in the job: worker{i}", "{:.1f} s", f"worker{i}_cpu_s") for i in range(workers)]
    lines += [("CPU s in the job: scheduler", "{:.1f} s", "scheduler_cpu_s"),
              ("load average (1 min) before / after", None, "loadavg"),
              ("server idle RSS", "{:.0f} MiB", "server_idle_rss_mib"),
              ("server peak RSS (job)", "{:.0f} MiB", "server_peak_rss_mib"),
              ("server RSS above idle", "{:.0f} MiB", "server_rss_above_idle_mib")]
    lines += [(f"worker{i} peak RSS (idle)", None, f"worker{i}") for i in range(workers)]
    lines += [("scheduler peak RSS", "{:.0f} MiB", "scheduler_peak_rss_mib"),
              ("bytes through the scheduler", None, "scheduler_sock")]
    procs = ["server", *(f"worker{i}" for i in range(workers))]
    lines += [(f"  to/from {who}", None, f"peer:{who}") for who in procs]
    lines += [(f"worker{i} socket bytes in / out", None, f"worker{i}_sock") for i in range(workers)]
    lines += [(f"{n} file I/O read / written", None, f"{n}_io") for n in procs]
    lines += [("results?limit=10 total", "{:,}", "results_total"), ("CSV download", None, "csv")]
    cells: list[list[str]] = []
    for label, fmt, key in lines:
        row = [label]
        for r in rows:
            if key.startswith("peer:"):
                v = r.get("scheduler_sock_by_peer", {}).get(key[5:])
                row.append("-" if v is None else f"{(v['read'] + v['written']) / MiB:.1f} MiB "
                           f"(in {v['read'] / MiB:.1f}, out {v['written'] / MiB:.1f})")
            elif key.endswith("_sock"):
                name = key[:-5]
                rd, wr = r.get(f"{name}_sock_read_bytes"), r.get(f"{name}_sock_written_bytes")
                row.append("-" if rd is None else f"{(rd + wr) / MiB:.1f} MiB (in {rd / MiB:.1f}, out {wr / MiB:.1f})"
                           if name == "scheduler" else f"{rd / MiB:.1f} / {wr / MiB:.1f} MiB")
            elif key.startswith("worker") and fmt is None and not key.endswith(("_io", "_cpu_s")):
                row.append(f"{_f(r.get(key + '_peak_rss_mib'), '.0f')} MiB ({_f(r.get(key + '_idle_rss_mib'), '.0f')})")
            elif key.endswith("_io"):
                name = key[:-3]
                rc, wc = r.get(f"{name}_rchar_bytes"), r.get(f"{name}_wchar_bytes")
                row.append("-" if rc is None else f"{rc / MiB:.1f} / {wc / MiB:.1f} MiB")
            elif key == "loadavg":
                row.append(f"{_f(r.get('loadavg_1m_before'), '.2f')} / {_f(r.get('loadavg_1m_after'), '.2f')}")
            elif key == "csv":
                row.append("-" if "csv_s" not in r else f"{r['csv_s']:.2f} s, {r['csv_bytes'] / MiB:.0f} MiB, "
                           f"server peak RSS {r['server_peak_rss_csv_mib']:.0f} MiB")
            else:
                v = r.get(key)
                row.append("-" if v is None or (isinstance(v, float) and v != v) else fmt.format(v))
        cells.append(row)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    print()
    for c in cells:
        print("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths, strict=True))))
    print("\nbytes through the scheduler: every byte the scheduler process received (in) or sent (out) on its "
          "TCP connections from POST to final, counted in the process (tornado IOStream reads/writes), split by "
          "the process at the other end; file I/O: Δ rchar / wchar of /proc/<pid>/io (read()/write() calls: "
          "files and pipes; sockets are not in it)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, nargs="+", default=[2000], help="universe sizes (default 2000)")
    ap.add_argument("--bars", type=int, default=2520, help="daily bars per symbol (default 2520)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--source", default="upload",
                    help="source to import into and to name in the spec (default upload; a spec can only "
                         "name a registered data source)")
    ap.add_argument("--list-symbols", action="store_true",
                    help="list the symbols in the spec (default: none, i.e. every stored symbol of the source)")
    ap.add_argument("--workers", type=int, default=2, help="dask worker processes (default 2)")
    ap.add_argument("--nthreads", type=int, default=1, help="threads per worker (default 1)")
    ap.add_argument("--worker-memory-limit", default="6GiB", help="dask worker --memory-limit (default 6GiB)")
    ap.add_argument("--no-nanny", action="store_true", help="dask worker --no-nanny")
    ap.add_argument("--backend", choices=["cpu", "cuda", "auto"], default="cpu", help="GPU_BACKTEST_BACKEND")
    ap.add_argument("--poll", type=float, default=0.25, help="seconds between status polls (default 0.25)")
    ap.add_argument("--settle", type=float, default=3.0, help="idle seconds after the warm-up (default 3)")
    ap.add_argument("--sample-interval", type=float, default=0.1, help="RSS sampling period (default 0.1 s)")
    ap.add_argument("--import-timeout", type=float, default=3600)
    ap.add_argument("--start-timeout", type=float, default=120, help="bound on each start-up wait (default 120 s)")
    ap.add_argument("--job-timeout", type=float, default=3600)
    ap.add_argument("--data-dir", metavar="DIR",
                    help="run the sweep on this data directory's store as it is (no file, no import; one size; "
                         "e.g. a --keep run's <work>/n<N>/data)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (data, logs)")
    ap.add_argument("--json", metavar="FILE", help="append one JSON line per size to FILE")
    args = ap.parse_args(argv)
    if not (all(n > 0 for n in args.symbols) and args.bars > 200 and args.workers > 0 and args.nthreads > 0):
        ap.error("need symbols > 0, bars > 200 (the slowest SMA is 200), workers > 0, nthreads > 0")

    if args.data_dir and (len(args.symbols) != 1 or not Path(args.data_dir, "market").is_dir()):
        ap.error("--data-dir takes one --symbols size and a data directory with a market/ store")
    base_env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    base_env.update({"GPU_BACKTEST_BACKEND": args.backend, "GPU_SERVER_DEBUG": "false"})
    root = Path(tempfile.mkdtemp(prefix="gbt-universe-"))
    print(f"work directory {root}; {os.cpu_count()} CPUs; Python {platform.python_version()}", flush=True)
    rows = []
    try:
        for n in args.symbols:
            r = run_size(n, args, base_env, root)
            rows.append(r)
            print(json.dumps(r), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
        print_table(rows)
        return 0 if all(r.get("status") == "succeeded" for r in rows) else 1
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
