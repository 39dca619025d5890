"""The web console at /ui (web/console.py, docs/ui.md): its sessions and CSRF tokens, the job form,
the cookie's reach (the console and the reports, never the JSON API), and the pages in headless
Chromium (tests/browser.py; skipped without the system `chromium`). Screenshots: tests/artifacts/ui-*.png."""

from __future__ import annotations

import asyncio
import re
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from browser import ARTIFACTS, LAUNCH_ARGS, chromium_path, needs_chromium

from gpu_backtest.core.config import Settings
from gpu_backtest.core.errors import SpecError
from gpu_backtest.web.app import create_app
from gpu_backtest.web.console_form import parse_param, spec_from_form
from gpu_backtest.web.console_session import COOKIE_NAME, SessionSigner

KEY = "console-test-key-3f9a"
SPEC = {"strategy": "sma_crossover", "symbols": ["SYN001", "SYN002"], "start": "2018-01-01",
        "params": {"fast": [5, 10], "slow": 40}}


def _settings(path: Path, key: str | None = KEY, **extra: str) -> Settings:
    env = {"GPU_BACKTEST_DATA_DIR": str(path), "GPU_BACKTEST_BACKEND": "cpu", "GPU_SERVER_HOST": "127.0.0.1", **extra}
    if key is not None:
        env.update({"API_KEY_REQUIRED": "true", "GPU_SERVER_API_KEY": key})
    return Settings.from_env(env)


async def _client(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings, cluster=False, shutdown_grace_s=1))


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def _set_cookie(resp: Any) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


async def _login(client: Any) -> tuple[str, str]:
    """Log in through the form: (the session cookie's value, the CSRF token of the logged-in pages)."""
    csrf = _csrf(await (await client.get("/ui/login")).text())
    resp = await client.post("/ui/login", data={"key": KEY, "csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/ui"
    token = _set_cookie(resp)[COOKIE_NAME].value
    page = await client.get("/ui")
    assert page.status == 200
    return token, _csrf(await page.text())


# --------------------------------------------------------------------------- sessions and the form


def test_session_tokens_are_signed_expire_and_can_be_revoked() -> None:
    signer = SessionSigner("k1", ttl_s=100, max_revoked=3)
    s = signer.new(authed=True, now=1000)
    assert signer.verify(s.token, now=1050) == s and signer.verify(s.token, now=1100) is None  # expired
    sid, exp, authed, sig = s.token.split(".")
    anon = signer.new(authed=False, now=1000)
    assert signer.verify(f"{anon.token.rsplit('.', 2)[0]}.1.{anon.token.rsplit('.', 1)[1]}", now=1001) is None
    assert signer.verify(f"{sid}.{int(exp) + 10**6}.{authed}.{sig}", now=1001) is None  # a longer life: forged
    assert SessionSigner("k2").verify(s.token, now=1001) is None  # another key: refused
    assert SessionSigner("k1").verify(s.token, now=1001) is not None  # the same key (another server): accepted
    for junk in ("", "a.b.c", "x" * 500, "a.1.2.b", "é.1.1.x"):
        assert signer.verify(junk, now=1001) is None
    assert signer.csrf_ok(s, signer.csrf_token(s)) and not signer.csrf_ok(s, signer.csrf_token(anon))
    assert not signer.csrf_ok(s, "") and not signer.csrf_ok(None, signer.csrf_token(s))
    signer.revoke(s, now=1001)
    assert signer.verify(s.token, now=1002) is None
    later = [signer.new(authed=True, now=1000 + i) for i in range(5)]
    for t in later:
        signer.revoke(t, now=1010)
    assert signer.revoked_count == 3  # bounded: the oldest logouts drop out first
    assert all(signer.verify(t.token, now=1011) is None for t in later[-3:])


def test_form_values_become_the_specs_values() -> None:
    assert parse_param("10", "int", "params.fast") == 10
    assert parse_param(" 5, 10 ,20 ", "int", "params.fast") == [5, 10, 20]
    assert parse_param("5:50:5", "int", "params.fast") == {"start": 5, "stop": 50, "step": 5}
    assert parse_param("0.5:1.5:0.25", "float", "params.k") == {"start": 0.5, "stop": 1.5, "step": 0.25}
    assert parse_param("true, false", "bool", "params.b") == [True, False]
    assert parse_param("", "int", "params.fast") is None
    for text, kind in (("abc", "int"), ("2.5", "int"), ("1:2", "int"), ("maybe", "bool")):
        with pytest.raises(SpecError) as err:
            parse_param(text, kind, "params.fast")
        assert err.value.path == "params.fast"
    strategy = {"name": "sma_crossover", "params": [{"name": "fast", "type": "int"}, {"name": "slow", "type": "int"}]}
    spec = spec_from_form({"param.fast": "5,10", "param.slow": "", "symbols": "SYN001, SYN002 SYN003",
                           "start": "2018-01-01", "end": "", "fees": "0.001", "rank_by": "sortino"}, strategy)
    assert spec == {"strategy": "sma_crossover", "params": {"fast": [5, 10]}, "symbols": ["SYN001", "SYN002", "SYN003"],
                    "start": "2018-01-01", "costs": {"fees": 0.001}, "output": {"rank_by": "sortino"}}


# --------------------------------------------------------------------------- auth edges over HTTP


@pytest.mark.asyncio
async def test_login_cookie_and_its_reach(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, _settings(tmp_path))
    first = await client.get("/ui", allow_redirects=False)
    assert first.status == 303 and first.headers["Location"] == "/ui/login"
    login = await client.get("/ui/login")
    assert login.status == 200 and "default-src 'none'" in login.headers["Content-Security-Policy"]
    csrf = _csrf(await login.text())
    wrong = await client.post("/ui/login", data={"key": "not-the-key", "csrf": csrf}, allow_redirects=False)
    assert wrong.status == 401 and "not the API key" in await wrong.text() and COOKIE_NAME not in _set_cookie(wrong)
    no_csrf = await client.post("/ui/login", data={"key": KEY}, allow_redirects=False)
    assert no_csrf.status == 403 and "CSRF" in await no_csrf.text() and no_csrf.content_type == "text/html"
    resp = await client.post("/ui/login", data={"key": KEY, "csrf": csrf}, allow_redirects=False)
    morsel = _set_cookie(resp)[COOKIE_NAME]
    assert resp.status == 303 and morsel["samesite"] == "Strict" and morsel["httponly"] and morsel["path"] == "/"
    assert not morsel["secure"]  # plain http (GPU_BACKTEST_CONSOLE_SECURE_COOKIE: Secure anyway)
    assert morsel.value.split(".")[0] != _set_cookie(first)[COOKIE_NAME].value.split(".")[0]  # a new id at login
    page = await client.get("/ui")
    assert page.status == 200 and "Log out" in await page.text()
    # the cookie opens the console and the reports, never the JSON API
    assert (await client.get("/backtest")).status == 401
    assert (await client.get("/gpu/status")).status == 401
    assert (await client.post("/backtest", json=SPEC)).status == 401
    job = await (await client.post("/backtest", json=SPEC, headers={"X-API-Key": KEY})).json()
    report = f"/backtest/{job['job_id']}/report"
    assert (await client.get(report)).status in (200, 409)  # reached the handler: not 401
    assert (await client.get(f"/backtest/{'0' * 32}/columns/1/report")).status == 404
    doc = await (await client.get(f"/backtest/{job['job_id']}", headers={"X-API-Key": KEY},
                                  params={"wait": "60"})).json()
    assert doc["status"] == "succeeded", doc
    assert (await client.get(report)).status == 200
    jobs_page = await (await client.get("/ui")).text()
    assert f'data-job="{job["job_id"]}" data-status="succeeded"' in jobs_page and f'href="{report}"' in jobs_page
    # every POST needs the session's CSRF token
    csrf = _csrf(jobs_page)
    for data in ({"strategy": "sma_crossover"}, {"strategy": "sma_crossover", "csrf": csrf[::-1]}):
        refused = await client.post("/ui/new", data=data, allow_redirects=False)
        assert refused.status == 403 and refused.content_type == "text/html"
    assert (await client.post("/ui/logout", data={}, allow_redirects=False)).status == 403
    # log out: the cookie is cleared and its token refused from now on
    out = await client.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/ui/login" and _set_cookie(out)[COOKIE_NAME].value == ""
    client.session.cookie_jar.update_cookies({COOKIE_NAME: morsel.value})  # replayed
    assert (await client.get("/ui", allow_redirects=False)).status == 303
    assert (await client.get(report)).status == 401
    # the key header works on the console as on the API (scripts); a forged cookie does not
    assert (await client.get("/ui", headers={"X-API-Key": KEY})).status == 200
    sid, exp, _, sig = morsel.value.split(".")
    client.session.cookie_jar.update_cookies({COOKIE_NAME: f"{sid}.{exp}.1.{sig[:-2]}AA"})
    assert (await client.get("/ui", allow_redirects=False)).status == 303


@pytest.mark.asyncio
async def test_the_form_submits_like_the_api_and_shows_refusals(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, _settings(tmp_path))
    _, csrf = await _login(client)
    form = await client.get("/ui/new", params={"strategy": "sma_crossover"})
    page = await form.text()
    assert form.status == 200 and 'name="param.fast"' in page and 'name="param.slow"' in page
    assert "nonce-" in form.headers["Content-Security-Policy"] and "script-src" not in form.headers[
        "Content-Security-Policy"]
    base = {"csrf": csrf, "strategy": "sma_crossover", "symbols": "SYN001", "start": "2018-01-01"}
    bad = await client.post("/ui/new", data={**base, "param.fast": "50", "param.slow": "10"})
    text = await bad.text()
    assert bad.status == 422 and "the grid is empty" in text and "Traceback" not in text
    assert 'value="50"' in text  # the values typed are kept
    evil = await client.post("/ui/new", data={**base, "symbols": "<script>alert(1)</script>"})
    text = await evil.text()
    assert evil.status == 422 and "<script>alert" not in text and "&lt;script&gt;" in text
    unknown = await client.post("/ui/new", data={**base, "strategy": "nope"})
    assert unknown.status == 422 and "unknown strategy" in await unknown.text()
    ok = await client.post("/ui/new", data={**base, "param.fast": "5, 10", "param.slow": "30:50:10"},
                           allow_redirects=False)
    assert ok.status == 303 and ok.headers["Location"].startswith("/ui?submitted=")
    job_id = ok.headers["Location"].split("=", 1)[1]
    doc = await (await client.get(f"/backtest/{job_id}", headers={"X-API-Key": KEY}, params={"top": "10"})).json()
    assert doc["strategy"] == "sma_crossover" and doc["n_columns"] in (None, 6)
    assert f'data-job="{job_id}"' in await (await client.get("/ui")).text()


@pytest.mark.asyncio
async def test_open_server_console_and_secure_cookie(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, _settings(tmp_path, key=None, GPU_BACKTEST_CONSOLE_SECURE_COOKIE="true"))
    page = await client.get("/ui", allow_redirects=False)
    assert page.status == 200 and "Log out" not in await page.text()
    assert _set_cookie(page)[COOKIE_NAME]["secure"]  # anonymous session: the forms' CSRF token
    login = await client.get("/ui/login", allow_redirects=False)
    assert login.status == 303 and login.headers["Location"] == "/ui"
    assert (await client.post("/ui/new", data={"strategy": "sma_crossover"})).status == 403  # CSRF all the same


# --------------------------------------------------------------------------- in Chromium


async def _rows(tab: Any) -> dict[str, str]:
    return await tab.evaluate("""() => Object.fromEntries([...document.querySelectorAll('tr[data-job]')].map(
        r => [r.dataset.job, r.dataset.status]))""")


@needs_chromium
@pytest.mark.asyncio
async def test_console_in_chromium(aiohttp_client: Any, tmp_path: Path) -> None:
    async_api = pytest.importorskip("playwright.async_api")
    client = await _client(aiohttp_client, _settings(tmp_path))
    first = await (await client.post("/backtest", json=SPEC, headers={"X-API-Key": KEY})).json()
    base = str(client.make_url("/")).rstrip("/")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            tab = await context.new_page()
            tab.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url')})")
                   if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            await tab.goto(f"{base}/ui")
            assert tab.url.endswith("/ui/login")
            await tab.screenshot(path=str(ARTIFACTS / "ui-login.png"))
            await tab.fill("#key", KEY)
            await tab.click("button[type=submit]")
            await tab.wait_for_url(f"{base}/ui")
            assert first["job_id"] in await _rows(tab)
            cookie = next(c for c in await context.cookies() if c["name"] == COOKIE_NAME)
            assert cookie["sameSite"] == "Strict" and cookie["httpOnly"]
            # the form: choose the strategy, fill its parameters, submit
            await tab.click("text=New job")
            await tab.select_option("#choose-strategy", "sma_crossover")
            await tab.click("#choose button")
            await tab.fill("[name='param.fast']", "5, 10")
            await tab.fill("[name='param.slow']", "30:50:10")
            await tab.fill("#symbols", "SYN001 SYN002")
            await tab.fill("#start", "2018-01-01")
            await tab.screenshot(path=str(ARTIFACTS / "ui-new.png"), full_page=True)
            await tab.click("#submit-job button[type=submit]")
            await tab.wait_for_url(re.compile(r".*/ui\?submitted=[0-9a-f]{32}$"))
            job_id = tab.url.rsplit("=", 1)[1]
            rows: dict[str, str] = {}
            for _ in range(120):  # the page reloads itself while jobs run; read it until both are done
                rows = await _rows(tab)
                if rows.get(job_id) == "succeeded" and rows.get(first["job_id"]) == "succeeded":
                    break
                await asyncio.sleep(0.5)
                await tab.goto(f"{base}/ui")
            assert rows.get(job_id) == "succeeded" and rows.get(first["job_id"]) == "succeeded", rows
            await tab.screenshot(path=str(ARTIFACTS / "ui-jobs.png"))
            # the report opens with the cookie alone; the JSON API does not
            await tab.click(f"tr[data-job='{job_id}'] a.report")
            await tab.wait_for_url(f"{base}/backtest/{job_id}/report")
            await tab.wait_for_function("document.querySelectorAll('.chart .main-svg').length > 0", timeout=30_000)
            api = await context.request.get(f"{base}/backtest")
            assert api.status == 401 and (await api.json())["error"]["code"] == "unauthorized"
            # log out: back to the key form, and the console asks for it again
            await tab.goto(f"{base}/ui")
            await tab.click("text=Log out")
            await tab.wait_for_url(f"{base}/ui/login")
            await tab.goto(f"{base}/ui/new")
            assert tab.url.endswith("/ui/login")
            assert (await context.request.get(f"{base}/backtest/{job_id}/report")).status == 401
        finally:
            await browser.close()
    assert not errors, errors



class _Cluster:
    """Stands for a started cluster (cluster/dask.py's ClusterHandle) on pages that run no job."""

    def dashboard_link(self) -> str:
        return "http://127.0.0.1:8787/status"

    def close(self) -> None:
        pass


@pytest.mark.asyncio
async def test_pages_link_the_docs_and_the_dask_dashboard(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(_settings(tmp_path, key=None), cluster=_Cluster(), shutdown_grace_s=1))
    page = await (await client.get("/ui")).text()
    assert 'href="http://127.0.0.1:8787/status"' in page and 'href="/docs"' in page and 'href="/ui/new"' in page
