"""Schemathesis against the live server's own OpenAPI document: 0 server errors, 0 answers that
break the document (status codes, content types, response schemas), with and without a key.

The server is the real app (`create_app`, jobs in-process, no cluster) on a loopback port, in a
thread of this process, with API_KEY_REQUIRED on and limits that keep every job it accepts
tiny. The document is fetched from that server — its ``job_id`` examples set to a job that
succeeded there, so the examples reach real job documents, details, columns and tables — and
handed to ``st run`` (schemathesis' CLI, in a subprocess): the examples, coverage and fuzzing
phases of every operation, a fixed seed, a few examples per operation, one worker. A hooks
module drops ``callback_url`` from generated bodies, so no job calls out (no network).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gpu_backtest.core.config import Settings
from gpu_backtest.web.app import create_app

ST = str(Path(sys.executable).parent / "st")
KEY = "schemathesis-key"
SEED = 20240501
MAX_EXAMPLES = 6
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
HOOKS = '''
"""Schemathesis hooks for tests/test_schemathesis.py: generated jobs never call out."""
import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    if isinstance(case.body, dict):
        case.body.pop("callback_url", None)
'''


class LiveServer:
    """The app on 127.0.0.1 (a free port) in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(create_app(self.settings, cluster=False, shutdown_grace_s=0.5))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> LiveServer:
        self._thread.start()
        assert self._ready.wait(60), "the server did not start in 60 s"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("schemathesis")
    settings = Settings.from_env({
        "GPU_BACKTEST_DATA_DIR": str(data), "GPU_BACKTEST_BACKEND": "cpu", "GPU_SERVER_HOST": "127.0.0.1",
        "API_KEY_REQUIRED": "true", "GPU_SERVER_API_KEY": KEY, "MAX_CONCURRENT_JOBS": "1",
        "GPU_BACKTEST_MAX_GRID": "8", "GPU_BACKTEST_MAX_COLUMNS": "16", "GPU_BACKTEST_MAX_UPLOAD_BYTES": "64KiB"})
    srv = LiveServer(settings).start()
    try:
        yield srv
    finally:
        srv.stop()


def _json(server: LiveServer, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(server.url + path, method=method, headers={
        "X-API-Key": KEY, "Content-Type": "application/json"}, data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=90) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def job_id(server: LiveServer) -> str:
    """A succeeded job (4 columns): the document's job_id example, so the examples reach real answers."""
    spec = {"strategy": "sma_crossover", "symbols": ["SYN001", "SYN002"], "start": "2018-01-01",
            "params": {"fast": [5, 10], "slow": 20}, "output": {"top_k": 2}}
    jid = _json(server, "POST", "/backtest", spec)["job_id"]
    doc = _json(server, "GET", f"/backtest/{jid}?wait=60&view=status")
    assert doc["status"] == "succeeded", doc
    return jid


def _document(server: LiveServer, tmp_path: Path, job_id: str) -> Path:
    """The server's document, with the path parameters' examples naming the succeeded job."""
    doc = _json(server, "GET", "/openapi.json")
    for ops in doc["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["in"] == "path" and p["name"] == "job_id":
                    p["example"] = job_id
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(doc))
    return path


def _st_run(server: LiveServer, tmp_path: Path, job_id: str,
            headers: dict[str, str]) -> subprocess.CompletedProcess[str]:
    hooks = tmp_path / "st_hooks.py"
    hooks.write_text(textwrap.dedent(HOOKS))
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PYTHONPATH": str(tmp_path), "NO_COLOR": "1"}
    env.pop("SCHEMATHESIS_CONFIG", None)
    args = [ST, "run", str(_document(server, tmp_path, job_id)), "--url", server.url, "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
            "--workers", "1", "--request-timeout", "30", "--generation-database", "none",
            "--suppress-health-check", "all", "--no-color", "--output-truncate", "false"]
    for name, value in headers.items():
        args += ["--header", f"{name}: {value}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def _assert_clean(run: subprocess.CompletedProcess[str]) -> None:
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-20_000:]
    assert "Server error" not in out and "Response violates schema" not in out, out[-20_000:]


def test_schemathesis_with_a_key(server: LiveServer, job_id: str, tmp_path: Path) -> None:
    _assert_clean(_st_run(server, tmp_path, job_id, {"X-API-Key": KEY}))


def test_schemathesis_without_a_key(server: LiveServer, job_id: str, tmp_path: Path) -> None:
    _assert_clean(_st_run(server, tmp_path, job_id, {}))


def test_without_a_key_every_operation_is_401_in_the_envelope(server: LiveServer) -> None:
    """The document's rule, checked on every operation: no key → 401 and the error envelope
    (only /health is public here)."""
    doc = _json(server, "GET", "/openapi.json")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            url = server.url + path.replace("{job_id}", "0" * 32).replace("{n}", "0").replace("{file}", "index.css")
            req = urllib.request.Request(url, method=method.upper(), data=b"{}" if method == "post" else None,
                                         headers={"Content-Type": "application/json"})
            if op.get("tags") == ["console"]:  # HTML pages: redirected to the key form (whose POST needs CSRF)
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, final = resp.status, resp.url
                except urllib.error.HTTPError as exc:
                    status, final = exc.code, url
                want = (403, url) if (method, path) == ("post", "/ui/login") else (200, server.url + "/ui/login")
                assert (status, final) == want, (method, path, status, final)
                continue
            status, body = _call(req)
            if op.get("security") == []:
                assert status == 200, (method, path, status)
                continue
            assert status == 401, (method, path, status, body)
            assert body["error"]["code"] == "unauthorized" and body["request_id"], (method, path, body)
            assert "401" in op["responses"], (method, path)


def _call(req: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
