"""Thin HTTP handlers over the service layer (JobManager, JobStore, MarketDataService).

Each handler parses and checks its inputs, calls one service method (in a worker thread when
it touches the database, files or compute) and shapes the JSON answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
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

from ..core.artifacts import Artifact, read_details
from ..core.engine import StrategyError
from ..core.errors import GpuBacktestError, NotFoundError
from ..core.gpustatus import gpu_status
from ..core.jobstatus import CANCELLED, QUEUED, RUNNING, STATUSES, SUCCEEDED
from ..core.jsonsafe import json_cell, to_jsonable
from ..core.timeutil import utc_now
from . import keys as K
from . import schemas as S
from .httperrors import BadRequest, Conflict, RequestTimeout, Unavailable, UnsupportedMediaType
from .jobwatch import POLL_S
from .openapi import MAX_WAIT_S, TOP_DEFAULT, TOP_MAX
from .uploads import closing_error

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
VIEWS = ("compact", "status", "full")







class StrategyFailed(GpuBacktestError):
    """A strategy's code raised while computing a column on demand (the job itself had succeeded)."""

    code = "strategy_error"
    status = 422


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
    base = f"/backtest/{job_id}"
    return {"self": base, "results": f"{base}/results", "details": f"{base}/details",
            "columns": f"{base}/columns/{{n}}"}


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    if not isinstance(a, dt.datetime) or not isinstance(b, dt.datetime):
        return None
    return round(max(0.0, (b - a).total_seconds()), 3)


def _timings(job: Any, now: dt.datetime) -> dict[str, Any]:
    """Submitted/started/finished, and seconds queued and run (until now while queued or running)."""
    queued = job.status == QUEUED
    started = None if queued else job.started_at
    return {"created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at),
            "queued_s": _seconds(job.created_at, now if queued else (started or job.finished_at)),
            "run_s": _seconds(started, job.finished_at or now) if started is not None else None}


def _eta(job: Any, now: dt.datetime) -> float | None:
    """Seconds left at the progress rate so far (running jobs with some progress), else None."""
    p = float(job.progress or 0.0)
    if job.status != RUNNING or not 0.0 < p < 1.0 or not isinstance(job.started_at, dt.datetime):
        return None
    elapsed = max(0.0, (now - job.started_at).total_seconds())
    return round(elapsed * (1.0 - p) / p, 3)


def _error(error: Any) -> dict[str, Any] | None:
    """A stored job error as the envelope's inner object (code, message, details)."""
    if not error:
        return None
    if not isinstance(error, dict):
        return {"code": "error", "message": str(error), "details": None}
    return {**error, "code": str(error.get("code") or "error"), "message": str(error.get("message") or ""),
            "details": error.get("details")}


def _status_doc(job: Any, now: dt.datetime) -> dict[str, Any]:
    return {"job_id": job.id, "status": job.status, "progress": min(1.0, max(0.0, float(job.progress or 0.0))),
            "stage": job.stage, "eta_s": _eta(job, now), "error": _error(job.error), "links": _job_links(job.id)}


def _brief_doc(job: Any, now: dt.datetime) -> dict[str, Any]:
    # strategy / n_symbols / n_columns: columns of the jobs table (None where the store does not have them)
    return {**_status_doc(job, now), "strategy": getattr(job, "strategy", None),
            "n_symbols": getattr(job, "n_symbols", None), "n_columns": getattr(job, "n_columns", None),
            "attempts": job.attempts, "timings": _timings(job, now)}


def _compact_doc(job: Any, history: list[Any], top: int, now: dt.datetime) -> dict[str, Any]:
    summary = job.summary if job.status == SUCCEEDED and isinstance(job.summary, dict) else None
    info = summary.get("info") if summary else None
    if isinstance(info, dict) and isinstance(info.get("walk_forward"), dict):  # curves: ?view=full only
        wf = info["walk_forward"]
        info = {**info, "walk_forward": {**wf, "symbols": [{k: v for k, v in s.items() if k != "equity"}
                                                           for s in wf.get("symbols") or []]}}
    rows = None
    if summary is not None:
        rows = [{k: r.get(k) for k in ("rank", "column", "symbol", "params", "metrics")}
                for r in (summary.get("top") or [])[:top]]
    return {**_brief_doc(job, now), "info": info, "top": rows, "attempts_history": [a.to_dict() for a in history],
            "callback": job.callback_doc()}


def job_brief(job: Any) -> dict[str, Any]:
    """A job as listed, submitted and cancelled (`schemas.JobBrief`)."""
    return S.build(S.JobBrief, _brief_doc(job, utc_now()))


async def _job(request: web.Request, light: bool = False) -> Any:
    job_id = request.match_info["job_id"]
    if not JOB_ID_RE.fullmatch(job_id):
        raise NotFoundError(f"no job {job_id!r}", {"job_id": job_id})
    store = request.app[K.STORE]
    job = await asyncio.to_thread(store.get_light if light else store.get, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}", {"job_id": job_id})
    return job


def _wait_param(request: web.Request) -> float | None:
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 < value <= MAX_WAIT_S):
        raise BadRequest(f"query parameter wait must be a number of seconds, more than 0 and at most {MAX_WAIT_S:g}",
                         {"parameter": "wait"})
    return value


def _dumps(doc: Any) -> str:
    return json.dumps(to_jsonable(doc), separators=(",", ":"), allow_nan=False)


async def _json_body(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer (non-finite numbers as null) serialised off the event loop: for large documents."""
    body = await asyncio.to_thread(_dumps, doc)
    return web.Response(body=body.encode(), status=status, headers=headers, content_type="application/json",
                        charset="utf-8")


async def read_json_body(request: web.Request, what: str) -> Any:
    """The request's JSON document, parsed off the event loop within GPU_BACKTEST_BODY_TIMEOUT_S
    (a slow body: the 408 response to send, closing the connection). 415 / 400 otherwise."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"{what} takes application/json")
    timeout = request.app[K.SETTINGS].body_timeout_s
    try:
        async with asyncio.timeout(timeout):
            text = await request.text()
    except TimeoutError:
        return closing_error(request, RequestTimeout(timeout))
    except (UnicodeDecodeError, LookupError) as exc:  # not UTF-8 (or an unknown charset)
        raise BadRequest(f"malformed JSON: {exc}") from None
    try:
        return await asyncio.to_thread(_parse_json, text)  # O(body): off the event loop
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, out-of-range numbers
        raise BadRequest(f"malformed JSON: {exc}") from None


# -- backtests --------------------------------------------------------------------------------
async def submit_backtest(request: web.Request) -> web.Response:
    """POST /backtest: validate, persist, 202 with the job id and links."""
    manager = request.app[K.JOBS]
    if not manager.accepting:
        raise Unavailable("the server is shutting down; retry on another instance")
    doc = await read_json_body(request, "POST /backtest")
    if isinstance(doc, web.Response):
        return doc
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 200):
        raise BadRequest("Idempotency-Key must be 1 to 200 characters", {"parameter": "Idempotency-Key"})
    if key is not None and not _utf8_text(key):
        raise BadRequest("Idempotency-Key must be UTF-8 text without control characters",
                         {"parameter": "Idempotency-Key"})
    job = await manager.submit(doc, key)
    return web.json_response(job_brief(job), status=202, headers={"Location": f"/backtest/{job.id}"})


def _utf8_text(value: str) -> bool:
    """True for text that was valid UTF-8 (aiohttp keeps other bytes as surrogates) and printable."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return value.isprintable()


async def list_backtests(request: web.Request) -> web.Response:
    """GET /backtest?status=&limit=&offset=: newest first; each job brief (status, progress, timings,
    strategy, n_symbols, n_columns), never its spec or summary."""
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", {"parameter": "status"})
    limit = _int_param(request, "limit", 50, 1, 500)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    jobs, total = await asyncio.to_thread(request.app[K.STORE].list, status, limit, offset)
    now = utc_now()
    return web.json_response(S.build(S.JobList, {"jobs": [_brief_doc(j, now) for j in jobs], "total": total,
                                                 "limit": limit, "offset": offset}))


async def get_backtest(request: web.Request) -> web.Response:
    """GET /backtest/{job_id}?view=compact|status|full&wait=S&top=N.

    compact (default): status, progress, stage, ETA, timings, error, the run's info and its best
    rows' metrics, the history of its runs; status: the lightest form; full: also the spec and the
    whole stored summary (top-k equity curves and trades). ``wait``: long-poll until the job is
    final, at most S seconds (woken by this server's finish events; the database is re-read every
    `jobwatch.POLL_S`, for jobs that end on another server)."""
    view = request.query.get("view", "compact")
    if view not in VIEWS:
        raise BadRequest(f"view must be one of {', '.join(VIEWS)}", {"parameter": "view"})
    wait = _wait_param(request)
    top = _int_param(request, "top", TOP_DEFAULT, 0, TOP_MAX)
    light = view == "status"
    job = await _job(request, light=light or wait is not None)
    if wait is not None:
        if not job.is_final:
            job = await _long_poll(request, job, wait)
        if not light:
            job = await _job(request)  # the whole row, as it is now
    now = utc_now()
    if light:
        return web.json_response(S.build(S.JobStatusDoc, _status_doc(job, now)))
    history = await asyncio.to_thread(request.app[K.STORE].attempts_history, job.id)
    doc = S.build(S.JobDoc, _compact_doc(job, history, top, now))
    if view == "full":
        summary = job.summary
        if isinstance(summary, dict) and "details" not in summary:  # stored beside the table
            summary = {**summary, "details": await _stored_details(job)}
        return await _json_body({**doc, "spec": job.to_dict()["spec"], "summary": summary})  # credentials stripped
    return web.json_response(doc)


async def _long_poll(request: web.Request, job: Any, wait: float) -> Any:
    """The job once final, or as it is after ``wait`` seconds (never blocks the loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    store, watch = request.app[K.STORE], request.app[K.WATCH]
    while not job.is_final:
        left = deadline - loop.time()
        if left <= 0:
            break
        await watch.wait(job.id, min(left, POLL_S))
        job = await asyncio.to_thread(store.get_light, job.id) or job
    return job


async def cancel_backtest(request: web.Request) -> web.Response:
    """DELETE /backtest/{job_id}: cancel (queued: never runs; running: stops at its next chunk);
    409 for a job already succeeded, failed or cancelled. ``?purge=true`` deletes a finished job
    and its results instead (409 for a queued or running one: cancel it first)."""
    purge = request.query.get("purge", "false")
    if purge not in ("true", "false"):
        raise BadRequest("query parameter purge must be true or false", {"parameter": "purge"})
    job = await _job(request, light=True)
    if purge == "true":
        if not job.is_final:
            raise Conflict(f"job {job.id} is {job.status}; cancel it first, then delete it with ?purge=true",
                           {"status": job.status})
        gone = await request.app[K.JOBS].delete(job.id)
        if gone is None:
            raise NotFoundError(f"no job {job.id!r}", {"job_id": job.id})
        return web.json_response(job_brief(gone))
    if not job.is_final:
        job = await request.app[K.JOBS].cancel(job.id) or job
        if job.status == CANCELLED:
            request.app[K.WATCH].wake(job.id)
            return web.json_response(job_brief(job))
        if not job.is_final:  # running: stops at its next chunk
            return web.json_response(job_brief(job))
    raise Conflict(f"job {job.id} is already {job.status}; only a queued or running job can be cancelled "
                   "(DELETE with ?purge=true deletes a finished job and its results)", {"status": job.status})


async def backtest_details(request: web.Request) -> web.Response:
    """GET /backtest/{job_id}/details: the top-k columns' equity curves and trades, as stored."""
    job = await _job(request)
    _require_succeeded(job, "details exist")
    details = await _stored_details(job)
    return await _json_body({"job_id": job.id, "details": details})


async def _stored_details(job: Any) -> list[dict[str, Any]]:
    """The top-k details: beside the job's table (``details.json``), or in the summary of a job
    finished before they moved there."""
    summary = job.summary if isinstance(job.summary, dict) else {}
    if "details" in summary:
        return summary["details"] or []
    if not job.artifact_path:
        return []
    return await asyncio.to_thread(read_details, job.artifact_path) or []


def _top_k_columns(job: Any) -> list[int]:
    """The columns the run recorded details for (its top-k), from the summary."""
    summary = job.summary if isinstance(job.summary, dict) else {}
    if "details" in summary:
        return [d["column"] for d in summary["details"] or [] if isinstance(d.get("column"), int)]
    return [c for c in summary.get("details_columns") or [] if isinstance(c, int)]


async def backtest_column(request: web.Request) -> web.Response:
    """GET /backtest/{job_id}/columns/{n}: column n's equity curve, trades and metrics, computed on
    demand from the job's spec (in a worker thread), pinned to the run's first and last bar."""
    job = await _job(request)
    raw = request.match_info["n"]
    info = ((job.summary or {}).get("info") or {}) if isinstance(job.summary, dict) else {}
    count = getattr(job, "n_columns", None) or info.get("n_columns")
    n = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else None
    if n is None or (job.status == SUCCEEDED and isinstance(count, int) and n >= count):
        span = f"; the job has {count} columns (0 to {count - 1})" if isinstance(count, int) else ""
        raise NotFoundError(f"no column {raw!r}{span}", {"column": raw, "n_columns": count})
    _require_succeeded(job, "columns can be computed")
    top_k = _top_k_columns(job)
    async with request.app[K.COLUMN_SLOTS]:
        try:
            detail = await asyncio.to_thread(request.app[K.ENGINE].column_details, job.spec, n,
                                             start=info.get("start"), end=info.get("end"), top_columns=top_k)
        except StrategyError as exc:
            raise StrategyFailed(exc.message, exc.details) from None
    rank = next((r.get("rank") for r in (job.summary or {}).get("top") or [] if r.get("column") == n), None)
    return await _json_body({"job_id": job.id, "rank": rank, **detail})


def _require_succeeded(job: Any, what: str) -> None:
    if job.status != SUCCEEDED:
        raise Conflict(f"job {job.id} is {job.status}; {what} once it has succeeded", {"status": job.status})


async def backtest_results(request: web.Request) -> web.StreamResponse:
    """GET /backtest/{job_id}/results?format=json|csv|parquet&limit=&offset=&sort=: the full table,
    read from the job's Parquet pieces (merged in rank order, in bounded memory, off the loop)."""
    job = await _job(request, light=True)
    _require_succeeded(job, "results exist")
    if not job.artifact_path:
        raise Conflict(f"job {job.id} has no stored table", {"status": job.status})
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
    """GET /strategies: built-ins, plugins and saved strategies, each with its parameter schema
    (saved ones with their version and versions)."""
    return await _json_body({"strategies": await asyncio.to_thread(request.app[K.STRATEGIES].list)})


async def get_strategy(request: web.Request) -> web.Response:
    """GET /strategies/{name}?version=: a saved strategy's document (the latest version by default)."""
    raw = request.query.get("version")
    version = None
    if raw is not None:
        if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 9 and int(raw) > 0):
            raise BadRequest("version must be a positive integer", {"parameter": "version"})
        version = int(raw)
    doc = await asyncio.to_thread(request.app[K.STRATEGIES].get, request.match_info["name"], version)
    return await _json_body(doc)


async def save_strategy(request: web.Request) -> web.Response:
    """POST /strategies (a new strategy, version 1: 201) and PUT /strategies/{name} (its next
    version: 200): an expression strategy document with a name."""
    body = await read_json_body(request, f"{request.method} /strategies")
    if isinstance(body, web.Response):
        return body
    name = request.match_info.get("name")
    saved = await asyncio.to_thread(request.app[K.STRATEGIES].save, body, name)
    return await _json_body(saved.to_dict(), status=201 if name is None else 200,
                            headers={"Location": f"/strategies/{saved.name}?version={saved.version}"})


async def delete_strategy(request: web.Request) -> web.Response:
    """DELETE /strategies/{name}: every version of a saved strategy (jobs keep what they ran)."""
    name = request.match_info["name"]
    n = await asyncio.to_thread(request.app[K.STRATEGIES].delete, name)
    return web.json_response({"deleted": name, "versions": n})


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


async def delete_series(request: web.Request) -> web.Response:
    """DELETE /data/symbols/{source}/{frequency}/{symbol}: remove one stored series."""
    m = request.match_info
    entry = await asyncio.to_thread(request.app[K.DATA].delete_series, m["source"], m["frequency"], m["symbol"])
    return web.json_response({"deleted": entry.to_dict()})


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
