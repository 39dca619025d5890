"""Job-completion callbacks: a POST to the job's ``callback_url``, guarded, retried and recorded.

`CallbackSender.deliver(job_id)` (called by the JobManager when a job ends) schedules the
delivery in the background:

- **Body**: ``{"job_id", "status", "error", "links": {"self", "results"}}`` with absolute links
  (`public_base_url`: ``GPU_BACKTEST_PUBLIC_URL``, else this server's host and port), signed
  with HMAC-SHA256 of the body (``X-Signature: sha256=<hex>``) when ``GPU_SERVER_API_KEY`` is
  set. ``X-Callback-Attempt`` numbers the attempts (1, 2, …).
- **Where it may go** (SSRF): the URL's host must mean public addresses only — see
  `core/netpolicy.py` (loopback, private, link-local 169.254.169.254, … are refused unless
  listed in ``GPU_BACKTEST_CALLBACK_ALLOW``). IP literals are checked as written (every
  spelling); host names are resolved by `GuardedResolver`, which refuses an answer holding
  such an address, and the connection goes to the addresses it checked — at each attempt, so
  a name re-pointed after the submission (DNS rebinding) is refused too. Redirects are never
  followed (a 3xx answer is a failed delivery), and ``user:password@`` is stripped from the
  URL: never sent, as Basic auth or otherwise. Proxies from the environment are not used.
- **Retries**: a connection failure, a timeout (``GPU_BACKTEST_CALLBACK_TIMEOUT_S``), 408, 429
  or a 5xx answer is retried after each delay of ``GPU_BACKTEST_CALLBACK_RETRY_S`` (default
  5 s, 15 s, 1 min, 3 min, 10 min); any other answer, a refused address or a redirect ends it.
- **Record**: after every attempt the job's ``callback`` record is written (status
  ``pending`` → ``delivered`` | ``failed``, ``attempts``, ``last_error``, ``delivered_at``);
  a server that stops while a delivery waits marks it ``interrupted`` (best effort: it is not
  resumed by another server).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .config import Settings
from .errors import SpecError
from .netpolicy import (
    AllowList,
    RefusedAddress,
    check_ip,
    literal_ip,
    parse_allow,
    strip_credentials,
    url_problem,
)

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED, INTERRUPTED = "pending", "delivered", "failed", "interrupted"
RETRY_STATUSES = frozenset({408, 429})


def sign(body: bytes, key: str) -> str:
    """``sha256=<hex HMAC-SHA256 of body with key>`` (the X-Signature header of callbacks)."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def public_base_url(settings: Settings) -> str:
    """The base of absolute links: ``GPU_BACKTEST_PUBLIC_URL``, else ``http://<host>:<port>`` of
    this server (a wildcard bind address replaced by this machine's fully qualified name)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = socket.getfqdn() or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def job_links(base: str, job_id: str) -> dict[str, str]:
    """Absolute links of a job (its status and its results)."""
    return {"self": f"{base}/backtest/{job_id}", "results": f"{base}/backtest/{job_id}/results"}


def check_callback_url(url: str, allow: AllowList | None = None, path: str = "callback_url") -> None:
    """What can be checked when the job is submitted (no DNS): an http(s) URL with a host and
    no credentials, whose host is not an IP literal or ``localhost`` name that will be refused.
    Raises SpecError naming ``path``."""
    problem = url_problem(url)
    if problem is not None:
        raise SpecError(path, problem)
    host = URL(url).raw_host or ""
    if allow is not None and allow.allows_host(host):
        return
    ip = literal_ip(host)
    try:
        if ip is not None:
            check_ip(ip, allow, host)
        elif host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(".localhost"):
            check_ip(ipaddress.IPv4Address("127.0.0.1"), allow, host)  # a loopback name (RFC 6761)
    except RefusedAddress as exc:
        raise SpecError(path, str(exc)) from None


class GuardedResolver(AbstractResolver):
    """A resolver that refuses a name when an address of its answer may not be contacted; the
    connector connects only to the addresses returned here (so the check cannot be raced)."""

    def __init__(self, allow: AllowList, inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        infos = await self.inner.resolve(host, port, family)
        if self.allow.allows_host(host):
            return infos
        for info in infos:
            ip = literal_ip(str(info["host"]))
            if ip is None:
                raise RefusedAddress(f"{host} resolved to {info['host']!r}, not an address")
            check_ip(ip, self.allow, host)
        return infos

    async def close(self) -> None:
        await self.inner.close()


class CallbackSender:
    """Delivers the callbacks of one server process (its own HTTP session), in the background."""

    def __init__(self, settings: Settings, store: Any) -> None:
        self.settings = settings
        self.store = store
        self.allow = parse_allow(settings.callback_allow)
        self.schedule: tuple[float, ...] = tuple(settings.callback_retry_s)
        self.base_url = public_base_url(settings)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def check_url(self, url: str | None) -> None:
        """The submit-time check of a callback URL (`check_callback_url` with this server's allow list)."""
        if url:
            check_callback_url(url, self.allow)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allow), use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.callback_timeout_s))
        return self._session

    def deliver(self, job_id: str) -> asyncio.Task[None] | None:
        """Schedule the delivery of ``job_id``'s callback (returns its task; None once closed)."""
        if self._closed:
            return None
        task = asyncio.create_task(self._deliver(job_id), name=f"callback-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda t: self._tasks.pop(job_id, None) if self._tasks.get(job_id) is t else None)
        return task

    def pending(self) -> int:
        """Deliveries in progress (attempting or waiting for a retry)."""
        return len(self._tasks)

    async def close(self) -> None:
        """Stop: deliveries still waiting are recorded ``interrupted``; the HTTP session closes."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()

    async def _record(self, job_id: str, status: str, attempts: int | None = None, error: str | None = None,
                      delivered: bool = False) -> None:
        try:
            await asyncio.to_thread(self.store.record_callback, job_id, status, attempts, error, delivered)
        except Exception:
            log.warning("recording the callback delivery of job %s failed", job_id, exc_info=True)

    async def _deliver(self, job_id: str) -> None:
        attempts = 0
        try:
            job = await asyncio.to_thread(self.store.get, job_id)
            if job is None or not job.callback_url:
                return
            url = URL(strip_credentials(job.callback_url))
            body = json.dumps({"job_id": job.id, "status": job.status, "error": job.error,
                               "links": job_links(self.base_url, job.id)}, separators=(",", ":")).encode()
            await self._record(job_id, PENDING, 0)
            for delay in (*self.schedule, None):
                attempts += 1
                retry, error = await self._attempt(url, body, attempts)
                if error is None:
                    await self._record(job_id, DELIVERED, attempts, delivered=True)
                    return
                if not retry or delay is None:
                    await self._record(job_id, FAILED, attempts, error)
                    log.warning("callback of job %s to %s failed after %d attempt(s): %s", job_id, url, attempts,
                                error)
                    return
                await self._record(job_id, PENDING, attempts, error)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            await asyncio.shield(self._record(job_id, INTERRUPTED, attempts or None,
                                              "the server stopped before the callback was delivered"))
            raise
        except Exception as exc:  # never let a delivery task die silently
            log.exception("callback of job %s failed", job_id)
            await self._record(job_id, FAILED, attempts or None, f"internal error ({type(exc).__name__})")

    async def _attempt(self, url: URL, body: bytes, attempt: int) -> tuple[bool, str | None]:
        """One POST: (retry?, error or None when delivered)."""
        host = url.raw_host or ""
        ip = literal_ip(host)
        try:
            if ip is not None and not self.allow.allows_host(host):
                check_ip(ip, self.allow, host)  # an IP literal never reaches the resolver
        except RefusedAddress as exc:
            return False, f"refused: {exc}"
        headers = {"Content-Type": "application/json", "X-Callback-Attempt": str(attempt)}
        if self.settings.api_key:
            headers["X-Signature"] = sign(body, self.settings.api_key)
        try:
            async with self._http().post(url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                where = resp.headers.get("Location", "")
        except aiohttp.ClientConnectorError as exc:
            refused = _refusal(exc)
            if refused is not None:
                return False, f"refused: {refused}"
            return True, f"cannot connect: {exc.os_error or exc}"
        except TimeoutError:
            return True, f"timed out after {self.settings.callback_timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return True, f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return False, None
        if 300 <= status < 400:
            return False, f"HTTP {status}: redirects are not followed" + (f" (to {where[:200]})" if where else "")
        return status >= 500 or status in RETRY_STATUSES, f"HTTP {status}"


def _refusal(exc: BaseException) -> str | None:
    """The `RefusedAddress` behind a connection error, if that is why it failed."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, RefusedAddress):
            return str(cur)
        nxt = getattr(cur, "os_error", None)
        cur = nxt if isinstance(nxt, BaseException) and id(nxt) not in seen else (cur.__cause__ or cur.__context__)
    return None
