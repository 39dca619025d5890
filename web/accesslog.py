"""The access log and the request metrics: one line per request — request id, method, route,
path, status, duration — and the same observation counted and timed for Prometheus
(labelled by route, not raw path, and status).

Logger ``gpu_backtest.web.access``; INFO, WARNING for a 5xx. Sits inside `request_id_middleware`
(it needs the id) and outside the error envelope (it logs the status the client gets). While
the request is handled, `core.logs.request_id_var` holds its id, so every line logged on its
behalf (a job submitted, an error) carries it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..core.logs import request_id_var
from . import keys as K
from .middlewares import Handler

log = logging.getLogger("gpu_backtest.web.access")
CLIENT_GONE = 499  # the client closed the connection before the response (nginx's convention)


def _route(request: web.Request) -> str:
    info = request.match_info.route.resource if request.match_info.route else None
    return info.canonical if info is not None else "unmatched"


def access_log_middleware(metrics: Any = None) -> Callable[..., Any]:
    """Log each request once it is answered (or abandoned), and observe it in ``metrics``
    (`web.metrics.ServiceMetrics`; None: log only)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _observed(request, handler, metrics)

    return middleware


async def _observed(request: web.Request, handler: Handler, metrics: Any) -> web.StreamResponse:
    rid = request.get(K.REQUEST_ID)
    token = request_id_var.set(rid)
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        ms = (time.perf_counter() - t0) * 1000.0
        route = _route(request)
        if metrics is not None:
            metrics.observe_request(request.method, route, status, ms / 1000.0)
        log.log(logging.WARNING if status >= 500 else logging.INFO, "%s %s %d %.1f ms",
                request.method, request.path, status, ms,
                extra={"event": "request", "request_id": rid, "method": request.method, "route": route,
                       "path": request.path, "status": status, "duration_ms": round(ms, 3)})
        request_id_var.reset(token)
