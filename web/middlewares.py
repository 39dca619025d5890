"""Middlewares: request ids, CORS, API-key auth, the JSON error envelope.

Request metrics and the access log are one middleware of their own (web/accesslog.py).

Every error a client sees is ``{"error": {"code", "message", "details"}, "request_id"}``;
no traceback ever reaches a client (GPU_SERVER_DEBUG only adds logging).
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..core.errors import GpuBacktestError
from . import keys as K

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = {"/health"}
DOCS_PATHS = {"/docs", "/openapi.json"}  # and everything under /docs/: public with GPU_BACKTEST_PUBLIC_DOCS
CORS_ALLOW_HEADERS = "X-API-Key, Idempotency-Key, Content-Type, X-Request-ID"
CORS_EXPOSE_HEADERS = "X-Request-ID, Location, Content-Disposition"
CORS_METHODS = "GET, POST, DELETE"
CORS_MAX_AGE_S = 600


def error_response(status: int, code: str, message: str, details: Any = None,
                   request_id: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    """The JSON error envelope."""
    body = {"error": {"code": code, "message": message, "details": details}, "request_id": request_id}
    return web.json_response(body, status=status, headers=headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
               503: "unavailable"}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take X-Request-ID from the client (if sane) or make one; echo it back."""
    rid = request.headers.get("X-Request-ID", "")
    if not (0 < len(rid) <= 64 and rid.replace("-", "").isalnum() and rid.isascii()):
        rid = uuid.uuid4().hex
    request[K.REQUEST_ID] = rid
    resp = await handler(request)
    resp.headers["X-Request-ID"] = rid
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map exceptions to the envelope: GpuBacktestError → its status, HTTP errors → theirs, else 500."""
    rid = request.get(K.REQUEST_ID)
    try:
        return await handler(request)
    except GpuBacktestError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, rid)
    except HttpProcessingError as exc:  # a body aiohttp could not parse (e.g. a multipart part's headers)
        return error_response(400, "bad_request", f"malformed request: {exc.message or type(exc).__name__}"[:300],
                              None, rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        msg = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return error_response(exc.status, code, msg or exc.reason, None, rid,
                              headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except Exception:
        log.exception("unhandled error on %s %s (request %s)", request.method, request.path, rid)
        return error_response(500, "internal_error", "internal server error", None, rid)


def is_public(path: str, public_docs: bool) -> bool:
    """Whether ``path`` is served without a key: /health; with ``public_docs`` also the explorer and the document."""
    return path in PUBLIC_PATHS or (public_docs and (path in DOCS_PATHS or path.startswith("/docs/")))


def auth_middleware(api_key: str | None, required: bool, public_docs: bool = False,
                    console: Callable[[web.Request], str | None] | None = None) -> Callable[..., Any]:
    """X-API-Key on every path but /health (and, with ``public_docs``, /docs, /docs/… and /openapi.json)
    when ``required``; constant-time comparison on bytes. ``console(request)``: "console" for the web
    console's pages (its own middleware guards them, web/console.py), "session" for a report route
    opened by a logged-in console session cookie, else None (the key is needed)."""
    expected = (api_key or "").encode("utf-8")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if required and console is not None and console(request) is not None:
            return await handler(request)
        if required and not is_public(request.path, public_docs):
            given = request.headers.get("X-API-Key", "").encode("utf-8", "surrogateescape")
            if not given or not hmac.compare_digest(given, expected):
                return error_response(401, "unauthorized", "missing or invalid X-API-Key", None,
                                      request.get(K.REQUEST_ID))
        return await handler(request)

    return middleware


def cors_middleware(origins: tuple[str, ...]) -> Callable[..., Any]:
    """Answer CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``) from ``origins``
    (``*``: any) before authentication; `cors_headers` adds the headers to every answer."""
    allow_any = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if (request.method == "OPTIONS" and origin and "Access-Control-Request-Method" in request.headers
                and (allow_any or origin in origins)):
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS, "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                "Vary": "Origin"})
        return await handler(request)

    return middleware


def cors_headers(origins: tuple[str, ...]) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook: Access-Control-Allow-Origin (and exposed headers) on answers to
    a listed origin — errors and streamed downloads included."""
    allow_any = "*" in origins

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and (allow_any or origin in origins) and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")

    return hook


async def request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: X-Request-ID on every answer, streamed ones included."""
    rid = request.get(K.REQUEST_ID)
    if rid and "X-Request-ID" not in response.headers:
        response.headers["X-Request-ID"] = rid
