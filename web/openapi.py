"""The OpenAPI 3 document of the service (served at /openapi.json) and a small /docs page."""

from __future__ import annotations

import html
from typing import Any

from .. import __version__
from ..core.jobstatus import ATTEMPT_OUTCOMES, STATUSES
from ..core.spec import BacktestSpec

ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(desc: str, schema: dict[str, Any] | None = None, ctype: str = "application/json") -> dict[str, Any]:
    return {"description": desc, "content": {ctype: {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "bad request", 401: "missing or invalid X-API-Key", 404: "not found", 409: "conflict",
             413: "payload too large", 415: "unsupported media type", 422: "invalid input", 503: "unavailable"}
    return {str(c): _resp(names[c], ERROR) for c in codes}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}]


def openapi_document() -> dict[str, Any]:
    """The whole API: every endpoint, its parameters, bodies and answers."""
    spec_schema = BacktestSpec.json_schema()  # derived from the validator's own field rules (core/spec.py)
    job = {"type": "object", "properties": {
        "job_id": {"type": "string"}, "status": {"enum": list(STATUSES)},
        "progress": {"type": "number"}, "stage": {"type": ["string", "null"]}, "error": {},
        "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
        "finished_at": {"type": ["string", "null"]}, "summary": {}, "links": {"type": "object"},
        "attempts": {"type": "integer"},
        "attempts_history": {"type": "array", "items": {"type": "object", "properties": {
            "generation": {"type": "integer"}, "owner": {"type": "string"}, "started_at": {"type": "string"},
            "ended_at": {"type": ["string", "null"]},
            "outcome": {"enum": list(ATTEMPT_OUTCOMES)}}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "gpu_backtest — AlphaStrategyLab GPU Backtesting Server", "version": __version__},
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "details": {}}},
                "request_id": {"type": "string"}}}, "BacktestSpec": spec_schema, "Job": job},
        },
        "security": [{"ApiKey": []}],
        "paths": {
            "/backtest": {
                "post": {"summary": "Submit a backtest or sweep", "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/BacktestSpec"}}}},
                    "responses": {"202": _resp("accepted", {"$ref": "#/components/schemas/Job"}),
                                  **_errors(400, 401, 415, 422, 503)}},
                "get": {"summary": "List jobs", "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}}, *PAGE],
                    "responses": {"200": _resp("jobs"), **_errors(400, 401)}},
            },
            "/backtest/{job_id}": {
                "get": {"summary": "Job status, progress and summary", "parameters": [JOB_ID],
                        "responses": {"200": _resp("job", {"$ref": "#/components/schemas/Job"}), **_errors(401, 404)}},
                "delete": {"summary": "Cancel a job", "parameters": [JOB_ID],
                           "responses": {"200": _resp("job"), **_errors(401, 404)}},
            },
            "/backtest/{job_id}/results": {"get": {
                "summary": "The full per-column result table", "parameters": [
                    JOB_ID, {"name": "format", "in": "query", "schema": {"enum": ["json", "csv", "parquet"]}},
                    {"name": "sort", "in": "query", "schema": {"type": "string"}}, *PAGE],
                "responses": {"200": _resp("rows"), **_errors(400, 401, 404, 409)}}},
            "/strategies": {"get": {"summary": "Strategies and their parameters", "responses": {
                "200": _resp("strategies"), **_errors(401)}}},
            "/gpu/status": {"get": {"summary": "GPU and Dask cluster status", "responses": {
                "200": _resp("status"), **_errors(401)}}},
            "/data/sources": {"get": {"summary": "Data sources", "responses": {"200": _resp("sources"),
                                                                                **_errors(401)}}},
            "/data/symbols": {"get": {"summary": "Stored symbols with first/last bar", "parameters": [
                {"name": "source", "in": "query", "schema": {"type": "string"}},
                {"name": "frequency", "in": "query", "schema": {"type": "string"}},
                {"name": "prefix", "in": "query", "schema": {"type": "string"}}, *PAGE],
                "responses": {"200": _resp("symbols"), **_errors(400, 401, 404)}}},
            "/data/upload": {"post": {"summary": "Upload market data (CSV or Parquet)", "requestBody": {
                "required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "string", "format": "binary"}, "symbol": {"type": "string"},
                    "source": {"type": "string"}, "frequency": {"type": "string"}}}}}},
                "responses": {"201": _resp("stored"), **_errors(400, 401, 413, 415, 422)}}},
            "/health": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _resp("ok")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": _resp("metrics", {"type": "string"}, "text/plain"), **_errors(401)}}},
            "/openapi.json": {"get": {"summary": "This OpenAPI document", "responses": {
                "200": _resp("the OpenAPI 3 document"), **_errors(401)}}},
            "/docs": {"get": {"summary": "The API documentation page (HTML)", "responses": {
                "200": _resp("HTML page", {"type": "string"}, "text/html"), **_errors(401)}}},
        },
    }


def docs_page(doc: dict[str, Any]) -> str:
    """A self-contained HTML page listing the endpoints (no external assets)."""
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op.get('summary', ''))}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>gpu_backtest API</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{padding:.3em 1em}</style></head><body>"
            f"<h1>{html.escape(doc['info']['title'])}</h1><p>Version {html.escape(doc['info']['version'])}. "
            "Machine-readable: <a href='/openapi.json'>/openapi.json</a>. Auth: <code>X-API-Key</code> "
            "when <code>API_KEY_REQUIRED</code>.</p><table>" + "".join(rows) + "</table></body></html>")
