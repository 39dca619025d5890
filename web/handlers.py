"""Thin HTTP handlers over the service layer (JobManager, JobStore, MarketDataService).

Each handler parses and checks its inputs, calls one service method (in a worker thread when
it touches the database, files or compute) and shapes the JSON answer.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import web

from ..core.artifacts import Artifact
from ..core.errors import GpuBacktestError, NotFoundError
from ..core.gpustatus import gpu_status
from ..core.jobstatus import STATUSES, SUCCEEDED
from ..core.jsonsafe import json_cell
from ..plugins.manager import strategies
from . import keys as K
from .uploads import RequestTimeout, closing_error

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class BadRequest(GpuBacktestError):
    code = "bad_request"
    status = 400


class UnsupportedMediaType(GpuBacktestError):
    code = "unsupported_media_type"
    status = 415


class Conflict(GpuBacktestError):
    code = "conflict"
    status = 409


class PayloadTooLarge(GpuBacktestError):
    code = "payload_too_large"
    status = 413


class Unavailable(GpuBacktestError):
    code = "unavailable"
    status = 503


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name} must be an integer", {"parameter": name}) from None
    if not lo <= v <= hi:
        raise BadRequest(f"query parameter {name} must be between {lo} and {hi}", {"parameter": name})
    return v


def _json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows at full float precision (``DataFrame.to_json`` rounds to 10 decimal places)."""
    return [{k: json_cell(v) for k, v in rec.items()} for rec in table.to_dict("records")]


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _json_number(text: str, parse: Any) -> Any:
    value = parse(text)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        finite = False
    if not finite:
        raise ValueError(f"number {text[:20]}{'…' if len(text) > 20 else ''} is out of range")
    return value


def _parse_json(text: str) -> Any:
    """Strict JSON: no NaN/Infinity, every number a finite double (RFC 8259 interoperability)."""
    return json.loads(text, parse_constant=_json_constant, parse_float=lambda t: _json_number(t, float),
                      parse_int=lambda t: _json_number(t, int))


def _job_links(job_id: str) -> dict[str, str]:
    return {"self": f"/backtest/{job_id}", "results": f"/backtest/{job_id}/results"}


def _job_doc(job: Any, full: bool = True, history: list[Any] | None = None) -> dict[str, Any]:
    d = job.to_dict()
    doc = {k: d.get(k) for k in ("id", "status", "progress", "stage", "error", "attempts", "created_at",
                                   "started_at", "finished_at", "callback")}
    doc["job_id"] = doc.pop("id")
    if full:
        doc["spec"] = d.get("spec")
        doc["summary"] = d.get("summary")
    if history is not None:
        doc["attempts_history"] = [a.to_dict() for a in history]
    doc["links"] = _job_links(doc["job_id"])
    return doc


async def _job(request: web.Request) -> Any:
    job_id = request.match_info["job_id"]
    if not JOB_ID_RE.match(job_id):
        raise NotFoundError(f"no job {job_id!r}", {"job_id": job_id})
    job = await asyncio.to_thread(request.app[K.STORE].get, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}", {"job_id": job_id})
    return job


# -- backtests --------------------------------------------------------------------------------
async def submit_backtest(request: web.Request) -> web.Response:
    """POST /backtest: validate, persist, 202 with the job id and links."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("POST /backtest takes application/json")
    manager = request.app[K.JOBS]
    if not manager.accepting:
        raise Unavailable("the server is shutting down; retry on another instance")
    timeout = request.app[K.SETTINGS].body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            text = await request.text()
    except TimeoutError:
        return closing_error(request, RequestTimeout(timeout))
    except (UnicodeDecodeError, LookupError) as exc:  # not UTF-8 (or an unknown charset)
        raise BadRequest(f"malformed JSON: {exc}") from None
    try:
        doc = _parse_json(text)
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, out-of-range numbers
        raise BadRequest(f"malformed JSON: {exc}") from None
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 200):
        raise BadRequest("Idempotency-Key must be 1 to 200 characters")
    if key is not None and not _utf8_text(key):
        raise BadRequest("Idempotency-Key must be UTF-8 text without control characters",
                         {"header": "Idempotency-Key"})
    job = await manager.submit(doc, key)
    body = _job_doc(job, full=False)
    return web.json_response(body, status=202, headers={"Location": f"/backtest/{job.id}"})


def _utf8_text(value: str) -> bool:
    """True for text that was valid UTF-8 (aiohttp keeps other bytes as surrogates) and printable."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return value.isprintable()


async def list_backtests(request: web.Request) -> web.Response:
    """GET /backtest?status=&limit=&offset=: newest first."""
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", {"parameter": "status"})
    limit = _int_param(request, "limit", 50, 1, 500)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    jobs, total = await asyncio.to_thread(request.app[K.STORE].list, status, limit, offset)
    return web.json_response({"jobs": [_job_doc(j, full=False) for j in jobs], "total": total,
                              "limit": limit, "offset": offset})


async def get_backtest(request: web.Request) -> web.Response:
    """GET /backtest/{job_id}: status, progress, timings, error, the summary when done, and the
    history of its runs (``attempts_history``: generation, owner, started, ended, outcome)."""
    job = await _job(request)
    history = await asyncio.to_thread(request.app[K.STORE].attempts_history, job.id)
    return web.json_response(_job_doc(job, history=history))


async def cancel_backtest(request: web.Request) -> web.Response:
    """DELETE /backtest/{job_id}: cancel (queued: never runs; running: stops at its next chunk)."""
    await _job(request)
    job = await request.app[K.JOBS].cancel(request.match_info["job_id"])
    return web.json_response(_job_doc(job, full=False))


async def backtest_results(request: web.Request) -> web.StreamResponse:
    """GET /backtest/{job_id}/results?format=json|csv|parquet&limit=&offset=&sort=: the full table,
    read from the job's Parquet pieces (merged in rank order, in bounded memory, off the loop)."""
    job = await _job(request)
    if job.status != SUCCEEDED or not job.artifact_path:
        raise Conflict(f"job {job.id} is {job.status}; results exist once it has succeeded",
                       {"status": job.status})
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv", "parquet"):
        raise BadRequest("format must be json, csv or parquet", {"parameter": "format"})
    art = await asyncio.to_thread(Artifact.open, job.artifact_path)
    columns = art.table_columns()
    sort = request.query.get("sort")
    desc = False
    if sort is not None:
        desc = sort.startswith("-")
        sort = sort.lstrip("-")
        if sort not in columns:
            raise BadRequest(f"cannot sort by {sort!r}; columns: {', '.join(columns)}", {"parameter": "sort"})
    paged = "limit" in request.query or "offset" in request.query
    if fmt == "json":
        limit = _int_param(request, "limit", 100, 1, 10_000)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        page = await asyncio.to_thread(art.page, offset, limit, sort, desc)
        rows = await asyncio.to_thread(_json_rows, page)
        return web.json_response({"job_id": job.id, "total": art.total, "limit": limit, "offset": offset,
                                  "columns": columns, "rows": rows})
    if fmt == "csv":
        if paged or sort is not None:
            offset = _int_param(request, "offset", 0, 0, 10**9)
            limit = _int_param(request, "limit", art.total or 1, 1, 10**9)
            page = await asyncio.to_thread(art.page, offset, limit, sort, desc)
            batches: Any = iter([page])
        else:
            batches = art.ranked_batches()
        resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                           "Content-Disposition": f'attachment; filename="{job.id}.csv"'})
        await resp.prepare(request)
        header = True
        while True:
            text = await asyncio.to_thread(_next_csv, batches, header)
            if text is None:
                break
            header = False
            await resp.write(text.encode())
        await resp.write_eof()
        return resp
    path = await asyncio.to_thread(_ranked_parquet_file, art)
    try:
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.apache.parquet",
                                           "Content-Disposition": f'attachment; filename="{job.id}.parquet"'})
        resp.content_length = path.stat().st_size
        await resp.prepare(request)
        with path.open("rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, 1 << 20):
                await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        path.unlink(missing_ok=True)


def _next_csv(batches: Any, header: bool) -> str | None:
    """The next batch of a ranked table as CSV text (None when done)."""
    batch = next(batches, None)
    if batch is None:
        return None
    buf = io.StringIO()
    batch.to_csv(buf, index=False, header=header)
    return buf.getvalue()


def _ranked_parquet_file(art: Artifact) -> Path:
    """The ranked table as one temporary Parquet file, written batch by batch."""
    fd, tmp = tempfile.mkstemp(prefix="gpu-backtest-results-", suffix=".parquet")
    os.close(fd)
    writer = None
    try:
        for batch in art.ranked_batches():
            table = pa.Table.from_pandas(batch, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table.cast(writer.schema))
        if writer is None:
            pq.write_table(pa.table({c: pa.array([], pa.null()) for c in art.table_columns()}), tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.close()
    return Path(tmp)


# -- catalogue and status ---------------------------------------------------------------------
async def list_strategies(request: web.Request) -> web.Response:
    """GET /strategies: each strategy with its description and parameter schema."""
    return web.json_response({"strategies": [s.schema() for s in strategies(request.app[K.PM]).values()]})


async def get_gpu_status(request: web.Request) -> web.Response:
    """GET /gpu/status: the device (or why there is none) and the Dask cluster."""
    status = await asyncio.to_thread(gpu_status, request.app[K.SETTINGS])
    cluster = request.app.get(K.CLUSTER)
    status["cluster"] = await asyncio.to_thread(cluster.info) if cluster is not None else None
    status["engine_backend"] = request.app[K.ENGINE].backend.name
    # the Dask dashboard (GPU_BACKTEST_DASHBOARD_ADDRESS; by default on this machine's loopback only)
    status["links"] = {"dashboard": (status["cluster"] or {}).get("dashboard")}
    return web.json_response(status)


async def health(request: web.Request) -> web.Response:
    """GET /health: liveness (no auth)."""
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    counts = await asyncio.to_thread(request.app[K.STORE].counts_by_status)
    body = request.app[K.METRICS].render(counts, request.app[K.JOBS].running_count())
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


# -- data ---------------------------------------------------------------------------------------
async def data_sources(request: web.Request) -> web.Response:
    """GET /data/sources."""
    return web.json_response({"sources": await asyncio.to_thread(request.app[K.DATA].describe_sources)})


async def data_symbols(request: web.Request) -> web.Response:
    """GET /data/symbols?source=&frequency=&prefix=&limit=&offset=: stored series with first/last bar."""
    svc = request.app[K.DATA]
    source = request.query.get("source")
    frequency = request.query.get("frequency")
    prefix = request.query.get("prefix")
    limit = _int_param(request, "limit", 100, 1, 10_000)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    entries = await asyncio.to_thread(svc.symbols, source, frequency, prefix, limit, offset)
    if prefix:  # the store counts by source and frequency only
        total = len(await asyncio.to_thread(svc.symbols, source, frequency, prefix))
    else:
        total = await asyncio.to_thread(svc.store.count, source, frequency)
    return web.json_response({"symbols": [e.to_dict() for e in entries], "total": total, "limit": limit,
                              "offset": offset})
