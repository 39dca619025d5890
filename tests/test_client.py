"""web/client.py against a real server: ``gpu-backtest serve`` started as a subprocess on
127.0.0.1 (a free port, a temporary data directory, the CPU backend, SQLite), plus a local
stub server for the retry rules (503 and connection errors retried, 4xx not).

`ServerProcess` (here) is also used by tests/test_restart.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest

from gpu_backtest.web.client import ApiError, BacktestClient, JobFailed, TransportError, WaitTimeout

CLI = str(Path(sys.executable).parent / "gpu-backtest")
# variables of the developer's shell that would point the server elsewhere
_SCRUB = ("DATABASE_URL", "DASK_SCHEDULER_ADDRESS", "API_KEY_REQUIRED", "GPU_SERVER_API_KEY",
          "GPU_BACKTEST_LOAD_PLUGINS", "MAX_CONCURRENT_JOBS", "GPU_BACKTEST_CPU_MEMORY_LIMIT")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``gpu-backtest serve`` in its own session (process group), so that killing the group
    also kills its Dask scheduler/nanny/worker processes."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None, log_name: str = "server.log") -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.extra_env = dict(env or {})
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-{log_name}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kw: Any) -> BacktestClient:
        return BacktestClient(self.url, **{"timeout": 30, **kw})

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start and wait for /health (a few tries with a new port if the port was taken meanwhile)."""
        for _ in range(3):
            self.port = free_port()
            env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
            env.update({"GPU_SERVER_HOST": "127.0.0.1", "GPU_SERVER_PORT": str(self.port),
                        "GPU_BACKTEST_DATA_DIR": str(self.data_dir), "GPU_BACKTEST_BACKEND": "cpu",
                        "GPU_SERVER_DEBUG": "false", "PYTHONUNBUFFERED": "1"})
            env.update(self.extra_env)
            log = open(self.log_path, "ab")  # the child writes to it; closed here after the spawn
            log.write(f"\n==== start on port {self.port} ====\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen([CLI, "serve", "--dashboard", ":0"], env=env, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                log.close()
            probe = BacktestClient(self.url, timeout=2, retries=0)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if probe.health().get("status") == "ok":
                        return self
                except (TransportError, ApiError):
                    pass
                time.sleep(0.1)
            if self.proc.poll() is None:  # timed out while alive
                self.kill()
                raise AssertionError(f"server not healthy after {timeout} s:\n{self.log_tail()}")
            self.kill()
            if "in use" not in self.log_tail().lower():  # "port N is in use": the port was taken meanwhile
                break
        raise AssertionError(f"server exited with code {self.proc.returncode if self.proc else None}:\n"
                             f"{self.log_tail()}")

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (server and Dask processes): a crash."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        time.sleep(0.1)
        self._signal_group(signal.SIGKILL)  # stragglers of the group

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL the group after ``grace`` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        self.kill()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("client") / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> BacktestClient:
    return server.client()


SMALL = {"strategy": "sma_crossover", "symbols": ["SYN000", "SYN001"], "source": "synthetic",
         "start": "2015-01-01", "end": "2016-12-31", "params": {"fast": [5, 10], "slow": [20, 50]}}


# --------------------------------------------------------------------------- the real server


def test_submit_wait_results(client: BacktestClient) -> None:
    seen: list[dict[str, Any]] = []
    submitted = client.submit(SMALL)
    assert submitted["status"] in ("queued", "running") and len(submitted["job_id"]) == 32
    job = client.wait(submitted["job_id"], poll=0.05, timeout=60, on_progress=seen.append)
    assert job["status"] == "succeeded", job
    assert seen and seen[-1]["status"] == "succeeded" and set(seen[-1]) >= {"progress", "stage", "eta_s"}
    assert job["attempts"] == 1 and job["progress"] == 1.0 and job["timings"]["run_s"] > 0
    info = job["info"]
    assert (info["n_symbols"], info["n_combinations"], info["n_columns"]) == (2, 4, 8)
    assert "summary" not in job and "details" not in job  # compact
    assert client.status(job["job_id"])["status"] == "succeeded"
    assert set(client.get(job["job_id"], view="status")) == {"job_id", "status", "progress", "stage", "eta_s",
                                                             "error", "links"}
    assert client.get(job["job_id"], view="full")["summary"]["info"] == info
    assert client.get(job["job_id"], top=2)["top"] == job["top"][:2]

    page = client.results(job["job_id"], limit=3, offset=1, sort="-sharpe")
    assert page["total"] == 8 and len(page["rows"]) == 3 and page["offset"] == 1
    everything = client.results(job["job_id"], limit=100, sort="-sharpe")
    sharpes = [r["sharpe"] for r in everything["rows"]]
    assert sharpes == sorted(sharpes, reverse=True)
    assert page["rows"] == everything["rows"][1:4]
    best = job["top"][0]
    assert best["symbol"] == everything["rows"][0]["symbol"]
    assert best["metrics"]["sharpe"] == pytest.approx(everything["rows"][0]["sharpe"])
    details = client.details(job["job_id"])
    assert details[0]["column"] == best["column"] and details[0]["equity"]["value"]
    same = client.column(job["job_id"], best["column"])
    assert (same["rank"], same["metrics"], same["trades"]) == (1, details[0]["metrics"], details[0]["trades"])
    last = everything["rows"][-1]
    other = client.column(job["job_id"], last["column"])
    assert other["symbol"] == last["symbol"] and len(other["equity"]["value"]) == info["n_bars"]
    with pytest.raises(ApiError) as missing:
        client.column(job["job_id"], 8)
    assert (missing.value.status, missing.value.details["column"]) == (404, "8")

    csv_text = client.results(job["job_id"], format="csv")
    assert len(csv_text.strip().splitlines()) == 9 and csv_text.startswith("rank,")
    blob = client.results(job["job_id"], format="parquet")
    assert blob[:4] == b"PAR1"
    table = pd.read_parquet(io.BytesIO(blob))
    assert len(table) == 8 and set(table["symbol"]) == {"SYN000", "SYN001"}

    listed = client.jobs(status="succeeded")
    assert job["job_id"] in {j["job_id"] for j in listed["jobs"]}


def test_run_is_submit_plus_wait_and_idempotent(client: BacktestClient) -> None:
    spec = {**SMALL, "symbols": ["SYN002"], "params": {"fast": 10, "slow": 30}}
    a = client.submit(spec, idempotency_key="client-test-key-1")
    b = client.submit(spec, idempotency_key="client-test-key-1")
    assert a["job_id"] == b["job_id"]
    with pytest.raises(ApiError) as info:  # same key, different body
        client.submit({**spec, "params": {"fast": 5, "slow": 30}}, idempotency_key="client-test-key-1")
    assert info.value.status == 422 and info.value.code == "idempotency_conflict"
    job = client.run(spec, idempotency_key="client-test-key-1", poll=0.05, timeout=60)
    assert job["job_id"] == a["job_id"] and job["status"] == "succeeded"
    assert job["info"]["n_columns"] == 1


def test_upload_csv_then_list_and_backtest_it(client: BacktestClient, tmp_path: Path) -> None:
    days = pd.bdate_range("2021-01-04", periods=60)
    close = [100 + (i % 7) - (i % 3) + i * 0.2 for i in range(60)]
    frame = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "open": close, "high": [c + 1 for c in close],
                          "low": [c - 1 for c in close], "close": close, "volume": [1000 + i for i in range(60)]})
    path = tmp_path / "mycsv.csv"
    frame.to_csv(path, index=False)
    stored = client.upload(path, symbol="MYCSV")["stored"]
    assert [(e["symbol"], e["source"], e["rows"]) for e in stored] == [("MYCSV", "upload", 60)]
    listed = client.data_symbols(source="upload")
    assert "MYCSV" in {e["symbol"] for e in listed["symbols"]} and listed["total"] >= 1
    assert client.data_symbols(source="upload", prefix="MYC", limit=1)["symbols"][0]["symbol"] == "MYCSV"
    assert any(s["name"] == "upload" and s["stored_series"] >= 1 for s in client.data_sources())

    job = client.run({"strategy": "sma_crossover", "source": "upload", "symbols": ["MYCSV"],
                      "params": {"fast": 3, "slow": 10}}, poll=0.05, timeout=60)
    assert job["status"] == "succeeded" and job["info"]["n_bars"] == 60

    bad = tmp_path / "bad.csv"
    bad.write_text("date,open,high,low,close\n2021-01-04,1,2,0.5,x\n")
    with pytest.raises(ApiError) as info:
        client.upload(bad, symbol="BAD")
    assert info.value.status == 422 and info.value.details["problems"]


def test_bad_spec_is_a_422_naming_the_field(client: BacktestClient) -> None:
    with pytest.raises(ApiError) as info:
        client.submit({"strategy": "sma_crossover", "params": {"fast": 10, "slow": 5}})
    err = info.value
    assert (err.status, err.code, err.details["field"]) == (422, "invalid_spec", "params")
    assert "fast < slow" in err.message and err.request_id
    with pytest.raises(ApiError) as info:
        client.submit({"strategy": "sma_crossover", "execution": {"fill": "sometimes"}})
    assert info.value.status == 422 and info.value.details["field"] == "execution.fill"
    with pytest.raises(ApiError) as info:
        client.submit({"strategy": "no_such_strategy"})
    assert info.value.status in (404, 422) and info.value.details
    with pytest.raises(ApiError) as info:
        client.status("0" * 32)
    assert (info.value.status, info.value.code) == (404, "not_found")


def test_failed_job_raises_the_servers_error(server: ServerProcess, client: BacktestClient) -> None:
    from gpu_backtest.core.marketdata import MarketDataStore
    from gpu_backtest.core.synthetic import gbm_panel_frame

    # a series whose stored file vanished after it was catalogued: only the run finds out
    store = MarketDataStore(server.data_dir / "market", f"sqlite:///{server.data_dir / 'jobs.sqlite'}")
    store.write("upload", "VANISHED", "1d", gbm_panel_frame(1, 120, seed=3).drop(columns="symbol"))
    store.path("upload", "VANISHED", "1d").unlink()
    spec = {"strategy": "sma_crossover", "source": "upload", "symbols": ["VANISHED"], "params": {"fast": 3}}
    try:
        with pytest.raises(JobFailed) as info:
            client.run(spec, poll=0.05, timeout=60)
    finally:
        store.delete("upload", "VANISHED", "1d")
        store.close()
    err = info.value
    assert err.job["status"] == "failed" and err.code == err.job["error"]["code"] and err.message
    assert "VANISHED" in json.dumps(err.job["error"])


def test_cancel_and_wait_timeout(client: BacktestClient) -> None:
    big = {"strategy": "sma_crossover", "source": "synthetic", "symbols": [f"SYN{i:03d}" for i in range(20)],
           "params": {"fast": {"start": 2, "stop": 100, "step": 1}, "slow": {"start": 10, "stop": 300, "step": 2}}}
    job = client.submit(big)
    with pytest.raises(WaitTimeout) as info:
        client.wait(job["job_id"], poll=0.05, timeout=0.2)
    assert info.value.job["status"] in ("queued", "running")
    answer = client.cancel(job["job_id"])
    assert answer["job_id"] == job["job_id"]
    final = client.wait(job["job_id"], poll=0.1, timeout=60)
    assert final["status"] == "cancelled"
    with pytest.raises(ApiError) as err:
        client.results(job["job_id"])
    assert (err.value.status, err.value.code) == (409, "conflict")
    with pytest.raises(ApiError) as err:  # a finished job cannot be cancelled
        client.cancel(job["job_id"])
    assert (err.value.status, err.value.code, err.value.details) == (409, "conflict", {"status": "cancelled"})


def test_catalogue_and_status(client: BacktestClient) -> None:
    names = {s["name"] for s in client.strategies()}
    assert {"sma_crossover", "buy_and_hold", "rsi_reversion"} <= names
    status = client.gpu_status()
    assert status["engine_backend"] == "cpu" and status["cluster"]["kind"] == "local"
    assert {"synthetic", "upload"} <= {s["name"] for s in client.data_sources()}
    assert client.health() == {"status": "ok"}


def test_unreachable_server_raises_transport_error_after_retries() -> None:
    port = free_port()  # nothing listens there
    c = BacktestClient(f"http://127.0.0.1:{port}", timeout=1, retries=2, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="after 3 attempts"):
        c.health()
    assert time.monotonic() - t0 < 5


# --------------------------------------------------------------------------- retry rules on a stub


class _Stub(BaseHTTPRequestHandler):
    """/flaky: 503 twice then 200; /down: always 503; /missing: 404 envelope; /slow: sleeps;
    /backtest/{ok,bad}: a job's long-polls (queued, running, running, final) and its compact document."""

    calls: ClassVar[dict[str, int]] = {}
    queries: ClassVar[list[str]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, doc: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out and left
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if "view=status" in query:
            path += "#status"
        with self.lock:
            n = self.calls[path] = self.calls.get(path, 0) + 1
            self.queries.append(self.path)
        unavailable = {"error": {"code": "unavailable", "message": "busy", "details": None}, "request_id": "r1"}
        if (path == "/flaky" and n <= 2) or path == "/down":
            self._send(503, unavailable, {"Retry-After": "0"} if path == "/down" else None)
        elif path == "/missing":
            self._send(404, {"error": {"code": "not_found", "message": "no such thing", "details": {"x": 1}},
                             "request_id": "r2"})
        elif path == "/boom":
            self._send(500, {"error": {"code": "internal_error", "message": "internal server error",
                                       "details": None}, "request_id": "r3"})
        elif path.startswith("/backtest/") and path.endswith("#status"):  # long-polls: queued, running ×2, final
            status = ["queued", "running", "running"][n - 1] if n <= 3 else (
                "succeeded" if "ok" in path else "failed")
            self._send(200, {"job_id": path.split("/")[2].split("#")[0], "status": status, "stage": status,
                             "progress": 0.25 * (n - 1) if n <= 3 else 1.0, "error": None})
        elif path.startswith("/backtest/"):  # the final compact document
            ok = path.endswith("ok")
            error = None if ok else {"code": "invalid_data", "message": "no data", "details": {"x": 2}}
            self._send(200, {"job_id": path.rsplit("/", 1)[1], "status": "succeeded" if ok else "failed",
                             "stage": "done", "progress": 1.0, "error": error, "top": [] if ok else None})
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, {"ok": True})
        else:
            self._send(200, {"ok": True, "calls": n})


@pytest.fixture
def stub() -> Iterator[tuple[str, dict[str, int]]]:
    _Stub.calls = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Stub.calls
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_retries_503_with_backoff_then_succeeds(stub: tuple[str, dict[str, int]]) -> None:
    url, calls = stub
    c = BacktestClient(url, timeout=5, retries=3, backoff=0.05)
    t0 = time.monotonic()
    assert c._json("GET", "/flaky") == {"ok": True, "calls": 3}
    assert calls["/flaky"] == 3
    assert time.monotonic() - t0 >= 0.05 + 0.1  # backoff 0.05, then 0.1


def test_gives_up_on_503_with_the_servers_error(stub: tuple[str, dict[str, int]]) -> None:
    url, calls = stub
    with pytest.raises(ApiError) as info:
        BacktestClient(url, timeout=5, retries=2, backoff=0.01)._json("GET", "/down")
    assert (info.value.status, info.value.code, info.value.message) == (503, "unavailable", "busy")
    assert calls["/down"] == 3


def test_4xx_and_500_are_not_retried(stub: tuple[str, dict[str, int]]) -> None:
    url, calls = stub
    c = BacktestClient(url, timeout=5, retries=3, backoff=0.01)
    with pytest.raises(ApiError) as info:
        c._json("GET", "/missing")
    assert (info.value.status, info.value.code, info.value.details, info.value.request_id) == (
        404, "not_found", {"x": 1}, "r2")
    with pytest.raises(ApiError) as info:
        c._json("GET", "/boom")
    assert info.value.status == 500
    assert calls["/missing"] == 1 and calls["/boom"] == 1


def test_timeouts_are_retried_then_reported(stub: tuple[str, dict[str, int]]) -> None:
    url, calls = stub
    c = BacktestClient(url, timeout=0.3, retries=1, backoff=0.01)
    with pytest.raises(TransportError, match="after 2 attempts"):
        c._json("GET", "/slow")
    assert calls["/slow"] == 2


def test_wait_long_polls_and_reports_progress(stub: tuple[str, dict[str, int]]) -> None:
    url, calls = stub
    _Stub.queries = []
    c = BacktestClient(url, timeout=5)
    seen: list[tuple[str, float]] = []
    job = c.wait("ok", poll=2.0, on_progress=lambda j: seen.append((j["status"], j["progress"])))
    assert job["status"] == "succeeded" and job["top"] == []  # the compact document, read once final
    assert (calls["/backtest/ok#status"], calls["/backtest/ok"]) == (4, 1)
    assert seen == [("queued", 0.0), ("running", 0.25), ("running", 0.5), ("succeeded", 1.0)]
    polls = [q for q in _Stub.queries if "view=status" in q]
    assert polls and all("wait=2.000" in q for q in polls), polls  # each asks the server to hold it
    with pytest.raises(JobFailed) as info:
        c.wait("bad", poll=0.01)
    assert (info.value.code, info.value.message, info.value.details) == ("invalid_data", "no data", {"x": 2})
    assert info.value.job["status"] == "failed" and info.value.status is None


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        BacktestClient("localhost:5050")
    with pytest.raises(ValueError):
        BacktestClient("http://localhost:5050", timeout=0)
    assert BacktestClient("http://h:1/", api_key="k").base_url == "http://h:1"
