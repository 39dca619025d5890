"""The web console at /ui (docs/ui.md): server-rendered pages (aiohttp-jinja2) over the service layer.

``/ui``: the jobs with their status and progress (the page reloads itself while a job is queued or
running); ``/ui/new``: a form built from the strategies' parameter schemas, submitted through the same
path as POST /backtest; ``/ui/login`` and ``/ui/logout``. No JavaScript.

`console_middleware` guards every /ui page: with API_KEY_REQUIRED, a page needs a logged-in session
cookie (web/console_session.py) or the X-API-Key header, else it redirects to /ui/login; every POST
needs the session's CSRF token (403 otherwise). The session cookie also opens the HTML report routes
(web/middlewares.py), never the JSON API. Every page carries a Content-Security-Policy whose only
allowance is its own ``<style>`` (a per-response nonce).
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..core.errors import GpuBacktestError, SpecError
from ..core.jobstatus import QUEUED, RUNNING, STATUSES
from ..core.metrics import METRICS
from . import keys as K
from .console_form import param_fields, spec_from_form
from .console_session import COOKIE_NAME, Session, SessionSigner
from .handlers import job_brief
from .httperrors import Unavailable
from .middlewares import Handler

CONSOLE: web.AppKey[SessionSigner] = web.AppKey("console", SessionSigner)
# per-request state (web.RequestKey exists from aiohttp 3.13; a plain string before)
_RK: Any = getattr(web, "RequestKey", None)
SESSION_KEY: Any = _RK("console_session", object) if _RK else "console_session"
NEW_SESSION_KEY: Any = _RK("console_new_session", object) if _RK else "console_new_session"  # or "clear"
NONCE_KEY: Any = _RK("console_nonce", str) if _RK else "console_nonce"
LOGIN_PATH = "/ui/login"
PAGE_SIZE = 50
REFRESH_S = 3
REPORT_PATH = re.compile(r"^/backtest/[^/]+(/columns/[^/]+)?/report$")


def is_console_path(path: str) -> bool:
    """Whether ``path`` is one of the console's (/ui, /ui/…)."""
    return path == "/ui" or path.startswith("/ui/")


def is_report_path(path: str) -> bool:
    """Whether ``path`` is an HTML report route (the only API routes a console cookie opens)."""
    return REPORT_PATH.fullmatch(path) is not None


def key_given(request: web.Request) -> bool:
    """Whether the request carries the configured API key in X-API-Key (constant-time comparison)."""
    expected = (request.app[K.SETTINGS].api_key or "").encode("utf-8")
    given = request.headers.get("X-API-Key", "").encode("utf-8", "surrogateescape")
    return bool(expected) and bool(given) and hmac.compare_digest(given, expected)


def cookie_session(request: web.Request) -> Session | None:
    """The request's verified console session (None without a valid, unexpired, unrevoked cookie)."""
    signer = request.app.get(CONSOLE)
    return signer.verify(request.cookies.get(COOKIE_NAME)) if signer is not None else None


def logged_in(request: web.Request) -> bool:
    """Whether the request may see the console: no key configured, the key in X-API-Key, or a session
    cookie from a login with the key."""
    if not request.app[K.SETTINGS].api_key_required:
        return True
    session = request.get(SESSION_KEY) or cookie_session(request)
    return (session is not None and session.authed) or key_given(request)


def console_access(request: web.Request) -> str | None:
    """For web/middlewares.py's key check: "console" for the /ui pages (`console_middleware` guards
    them), "session" for a GET of an HTML report with a logged-in session cookie, else None: the JSON
    API never takes the cookie."""
    if is_console_path(request.path):
        return "console"
    if request.method in ("GET", "HEAD") and is_report_path(request.path):
        session = cookie_session(request)
        if session is not None and session.authed:
            return "session"
    return None


def _set_cookie(request: web.Request, resp: web.StreamResponse, session: Session) -> None:
    secure = request.secure or request.app[K.SETTINGS].console_secure_cookie
    resp.set_cookie(COOKIE_NAME, session.token, max_age=request.app[CONSOLE].ttl_s, path="/", httponly=True,
                    samesite="Strict", secure=secure)


def _security_headers(resp: web.StreamResponse, nonce: str) -> None:
    resp.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-store"


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """A console page: the template with the session's CSRF token, the nonce and the navigation."""
    session: Session | None = request.get(SESSION_KEY)
    ctx = {**context, "csrf": request.app[CONSOLE].csrf_token(session) if session else "",
           "nonce": request[NONCE_KEY], "keys_required": request.app[K.SETTINGS].api_key_required,
           "logged_in": logged_in(request)}
    return aiohttp_jinja2.render_template(template, request, ctx, status=status)


async def read_form(request: web.Request) -> dict[str, str]:
    """The POSTed form's text fields (what the console's forms send: application/x-www-form-urlencoded);
    empty for another body or one that cannot be read — the CSRF check then refuses it."""
    if request.content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        data = await request.post()
    except ValueError:  # undecodable text
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, text=f"See {location}", headers={"Location": location})


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions, login, CSRF and the security headers of the /ui pages (other paths pass through)."""
    if not is_console_path(request.path):
        return await handler(request)
    signer = request.app[CONSOLE]
    session = cookie_session(request)
    fresh = session is None
    if fresh:  # an anonymous session: the CSRF token of the login form (and of every form without keys)
        session = signer.new(authed=False)
    request[SESSION_KEY] = session
    request[NONCE_KEY] = secrets.token_urlsafe(16)
    if request.path != LOGIN_PATH and not logged_in(request):
        resp: web.StreamResponse = _redirect(LOGIN_PATH)
    elif request.method == "POST" and not signer.csrf_ok(None if fresh else session,
                                                        (await read_form(request)).get("csrf")):
        resp = render(request, "error.html", {"title": "Forbidden", "message":
                      "The form's CSRF token is missing or wrong (an old page, or another site's form). "
                      "Reload the page and try again."}, status=403)
    else:
        resp = await handler(request)
    new = request.get(NEW_SESSION_KEY)
    if new == "clear":
        resp.del_cookie(COOKIE_NAME, path="/")
    elif new is not None:
        _set_cookie(request, resp, new)
    elif fresh:
        _set_cookie(request, resp, session)
    _security_headers(resp, request[NONCE_KEY])
    return resp


# -- pages ------------------------------------------------------------------------------------------
async def _dashboard(request: web.Request) -> str | None:
    cluster = request.app.get(K.CLUSTER)
    if cluster is None:
        return None
    try:
        return await asyncio.to_thread(cluster.dashboard_link)
    except Exception:
        return None


async def jobs_page(request: web.Request) -> web.Response:
    """GET /ui: the newest jobs (status, progress, links), ``?status=`` and ``?offset=``."""
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        status = None
    raw = request.query.get("offset", "0")
    offset = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 0
    jobs, total = await asyncio.to_thread(request.app[K.STORE].list, status, PAGE_SIZE, offset)
    briefs = [job_brief(j) for j in jobs]
    active = any(b["status"] in (QUEUED, RUNNING) for b in briefs)

    def page(at: int) -> str:
        return "/ui?" + urlencode({k: v for k, v in (("status", status), ("offset", at)) if v})

    return render(request, "jobs.html", {
        "title": "Jobs", "jobs": briefs, "total": total, "offset": offset, "status": status, "statuses": STATUSES,
        "refresh_s": REFRESH_S if active else None, "dashboard": await _dashboard(request),
        "newer": page(max(0, offset - PAGE_SIZE)) if offset > 0 else None,
        "older": page(offset + PAGE_SIZE) if offset + PAGE_SIZE < total else None,
        "submitted": request.query.get("submitted")})


async def _strategies(request: web.Request) -> list[dict[str, Any]]:
    return await asyncio.to_thread(request.app[K.STRATEGIES].list)


def _form_context(strategies: list[dict[str, Any]], name: str | None, values: dict[str, str]) -> dict[str, Any]:
    chosen = next((s for s in strategies if s.get("name") == name), strategies[0] if strategies else None)
    return {"title": "New job", "strategies": strategies, "strategy": chosen,
            "fields": param_fields(chosen) if chosen else [], "values": values, "metrics": METRICS}


async def new_job_page(request: web.Request) -> web.Response:
    """GET /ui/new?strategy=: the form for one strategy's parameters (the first strategy by default)."""
    return render(request, "new.html", _form_context(await _strategies(request), request.query.get("strategy"), {}))


async def submit_job(request: web.Request) -> web.Response:
    """POST /ui/new: the form as a spec, submitted like POST /backtest; the form again with the error's
    message and its status (4xx) when it is refused, else a redirect to /ui."""
    form = await read_form(request)
    strategies = await _strategies(request)
    strategy = next((s for s in strategies if s.get("name") == form.get("strategy")), None)
    try:
        if strategy is None:
            raise SpecError("strategy", f"unknown strategy {form.get('strategy', '')[:64]!r}")
        manager = request.app[K.JOBS]
        if not manager.accepting:
            raise Unavailable("the server is shutting down; retry on another instance")
        job = await manager.submit(spec_from_form(form, strategy))
    except GpuBacktestError as exc:
        ctx = _form_context(strategies, form.get("strategy"), form)
        field = (exc.details or {}).get("field") if isinstance(exc.details, dict) else None
        return render(request, "new.html", {**ctx, "error": exc.message, "error_field": field}, status=exc.status)
    return _redirect(f"/ui?submitted={job.id}")


async def login_page(request: web.Request) -> web.Response:
    """GET /ui/login: the key form (a redirect to /ui when no key is configured or already logged in)."""
    if logged_in(request):
        return _redirect("/ui")
    return render(request, "login.html", {"title": "Log in"})


async def login(request: web.Request) -> web.Response:
    """POST /ui/login: the API key once; a new logged-in session cookie and a redirect to /ui (401 and
    the form again for a wrong key)."""
    settings = request.app[K.SETTINGS]
    if not settings.api_key_required:
        return _redirect("/ui")
    given = (await read_form(request)).get("key", "").encode("utf-8", "surrogateescape")
    if not given or not hmac.compare_digest(given, (settings.api_key or "").encode("utf-8")):
        return render(request, "login.html", {"title": "Log in", "error": "That is not the API key."}, status=401)
    session = request.app[CONSOLE].new(authed=True)
    request[NEW_SESSION_KEY] = session
    return _redirect("/ui")


async def logout(request: web.Request) -> web.Response:
    """POST /ui/logout: this session is refused from now on and its cookie cleared."""
    session = cookie_session(request)
    if session is not None:
        request.app[CONSOLE].revoke(session)
    request[NEW_SESSION_KEY] = "clear"
    return _redirect(LOGIN_PATH if request.app[K.SETTINGS].api_key_required else "/ui")


def setup_console(app: web.Application) -> None:
    """Templates (autoescaped), the session signer and the /ui routes."""
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("gpu_backtest.web", "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined)
    app[CONSOLE] = SessionSigner(app[K.SETTINGS].api_key)
    app.router.add_get("/ui", jobs_page)
    app.router.add_get("/ui/new", new_job_page)
    app.router.add_post("/ui/new", submit_job)
    app.router.add_get("/ui/login", login_page)
    app.router.add_post("/ui/login", login)
    app.router.add_post("/ui/logout", logout)
