"""The access log: one line per request — request id, method, route, path, status, duration.

Logger ``gpu_backtest.web.access``; INFO, WARNING for a 5xx. Sits inside `request_id_middleware`
(it needs the id) and outside the error envelope (it logs the status the client gets). While
the request is handled, `core.logs.request_id_var` holds its id, so every line logged on its
behalf (a job submitted, an error) carries it too.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from ..core.logs import request_id_var
from . import keys as K
from .middlewares import Handler

log = logging.getLogger("gpu_backtest.web.access")
CLIENT_GONE = 499  # the client closed the connection before the response (nginx's convention)


def _route(request: web.Request) -> str:
    info = request.match_info.route.resource if request.match_info.route else None
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log the request once it is answered (or abandoned)."""
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
        log.log(logging.WARNING if status >= 500 else logging.INFO, "%s %s %d %.1f ms",
                request.method, request.path, status, ms,
                extra={"event": "request", "request_id": rid, "method": request.method, "route": route,
                       "path": request.path, "status": status, "duration_ms": round(ms, 3)})
        request_id_var.reset(token)
