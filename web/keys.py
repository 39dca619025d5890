"""Typed keys of the application's shared state (aiohttp ``web.AppKey``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

SETTINGS: web.AppKey[Any] = web.AppKey("settings", object)
METRICS: web.AppKey[Any] = web.AppKey("metrics", object)
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
PM: web.AppKey[Any] = web.AppKey("pm", object)
STORE: web.AppKey[Any] = web.AppKey("store", object)
DATA: web.AppKey[Any] = web.AppKey("data", object)
CLUSTER: web.AppKey[Any] = web.AppKey("cluster", object)
ENGINE: web.AppKey[Any] = web.AppKey("engine", object)
JOBS: web.AppKey[Any] = web.AppKey("jobs", object)
OPENAPI_30: web.AppKey[dict[str, Any]] = web.AppKey("openapi_30", dict)  # the document's 3.0 form (/docs)
WATCH: web.AppKey[Any] = web.AppKey("watch", object)  # FinishWatch: wakes long-polls (web/jobwatch.py)
STRATEGIES: web.AppKey[Any] = web.AppKey("strategies", object)  # StrategyCatalog: registered + saved
COLUMN_SLOTS: web.AppKey[Any] = web.AppKey("column_slots", object)  # bounds on-demand column computations
WARMUP: web.AppKey[Any] = web.AppKey("warmup", object)  # ServerWarmup: the background warm-up (web/warmup.py)

# per-request state (web.RequestKey exists from aiohttp 3.13; a plain string before)
REQUEST_ID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
