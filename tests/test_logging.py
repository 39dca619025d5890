"""The server's log (core/logs.py, core/joblog.py, web/accesslog.py, `gpu-backtest serve`):
a short log even from a cold numba cache with GPU_SERVER_DEBUG on (no library DEBUG lines),
one line per request with its request id, one line per job event, JSON lines on request,
"serving on" once the app listens, and a taken port: one line, exit code 2, nothing started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpu_backtest.core.logs import logging_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_procs import BIN, free_port, stop

JOB = {"strategy": "sma_crossover", "source": "synthetic", "symbols": ["SYN000", "SYN001"],
       "params": {"fast": [5, 10], "slow": [20, 50]}}
MISSING = {**JOB, "source": "upload", "symbols": ["GONE"]}  # fails at run time: its file vanished (below)
ENV_DROP = ("GPU_SERVER_DEBUG", "GPU_BACKTEST_LOG_FORMAT", "DATABASE_URL", "DASK_SCHEDULER_ADDRESS",
            "GPU_BACKTEST_MARKET_ROOT", "GPU_BACKTEST_ARTIFACT_ROOT", "DASK_DISTRIBUTED__LOGGING")


def server_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    env.update({"NUMBA_CACHE_DIR": str(tmp / "numba"), "GPU_BACKTEST_DATA_DIR": str(tmp / "data"),
                "GPU_SERVER_HOST": "127.0.0.1", "GPU_BACKTEST_BACKEND": "cpu", **extra})
    return env


def call(url: str, method: str = "GET", body: Any = None, rid: str | None = None,
         timeout: float = 10) -> tuple[int, Any, str]:
    """(status, JSON body, X-Request-ID) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if rid:
        headers["X-Request-ID"] = rid
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get("X-Request-ID", "")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), exc.headers.get("X-Request-ID", "")


@contextmanager
def serve(env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[str]:
    """`gpu-backtest serve` on a free port; yields its URL once /health answers; SIGTERM at the end."""
    port = free_port()
    env = {**env, "GPU_SERVER_PORT": str(port)}
    with log.open("ab") as fh:
        proc = subprocess.Popen([str(BIN / "gpu-backtest"), "serve", "--dashboard", "127.0.0.1:0"], env=env,
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if call(url + "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"server not healthy in {timeout} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        stop(proc, timeout=60)


def run_job(url: str, spec: dict[str, Any], rid: str, timeout: float = 240) -> dict[str, Any]:
    status, doc, echoed = call(url + "/backtest", "POST", spec, rid=rid)
    assert status == 202, doc
    assert echoed == rid
    deadline = time.monotonic() + timeout
    pause = 0.25
    while time.monotonic() < deadline:
        status, job, _ = call(f"{url}/backtest/{doc['job_id']}")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(pause)
        pause = min(2 * pause, 4.0)  # a client's back-off: a slow cold compile adds a line per 4 s
    raise AssertionError(f"job {doc['job_id']} not final in {timeout} s")


def test_cold_server_log_is_short_and_says_what_happened_in_json(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    rid = uuid.uuid4().hex
    with serve(server_env(tmp_path, GPU_SERVER_DEBUG="true", GPU_BACKTEST_LOG_FORMAT="json"), log) as url:
        job = run_job(url, JOB, rid)
    assert job["status"] == "succeeded", job
    lines = log.read_text().splitlines()
    assert len(lines) < 200, f"{len(lines)} lines"
    records = [json.loads(line) for line in lines]  # every line of every process is one JSON object
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    # debug is for our loggers only: nothing from numba, no library's DEBUG line
    assert not [r for r in records if r["logger"].startswith("numba")]
    assert not [r for r in records if r["level"] == "DEBUG" and not r["logger"].startswith("gpu_backtest")]
    # "serving on" once, after start-up, before the first request was answered
    serving = [i for i, r in enumerate(records) if r["message"].startswith("serving on http://127.0.0.1:")]
    first_request = next(i for i, r in enumerate(records) if r.get("event") == "request")
    assert len(serving) == 1 and serving[0] < first_request
    # one line per request, each with its id, method, route, status, duration
    requests = [r for r in records if r.get("event") == "request"]
    assert requests and all(len(r["request_id"]) == 32 and r["duration_ms"] >= 0 for r in requests)
    (post,) = [r for r in requests if r["method"] == "POST"]
    assert (post["request_id"], post["route"], post["status"]) == (rid, "/backtest", 202)
    polls = [r for r in requests if r["route"] == "/backtest/{job_id}"]
    assert polls and all(r["path"] == f"/backtest/{job['job_id']}" and r["status"] == 200 for r in polls)
    # one line per job event
    events = {r["event"]: r for r in records if r.get("job") == job["job_id"]}
    assert set(events) == {"job.submitted", "job.started", "job.finished"}
    assert events["job.submitted"]["request_id"] == rid  # the request that submitted it
    assert events["job.started"]["attempt"] == 1 and events["job.started"]["strategy"] == "sma_crossover"
    finished = events["job.finished"]
    assert finished["status"] == "succeeded" and finished["columns"] == 8 and finished["duration_s"] > 0
    assert f"{finished['duration_s']:.3f} s: 8 columns" in finished["message"]


def _vanished_series(data: Path) -> None:
    """A catalogued series whose file is gone: the submit check passes, the run fails naming it."""
    from gpu_backtest.core.marketdata import MarketDataStore
    from gpu_backtest.core.synthetic import gbm_panel_frame

    store = MarketDataStore(data / "market", f"sqlite:///{data / 'jobs.sqlite'}")
    store.write("upload", "GONE", "1d", gbm_panel_frame(1, 300, seed=5).drop(columns="symbol"))
    store.path("upload", "GONE", "1d").unlink()
    store.close()


def test_text_log_of_a_failed_job_names_the_reason_and_requests(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    rid = uuid.uuid4().hex
    _vanished_series(tmp_path / "data")
    with serve(server_env(tmp_path), log) as url:
        job = run_job(url, MISSING, rid)
        status, _, missing_rid = call(url + "/backtest/" + "0" * 32)
    assert job["status"] == "failed", job
    text = log.read_text()
    lines = text.splitlines()
    job_id = job["job_id"]
    assert [line for line in lines if f"job {job_id} submitted [request {rid}]" in line]
    assert [line for line in lines if f"job {job_id} started: sma_crossover, attempt 1" in line]
    (failed,) = [line for line in lines if f"job {job_id} failed after" in line]
    assert " WARNING gpu_backtest.jobs: " in failed and "invalid_data" in failed and "GONE" in failed
    assert job["error"]["message"] in failed
    assert [line for line in lines if "POST /backtest 202" in line and line.endswith(f"[request {rid}]")]
    assert status == 404
    assert [line for line in lines if f"GET /backtest/{'0' * 32} 404" in line and missing_rid in line]
    assert sum("serving on http://127.0.0.1:" in line for line in lines) == 1
    assert not any(line.startswith("{") for line in lines)


def test_a_taken_port_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = server_env(tmp_path, GPU_SERVER_PORT=str(port))
        proc = subprocess.run([str(BIN / "gpu-backtest"), "serve"], env=env, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: port {port} is in use (GPU_SERVER_PORT)"]
    assert not (tmp_path / "data").exists()  # nothing started: no database, no cluster, no data


def test_debug_is_for_our_loggers_only(tmp_path: Path) -> None:
    """A numba compile in a process set up as the server is (GPU_SERVER_DEBUG on) writes no line;
    our own DEBUG lines do appear."""
    code = (
        "import logging\n"
        "from gpu_backtest.core.logs import configure_logging\n"
        "configure_logging(debug=True)\n"
        "import numba\n"
        "f = numba.njit(lambda x: x * 2 + 1)\n"
        "assert f(3) == 7\n"
        "logging.getLogger('gpu_backtest.test').debug('ours')\n"
        "logging.getLogger('numba.test').info('not ours')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=server_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(" DEBUG gpu_backtest.test: ours"), lines[:20]
    config = logging_config(debug=False, fmt="json")
    assert config["loggers"]["gpu_backtest"]["level"] == "INFO" and config["root"]["level"] == "INFO"
