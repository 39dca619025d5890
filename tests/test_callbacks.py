"""Job callbacks (core/callbacks.py; issue 13, findings 13 and 21): where they may go, what they carry,
how they are retried and recorded.

A real receiver listens on 127.0.0.1: every refusal below is a request that would have reached it.
Jobs live in a real store (SQLite and PostgreSQL, tests/conftest.py); the sender is the server's own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from gpu_backtest.core.callbacks import CallbackSender, check_callback_url, sign
from gpu_backtest.core.config import Settings
from gpu_backtest.core.errors import SpecError
from gpu_backtest.core.jobstore import JobStore
from gpu_backtest.web.app import create_app

SPEC = {"strategy": "sma_crossover", "symbols": ["SYN001"], "params": {"fast": 10, "slow": 50}}
LOOPBACK_SPELLINGS = ["127.0.0.1", "localhost", "LocalHost.", "0x7f000001", "2130706433", "127.1", "0177.0.0.1",
                      "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:0:0:1]", "0.0.0.0", "[::]",
                      "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "[fe80::1]",
                      "[fd00::1]", "[2002:7f00:1::]", "[::127.0.0.1]", "app.localhost"]


class Receiver:
    """A callback receiver on 127.0.0.1: answers with the statuses it is given, in turn."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.headers: dict[str, str] = {}
        self.port = 0

    async def hook(self, request: web.Request) -> web.Response:
        self.calls.append((str(request.rel_url), dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 204
        return web.Response(status=status, headers=self.headers)

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield rec
    await runner.cleanup()


def settings(**env: str) -> Settings:
    return Settings.from_env({"GPU_BACKTEST_PUBLIC_URL": "https://backtest.example.com/api",
                              "GPU_BACKTEST_CALLBACK_RETRY_S": "0.05,0.05", **env})


async def deliver(store: JobStore, url: str, **env: str) -> Any:
    """Create a job whose callback is ``url`` (as an older server may have stored it) and deliver it."""
    job = await asyncio.to_thread(store.create, SPEC, "h" * 64, None, url)
    sender = CallbackSender(settings(**env), store)
    try:
        task = sender.deliver(job.id)
        assert task is not None
        await asyncio.wait_for(task, 30)
    finally:
        await sender.close()
    return await asyncio.to_thread(store.get, job.id)


# --------------------------------------------------------------------------- where a callback may go


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_internal_targets_are_refused_at_submit(host: str) -> None:
    with pytest.raises(SpecError) as info:
        check_callback_url(f"http://{host}:8080/hook")
    assert info.value.path == "callback_url" and "public addresses only" in info.value.reason


@pytest.mark.parametrize("url", ["http://user:pass@hooks.example.com/x", "https://:pw@hooks.example.com/",
                                 "http://user@hooks.example.com/", "ftp://hooks.example.com/", "http:///nohost",
                                 "http://hooks.example.com:99999/"])
def test_credentials_and_bad_urls_are_refused_at_submit(url: str) -> None:
    with pytest.raises(SpecError) as info:
        check_callback_url(url)
    assert info.value.path == "callback_url"


def test_public_and_allowed_targets_pass_at_submit() -> None:
    from gpu_backtest.core.netpolicy import parse_allow

    check_callback_url("https://hooks.example.com/done")
    check_callback_url("http://8.8.8.8/x")
    allow = parse_allow("127.0.0.1, 10.0.0.0/8, hooks.internal")
    for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://10.9.9.9/x", "http://hooks.internal/x"):
        check_callback_url(url, allow)
    with pytest.raises(SpecError):
        check_callback_url("http://192.168.0.1/x", allow)


@pytest.mark.asyncio
async def test_the_api_refuses_internal_callback_urls_with_422(tmp_path: Path, aiohttp_client: Any) -> None:
    env = {"GPU_BACKTEST_DATA_DIR": str(tmp_path), "GPU_BACKTEST_BACKEND": "cpu", "GPU_SERVER_HOST": "127.0.0.1"}
    client = await aiohttp_client(create_app(Settings.from_env(env), cluster=False))
    for url in ("http://169.254.169.254/latest/meta-data/", "http://0x7f000001:5050/", "http://a:b@example.com/"):
        resp = await client.post("/backtest", json={**SPEC, "callback_url": url})
        body = await resp.json()
        assert resp.status == 422 and body["error"]["details"]["field"] == "callback_url", body


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["localhost", "0x7f000001", "2130706433", "127.1", "[::ffff:127.0.0.1]",
                                  "127.0.0.1"])
async def test_internal_targets_are_refused_at_delivery(make_store: Any, receiver: Receiver, host: str) -> None:
    """Checked again when sending (a name may resolve elsewhere by then): nothing reaches the receiver."""
    job = await deliver(make_store(), receiver.url(host))
    assert receiver.calls == []
    cb = job.to_dict()["callback"]
    assert (cb["status"], cb["attempts"], cb["delivered_at"]) == ("failed", 1, None)
    assert cb["last_error"].startswith("refused: ") and "loopback" in cb["last_error"], cb


@pytest.mark.asyncio
async def test_redirects_are_not_followed(make_store: Any, receiver: Receiver) -> None:
    receiver.statuses = [302]
    receiver.headers = {"Location": "http://169.254.169.254/latest/meta-data/"}
    job = await deliver(make_store(), receiver.url(), GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.1")
    assert len(receiver.calls) == 1
    cb = job.to_dict()["callback"]
    assert cb["status"] == "failed" and cb["attempts"] == 1
    assert "redirects are not followed" in cb["last_error"] and "169.254.169.254" in cb["last_error"]


@pytest.mark.asyncio
async def test_credentials_are_stripped_and_never_sent(make_store: Any, receiver: Receiver) -> None:
    url = receiver.url().replace("http://", "http://user:s3cret@")
    job = await deliver(make_store(), url, GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.1")
    (path, headers, _), = receiver.calls
    assert path == "/hook" and "Authorization" not in headers
    doc = job.to_dict()
    assert "s3cret" not in json.dumps(doc) and doc["callback"]["url"] == receiver.url()
    assert doc["callback"]["status"] == "delivered"


# --------------------------------------------------------------------------- what it carries, retries, record


@pytest.mark.asyncio
async def test_delivery_is_signed_with_absolute_links_and_recorded(make_store: Any, receiver: Receiver) -> None:
    store = make_store()
    job = await deliver(store, receiver.url(), GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.0/8", GPU_SERVER_API_KEY="k3y")
    (_, headers, body), = receiver.calls
    base = f"https://backtest.example.com/api/backtest/{job.id}"
    assert json.loads(body) == {"job_id": job.id, "status": "queued", "error": None,
                                "links": {"self": base, "results": f"{base}/results"}}
    assert headers["X-Signature"] == sign(body, "k3y") and headers["X-Callback-Attempt"] == "1"
    cb = job.to_dict()["callback"]
    assert (cb["status"], cb["attempts"], cb["last_error"]) == ("delivered", 1, None) and cb["delivered_at"]


@pytest.mark.asyncio
async def test_failures_are_retried_on_the_schedule_and_recorded(make_store: Any, receiver: Receiver) -> None:
    store = make_store()
    receiver.statuses = [503, 500]
    job = await deliver(store, receiver.url(), GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.1")
    assert [h["X-Callback-Attempt"] for _, h, _ in receiver.calls] == ["1", "2", "3"]
    cb = job.to_dict()["callback"]
    assert (cb["status"], cb["attempts"], cb["last_error"]) == ("delivered", 3, "HTTP 500")

    receiver.calls.clear()
    receiver.statuses = [500, 502, 503]
    job = await deliver(store, receiver.url(), GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.1")
    cb = job.to_dict()["callback"]
    assert (cb["status"], cb["attempts"], cb["last_error"], cb["delivered_at"]) == ("failed", 3, "HTTP 503", None)

    receiver.calls.clear()
    receiver.statuses = [404]  # a client error is not retried
    job = await deliver(store, receiver.url(), GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.1")
    assert len(receiver.calls) == 1 and job.to_dict()["callback"]["last_error"] == "HTTP 404"


@pytest.mark.asyncio
async def test_unreachable_target_is_retried_with_the_reason(make_store: Any, receiver: Receiver) -> None:
    job = await deliver(make_store(), f"http://127.0.0.1:{receiver.port}/hook".replace(str(receiver.port), "9"),
                        GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.1")
    cb = job.to_dict()["callback"]
    assert cb["status"] == "failed" and cb["attempts"] == 3 and cb["last_error"].startswith("cannot connect")


@pytest.mark.asyncio
async def test_a_server_stopping_mid_retry_keeps_the_record(make_store: Any, receiver: Receiver) -> None:
    store = make_store()
    receiver.statuses = [500]
    job = await asyncio.to_thread(store.create, SPEC, "h" * 64, None, receiver.url())
    sender = CallbackSender(settings(GPU_BACKTEST_CALLBACK_ALLOW="127.0.0.1", GPU_BACKTEST_CALLBACK_RETRY_S="600"),
                            store)
    sender.deliver(job.id)
    for _ in range(300):
        got = await asyncio.to_thread(store.get, job.id)
        if got.callback_attempts == 1:
            break
        await asyncio.sleep(0.05)
    assert got.callback_status == "pending" and got.callback_last_error == "HTTP 500"
    await sender.close()  # the server stops while the retry waits
    cb = (await asyncio.to_thread(store.get, job.id)).to_dict()["callback"]
    assert (cb["status"], cb["attempts"]) == ("interrupted", 1)
    assert "server stopped" in cb["last_error"]
