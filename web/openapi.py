"""The OpenAPI document of the service (``/openapi.json``) and the API explorer (``/docs``).

`openapi_document(settings)` builds an OpenAPI **3.1.0** document from the code's own models:
the response bodies from web/schemas.py (pydantic), the request body from the spec's field
rules (`BacktestSpec.json_schema()`, written in the OpenAPI 3.0 dialect and lifted to 3.1 by
`schema_to_31`). Every operation lists each status its handler can answer with, its content
types and examples; every error is the JSON envelope.

``/docs`` is Swagger UI, served from the ``swagger-ui-bundle`` package's files (no CDN). That
bundle (Swagger UI 4) reads OpenAPI 3.0 only, so the page loads ``/docs/openapi-3.0.json``:
the same document lowered to 3.0.3 by `document_to_30` (``nullable``, boolean exclusive
bounds, one ``example``). Both forms are checked with openapi-spec-validator in the tests.
"""

from __future__ import annotations

import copy
import html
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.jobstatus import STATUSES
from ..core.marketdata import SOURCE_RE
from ..core.panel import SYMBOL_RE
from ..core.spec import FREQUENCIES, BacktestSpec
from . import schemas as S

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
ERROR_REF = {"$ref": REF.format(model="ErrorEnvelope")}
JOB_ID_PATTERN = "^[0-9a-f]{32}$"
MAX_WAIT_S = 60.0
TOP_DEFAULT = 10
TOP_MAX = 1000

# the explorer's files: the bundle's, and two of ours
DOCS_ASSETS = {
    "swagger-ui.css": "text/css",
    "index.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
DOCS_OWN = {"swagger-initializer.js": "application/javascript", "openapi-3.0.json": "application/json"}

_ERROR_EXAMPLES: dict[int, tuple[str, str, str, Any]] = {
    400: ("bad request: a query parameter, header or body that is not well-formed", "bad_request",
          "query parameter limit must be between 1 and 500", {"parameter": "limit"}),
    401: ("missing or invalid X-API-Key (when API_KEY_REQUIRED)", "unauthorized", "missing or invalid X-API-Key",
          None),
    404: ("no such job, column, strategy, data source or file", "not_found", f"no job '{S.JOB_ID_EXAMPLE}'",
          {"job_id": S.JOB_ID_EXAMPLE}),
    409: ("the job is not in a state that allows this (or the strategy name is taken)", "conflict",
          f"job {S.JOB_ID_EXAMPLE} is running; results exist once it has succeeded", {"status": "running"}),
    413: ("payload too large", "payload_too_large", "upload larger than 104857600 bytes", {"limit": 104857600}),
    415: ("unsupported media type", "unsupported_media_type", "POST /backtest takes application/json", None),
    422: ("invalid input: details name the field", "invalid_spec", "execution.fill: must be one of close, "
          "next_open, got 'whenever'", {"field": "execution.fill", "reason": "must be one of close, next_open, "
                                                                             "got 'whenever'"}),
    408: ("the request body did not arrive within GPU_BACKTEST_BODY_TIMEOUT_S", "request_timeout",
          "the request body did not arrive within 60 s", {"timeout_s": 60}),
    429: ("too many uploads at once (GPU_BACKTEST_MAX_CONCURRENT_UPLOADS); retry after Retry-After seconds",
          "too_many_uploads", "2 uploads are already running; retry in a few seconds", {"limit": 2}),
    507: ("insufficient storage: the disk filled up; nothing was stored", "insufficient_storage",
          "no space left on the device while storing the upload; nothing was stored", None),
    503: ("unavailable: the server is shutting down", "unavailable",
          "the server is shutting down; retry on another instance", None),
}

REQUEST_ID_HEADER = {"X-Request-ID": {"description": "the request's id (the client's, when sane, else a new one)",
                                      "schema": {"type": "string"}}}


# --------------------------------------------------------------------------- helpers


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=model)}


def _example(model: type[Any]) -> Any:
    extra = model.model_config.get("json_schema_extra") or {}
    examples = extra.get("examples") if isinstance(extra, dict) else None
    return examples[0] if examples else None


def _json(desc: str, model: type[Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(model.__name__)}
    example = _example(model)
    if example is not None:
        media["example"] = example
    return {"description": desc, "headers": {**REQUEST_ID_HEADER, **(headers or {})},
            "content": {"application/json": media}}


def _html(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"text/html": {"schema": {"type": "string"}}}}


def _html_page(desc: str) -> dict[str, Any]:
    """A console page (text/html): its answers and refusals alike."""
    return {"description": desc, "headers": REQUEST_ID_HEADER, "content": {"text/html": {"schema": {"type": "string"}}}}


def _see_other(desc: str) -> dict[str, Any]:
    return {"description": desc, "headers": {**REQUEST_ID_HEADER, "Location": {
        "description": "where to go", "schema": {"type": "string"}}},
        "content": {"text/plain": {"schema": {"type": "string"}}}}


CONSOLE_SECURITY = [{"ApiKey": []}, {"ConsoleSession": []}]  # the key, or a console login's session cookie
CONSOLE_FORM = {"csrf": {"type": "string", "description": "the session's CSRF token (in every form the console "
                                                          "serves); 403 without it"}}


def _console_op(summary: str, responses: dict[str, Any], *, description: str, public: bool = False,
                parameters: list[dict[str, Any]] | None = None,
                form: dict[str, Any] | None = None) -> dict[str, Any]:
    """A web console page (web/console.py): HTML answers; without a login, a redirect to /ui/login."""
    if not public:
        responses = {**responses, "303": responses.get("303") or _see_other("not logged in: to /ui/login")}
    op = _op(summary, responses, parameters=parameters, secured=False, description=description, tag="console")
    op["security"] = [] if public else CONSOLE_SECURITY
    if form is not None:
        op["requestBody"] = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["csrf"], "properties": {**CONSOLE_FORM, **form}}}}}
    return op


def _errors(*codes: int) -> dict[str, Any]:
    out = {}
    for c in codes:
        desc, code, message, details = _ERROR_EXAMPLES[c]
        out[str(c)] = {"description": desc, "headers": REQUEST_ID_HEADER, "content": {"application/json": {
            "schema": ERROR_REF, "example": {"error": {"code": code, "message": message, "details": details},
                                              "request_id": "9c1e4b7a2d3f4e5a8b6c7d8e9f0a1b2c"}}}}
    return out


def _query(name: str, schema: dict[str, Any], desc: str, example: Any = None) -> dict[str, Any]:
    out = {"name": name, "in": "query", "required": False, "description": desc, "schema": schema}
    if example is not None:
        out["example"] = example
    return out


JOB_ID = {"name": "job_id", "in": "path", "required": True, "description": "the job's id (32 hex digits)",
          "schema": {"type": "string", "pattern": JOB_ID_PATTERN}, "example": S.JOB_ID_EXAMPLE}
STRATEGY_NAME = {"name": "name", "in": "path", "required": True, "description": "a saved strategy's name",
                 "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"}, "example": "my_cross"}
COLUMN = {"name": "n", "in": "path", "required": True, "description": "the column index: symbol index × "
          "combinations + combination index (the results table's `column`), 0 to info.n_columns − 1",
          "schema": {"type": "integer", "minimum": 0}, "example": 0}


def _page(max_limit: int, default: int) -> list[dict[str, Any]]:
    return [_query("limit", {"type": "integer", "minimum": 1, "maximum": max_limit, "default": default},
                   f"rows per page (1 to {max_limit})"),
            _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}, "rows to skip")]


def _op(summary: str, responses: dict[str, Any], *, parameters: list[dict[str, Any]] | None = None,
        secured: bool = True, body: dict[str, Any] | None = None, description: str | None = None,
        tag: str | None = None, security: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "operationId": "", "responses": responses}
    if description:
        op["description"] = description
    if tag:
        op["tags"] = [tag]
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    if secured:
        op["responses"] = {**responses, **_errors(401)}
        if security is not None:
            op["security"] = security
    else:
        op["security"] = []
    return op


# --------------------------------------------------------------------------- the document


def openapi_document(*, public_docs: bool = False) -> dict[str, Any]:
    """The whole API: every endpoint, its parameters, bodies, answers (with examples) and errors.

    ``public_docs``: /docs, its files and /openapi.json need no key (GPU_BACKTEST_PUBLIC_DOCS)."""
    spec_schema = schema_to_31(BacktestSpec.json_schema())
    spec_example = {"strategy": "sma_crossover", "symbols": ["SYN000", "SYN001"],
                    "start": "2015-01-01", "end": "2016-12-31",
                    "params": {"fast": [5, 10, 20], "slow": {"start": 50, "stop": 100, "step": 50}},
                    "output": {"rank_by": "sharpe", "top_k": 3}}
    components = {**S.component_schemas(REF), "BacktestSpec": {**spec_schema, "examples": [spec_example]}}
    view = _query("view", {"type": "string", "enum": ["compact", "status", "full"], "default": "compact"},
                  "compact (default): status, progress, timings, info and the top rows' metrics; status: only "
                  "job_id, status, progress, stage, eta_s, error, links; full: also the spec and the stored summary "
                  "with every top-k equity curve and trade (large)")
    wait = _query("wait", {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_S},
                  f"long-poll: answer as soon as the job is final, or after this many seconds (at most "
                  f"{MAX_WAIT_S:g})", 10)
    top = _query("top", {"type": "integer", "minimum": 0, "maximum": TOP_MAX, "default": TOP_DEFAULT},
                 f"how many of the stored best rows `top` lists (default {TOP_DEFAULT})")
    job_answer = {"200": {"description": "the job: compact by default; see `view`", "headers": REQUEST_ID_HEADER,
                          "content": {"application/json": {
                              "schema": {"anyOf": [_ref("JobDoc"), _ref("JobStatusDoc"), _ref("JobFull")]},
                              "example": _example(S.JobDoc)}}}}
    results_200 = {"description": "the table: a JSON page, or CSV / Parquet to download", "headers": REQUEST_ID_HEADER,
                   "content": {
                       "application/json": {"schema": _ref("ResultsPage"), "example": _example(S.ResultsPage)},
                       "text/csv": {"schema": {"type": "string"},
                                    "example": "rank,column,symbol,fast,slow,sharpe\n1,37,SYN003,10,150,1.12\n"},
                       "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}}
    docs_secured = not public_docs
    paths: dict[str, Any] = {
        "/backtest": {
            "post": _op(
                "Submit a backtest or sweep", tag="backtests",
                description="Validates the spec, stores the job (queued) and answers 202 with its id and links. "
                            "The same Idempotency-Key with the same body returns the same job (422 "
                            "idempotency_conflict for another body). A strategy parameter rejected by the "
                            "strategy is 422 naming it (details.field, e.g. params.fast[1]).",
                parameters=[{"name": "Idempotency-Key", "in": "header", "required": False,
                             "description": "1 to 200 characters; a retried submission returns the same job",
                             "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
                body={"required": True, "content": {"application/json": {
                    "schema": _ref("BacktestSpec"), "example": spec_example}}},
                responses={"202": _json("accepted (queued)", S.JobBrief, {"Location": {
                    "description": "the job's URL", "schema": {"type": "string"}}}),
                           **_errors(400, 408, 413, 415, 422, 503)}),
            "get": _op(
                "List jobs, newest first", tag="backtests",
                parameters=[_query("status", {"type": "string", "enum": list(STATUSES)}, "only jobs of this status"),
                            *_page(500, 50)],
                responses={"200": _json("one page of jobs", S.JobList), **_errors(400)}),
        },
        "/backtest/{job_id}": {
            "get": _op(
                "A job: status, progress, timings and its best rows", tag="backtests",
                description="Compact by default (a few KB even for a large sweep): no equity curves or trades — "
                            "those are at links.details (top-k) and links.columns (any column). `?wait=S` "
                            "long-polls until the job is final.",
                parameters=[JOB_ID, view, wait, top],
                responses={**job_answer, **_errors(400, 404)}),
            "delete": _op(
                "Cancel a job, or delete a finished one", tag="backtests",
                description="A queued job never runs; a running one stops at its next chunk. A finished job "
                            "(succeeded, failed, cancelled) cannot be cancelled: 409 with its status. With "
                            "`?purge=true` a finished job is deleted with its results (a queued or running one: "
                            "409, cancel it first). Finished jobs are also deleted "
                            "GPU_BACKTEST_RETENTION_DAYS after they end.",
                parameters=[JOB_ID, _query("purge", {"type": "string", "enum": ["true", "false"],
                                                     "default": "false"},
                                           "true: delete the finished job and its results")],
                responses={"200": _json("cancelled (queued), cancel requested (running), or deleted (purge)",
                                        S.JobBrief),
                           **_errors(400, 404, 409)}),
        },
        "/backtest/{job_id}/results": {"get": _op(
            "The full ranked table (one row per column)", tag="backtests",
            description="JSON pages (`limit`, `offset`, `sort`), or the whole table (or a page) as CSV or Parquet. "
                        "409 until the job has succeeded.",
            parameters=[JOB_ID, _query("format", {"type": "string", "enum": ["json", "csv", "parquet"],
                                                  "default": "json"}, "json, csv or parquet"),
                        _query("sort", {"type": "string"}, "a column name; -name sorts descending", "-sharpe"),
                        *_page(10_000, 100)],
            responses={"200": results_200, **_errors(400, 404, 409)})},
        "/backtest/{job_id}/details": {"get": _op(
            "The top-k columns' equity curves and trades", tag="backtests",
            description="As stored when the job finished (output.top_k columns, best first). 409 until it has "
                        "succeeded.",
            parameters=[JOB_ID], responses={"200": _json("the top-k details", S.DetailsDoc), **_errors(404, 409)})},
        "/backtest/{job_id}/columns/{n}": {"get": _op(
            "Any column's equity curve and trades, computed on demand", tag="backtests",
            description="Re-simulates column n of a succeeded job from its spec (same code path and numbers as "
                        "the top-k details). 404 naming n when the job has no such column; 409 until it has "
                        "succeeded; 422 when its data is no longer available.",
            parameters=[JOB_ID, COLUMN],
            responses={"200": _json("the column's details", S.ColumnDoc), **_errors(404, 409, 422)})},
        "/backtest/{job_id}/report": {"get": _op(
            "The job's HTML report", tag="backtests",
            description="One self-contained page (plotly.js embedded, works offline; docs/report.md): headline "
                        "metrics, equity and drawdown, monthly returns, rolling Sharpe, trades; for sweeps the "
                        "parameter heat-maps, the distribution of rank_by over every column and the top rows "
                        "linking to each column's report. 409 until the job has succeeded.",
            parameters=[JOB_ID], responses={"200": _html("the report"), **_errors(404, 409)},
            security=CONSOLE_SECURITY)},
        "/backtest/{job_id}/columns/{n}/report": {"get": _op(
            "One column's HTML report", tag="backtests",
            description="The report of column n, computed on demand as GET /backtest/{job_id}/columns/{n}.",
            parameters=[JOB_ID, COLUMN], responses={"200": _html("the column's report"), **_errors(404, 409, 422)},
            security=CONSOLE_SECURITY)},
        "/strategies": {
            "get": _op("Strategies and their parameters", tag="catalogue",
                       description="Built-ins, plugins and saved strategies (with their versions).",
                       responses={"200": _json("strategies", S.StrategyList)}),
            "post": _op(
                "Save a named expression strategy (version 1)", tag="catalogue",
                description="The body is an expression strategy (docs/strategies.md, \"Expression strategies\") "
                            "with a `name` (a lower-case identifier) and an optional `description`. A spec then "
                            "runs it by name (`\"strategy\": \"my_cross\"`, or `\"my_cross@2\"` for a "
                            "version). 409 strategy_exists when the name is taken; 422 naming the field "
                            "(and the position in an expression) when the document is invalid.",
                body={"required": True, "content": {"application/json": {
                    "schema": {"type": "object"}, "example": _example(S.SavedStrategyDoc)["strategy"]}}},
                responses={"201": _json("saved", S.SavedStrategyDoc), **_errors(400, 408, 409, 415, 422)}),
        },
        "/strategies/{name}": {
            "get": _op("A saved strategy's document", tag="catalogue",
                       parameters=[STRATEGY_NAME, _query("version", {"type": "integer", "minimum": 1},
                                                         "a version (default: the latest)")],
                       responses={"200": _json("the version", S.SavedStrategyDoc), **_errors(400, 404, 422)}),
            "put": _op(
                "Save the next version of a saved strategy", tag="catalogue",
                description="Same body as POST; the body's `name`, if given, must be the URL's. Jobs already "
                            "submitted keep the version they were given.",
                parameters=[STRATEGY_NAME],
                body={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                responses={"200": _json("saved", S.SavedStrategyDoc), **_errors(400, 404, 408, 409, 415, 422)}),
            "delete": _op("Delete every version of a saved strategy", tag="catalogue",
                          description="Jobs that ran it keep its document in their spec.",
                          parameters=[STRATEGY_NAME],
                          responses={"200": _json("deleted", S.StrategyDeleted), **_errors(404, 422)}),
        },
        "/gpu/status": {"get": _op("GPU and Dask cluster status", tag="catalogue",
                                   responses={"200": _json("status", S.GpuStatus)})},
        "/data/sources": {"get": _op("Market-data sources", tag="data",
                                     responses={"200": _json("sources", S.SourceList)})},
        "/data/symbols": {"get": _op(
            "Stored series with their first and last bar", tag="data",
            parameters=[_query("source", {"type": "string"}, "only this source", "synthetic"),
                        _query("frequency", {"type": "string"}, "only this bar frequency", "1d"),
                        _query("prefix", {"type": "string"}, "only symbols starting with this"), *_page(10_000, 100)],
            responses={"200": _json("one page of series", S.SymbolList), **_errors(400, 404, 422)})},
        "/data/symbols/{source}/{frequency}/{symbol}": {"delete": _op(
            "Delete a stored series (its catalog row and every file of it)", tag="data",
            description="A job already running on it may fail; a fetching source (Tiingo) fetches it again "
                        "when a job next needs it.",
            parameters=[{"name": n, "in": "path", "required": True, "schema": schema, "example": e}
                        for n, schema, e in (("source", {"type": "string", "pattern": SOURCE_RE.pattern}, "upload"),
                                             ("frequency", {"type": "string", "enum": list(FREQUENCIES)}, "1d"),
                                             ("symbol", {"type": "string", "pattern": SYMBOL_RE.pattern}, "AAPL"))],
            responses={"200": _json("deleted", S.SeriesDeleted), **_errors(404, 422)})},
        "/data/upload": {"post": _op(
            "Upload market data (CSV or Parquet)", tag="data",
            description="Multipart: a `file` part, and optional `symbol`, `source` (default upload), "
                        "`frequency` (default 1d) and `delisted` (true: the file's series have ended and are "
                        "marked ended at their last bar; default false, which stores them unmarked). Validated "
                        "completely before anything is stored; 422 lists the problems by row and column, or "
                        "names the field (`delisted` not a flag).",
            body={"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary", "description": "CSV or Parquet OHLCV bars"},
                    "symbol": {"type": "string", "maxLength": 64}, "source": {"type": "string", "maxLength": 64},
                    "frequency": {"type": "string", "maxLength": 64},
                    "delisted": {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"],
                                 "description": "the series have ended (delisted): mark them ended at their "
                                                "last bar (case-insensitive)"}}}}}},
            responses={"201": _json("stored", S.UploadResult), **_errors(400, 404, 408, 413, 415, 422, 429, 507)})},
        "/ui": {"get": _console_op(
            "The web console: the jobs", description="Server-rendered (docs/ui.md): the newest jobs with status, "
            "progress (the page reloads itself while one runs) and links to each report and JSON document.",
            parameters=[_query("status", {"type": "string", "enum": list(STATUSES)}, "only jobs of this status"),
                        _query("offset", {"type": "integer", "minimum": 0}, "jobs to skip (pages of 50)")],
            responses={"200": _html_page("the jobs page")})},
        "/ui/new": {
            "get": _console_op(
                "The web console: the job form", description="A form built from the strategy's parameter schema "
                "(GET /strategies): parameter values, lists or ranges, symbols, dates, fees, rank_by.",
                parameters=[_query("strategy", {"type": "string"}, "the strategy whose form to show")],
                responses={"200": _html_page("the form")}),
            "post": _console_op(
                "The web console: submit a job", description="The form as a spec, submitted through the same "
                "path as POST /backtest: a redirect to /ui, or the form again with the refusal's message and "
                "status (the 4xx POST /backtest would answer; 403 without the CSRF token).",
                form={"strategy": {"type": "string"}, "symbols": {"type": "string"}, "start": {"type": "string"},
                      "end": {"type": "string"}, "fees": {"type": "string"}, "rank_by": {"type": "string"}},
                responses={"303": _see_other("submitted (to /ui), or not logged in (to /ui/login)"),
                           "403": _html_page("no or a wrong CSRF token"), "422": _html_page("the spec is refused"),
                           "503": _html_page("the server is shutting down")})},
        "/ui/login": {
            "get": _console_op("The web console: the key form", public=True,
                               description="Asks the API key once (a redirect to /ui when none is configured "
                                           "or the session is logged in already).",
                               responses={"200": _html_page("the form"), "303": _see_other("to /ui")}),
            "post": _console_op(
                "The web console: log in", public=True,
                description="Checks the key; sets a new SameSite=Strict, HttpOnly session cookie (Secure over "
                            "https) that opens the console and the HTML reports only, and redirects to /ui.",
                form={"key": {"type": "string", "description": "the API key"}},
                responses={"303": _see_other("logged in: to /ui"), "401": _html_page("not the API key"),
                           "403": _html_page("no or a wrong CSRF token")})},
        "/ui/logout": {"post": _console_op(
            "The web console: log out", description="Refuses the session from now on and clears its cookie.",
            form={}, responses={"303": _see_other("to /ui/login"), "403": _html_page("no or a wrong CSRF token")})},
        "/health": {"get": _op("Liveness (no key needed)", tag="service", secured=False,
                               responses={"200": _json("alive", S.Health)})},
        "/metrics": {"get": _op("Prometheus metrics", tag="service", responses={"200": {
            "description": "Prometheus text format", "headers": REQUEST_ID_HEADER,
            "content": {"text/plain": {"schema": {"type": "string"},
                                       "example": 'gpu_backtest_jobs{state="queued"} 0.0\n'}}}})},
        "/openapi.json": {"get": _op("This OpenAPI document", tag="service", secured=docs_secured, responses={
            "200": {"description": "the OpenAPI 3.1 document", "headers": REQUEST_ID_HEADER,
                    "content": {"application/json": {"schema": {"type": "object"}}}}})},
        "/docs": {"get": _op("The API explorer (Swagger UI)", tag="service", secured=docs_secured, responses={
            "200": {"description": "HTML page", "headers": REQUEST_ID_HEADER,
                    "content": {"text/html": {"schema": {"type": "string"}}}}})},
        "/docs/{file}": {"get": _op(
            "The explorer's files (Swagger UI's, and the document in OpenAPI 3.0 form)", tag="service",
            secured=docs_secured,
            parameters=[{"name": "file", "in": "path", "required": True, "description": "a file name",
                         "schema": {"type": "string", "enum": sorted([*DOCS_ASSETS, *DOCS_OWN])},
                         "example": "openapi-3.0.json"}],
            responses={"200": {"description": "the file", "headers": REQUEST_ID_HEADER, "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/javascript": {"schema": {"type": "string"}},
                "text/css": {"schema": {"type": "string"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}}}}, **_errors(404)})},
    }
    for path, ops in paths.items():
        for method, op in ops.items():
            op["operationId"] = _operation_id(method, path)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "gpu_backtest — AlphaStrategyLab GPU Backtesting Server", "version": __version__,
                 "description": "Backtests and parameter sweeps on GPUs and CPUs. Every error is "
                                "`{\"error\": {\"code\", \"message\", \"details\"}, \"request_id\"}`; "
                                "with API_KEY_REQUIRED every endpoint but /health needs `X-API-Key`."},
        "tags": [{"name": "backtests"}, {"name": "catalogue"}, {"name": "data"}, {"name": "service"},
                 {"name": "console"}],
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                                "ConsoleSession": {"type": "apiKey", "in": "cookie", "name": "gbt_console",
                                                   "description": "the web console's session cookie (POST "
                                                                  "/ui/login): the console and the HTML reports "
                                                                  "only, never the JSON API (docs/ui.md)"}},
            "schemas": components,
        },
        "security": [{"ApiKey": []}],
        "paths": paths,
    }


def _operation_id(method: str, path: str) -> str:
    words = [p.strip("{}").replace(".", "_") for p in path.strip("/").split("/") if p]
    return "_".join([method, *words]) or method


# --------------------------------------------------------------------------- dialects


def schema_to_31(schema: Any) -> Any:
    """A schema of the OpenAPI 3.0 dialect (core/specfields.py) as JSON Schema 2020-12 / OpenAPI 3.1:
    ``nullable`` becomes a ``null`` type (or an ``anyOf`` with one), boolean exclusive bounds numeric ones."""
    if isinstance(schema, list):
        return [schema_to_31(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: schema_to_31(v) if k in _SUBSCHEMA_KEYS else v for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: schema_to_31(v) for k, v in schema["properties"].items()}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:
            out[bound] = out.pop(limit)
        elif out.get(bound) is False:
            out.pop(bound)
    if out.pop("nullable", False):
        if isinstance(out.get("type"), str) and "enum" not in out:
            out["type"] = [out["type"], "null"]
        else:
            keep = {k: out.pop(k) for k in ("default", "description", "title") if k in out}
            out = {"anyOf": [out, {"type": "null"}], **keep}
    return out


_SUBSCHEMA_KEYS = {"items", "additionalProperties", "not", "oneOf", "anyOf", "allOf"}


def schema_to_30(schema: Any) -> Any:
    """A JSON Schema 2020-12 / OpenAPI 3.1 schema lowered to the OpenAPI 3.0 dialect: a ``null`` type
    becomes ``nullable``, numeric exclusive bounds boolean ones, ``const`` an ``enum``, ``examples`` one
    ``example``."""
    if isinstance(schema, list):
        return [schema_to_30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: schema_to_30(v) if k in _SUBSCHEMA_KEYS else v for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: schema_to_30(v) for k, v in schema["properties"].items()}
    if "examples" in out:
        examples = out.pop("examples")
        if isinstance(examples, list) and examples:
            out["example"] = examples[0]
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), (int, float)) and not isinstance(out.get(bound), bool):
            out[limit] = out[bound]
            out[bound] = True
    t = out.get("type")
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        if len(rest) < len(t):
            out["nullable"] = True
        if len(rest) == 1:
            out["type"] = rest[0]
        else:
            out.pop("type")
            out["anyOf"] = [{"type": x} for x in rest]
    for key in ("anyOf", "oneOf"):
        alts = out.get(key)
        if isinstance(alts, list) and any(a == {"type": "null"} for a in alts):
            rest = [a for a in alts if a != {"type": "null"}]
            out.pop(key)
            if len(rest) == 1 and "$ref" not in rest[0]:
                out = {**rest[0], **out, "nullable": True}
            else:
                out["nullable"] = True
                out["allOf" if len(rest) == 1 else key] = rest
    return out


def document_to_30(doc: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document in the 3.0.3 form (for Swagger UI 4, which reads 3.0 only)."""
    out = copy.deepcopy(doc)
    out["openapi"] = "3.0.3"
    comps = out["components"]["schemas"]
    for name in comps:
        comps[name] = schema_to_30(comps[name])
    for ops in out["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                p["schema"] = schema_to_30(p["schema"])
            for media in op.get("requestBody", {}).get("content", {}).values():
                media["schema"] = schema_to_30(media["schema"])
            for resp in op["responses"].values():
                for media in resp.get("content", {}).values():
                    media["schema"] = schema_to_30(media["schema"])
                for header in resp.get("headers", {}).values():
                    header["schema"] = schema_to_30(header["schema"])
    return out


# --------------------------------------------------------------------------- the explorer


def swagger_ui_dir() -> Path:
    """Where the ``swagger-ui-bundle`` package keeps Swagger UI's files."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def docs_page(doc: dict[str, Any]) -> str:
    """The explorer's HTML: Swagger UI, its files loaded from this server (relative URLs, no CDN)."""
    title = html.escape(doc["info"]["title"])
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} — API explorer</title>
  <link rel="stylesheet" type="text/css" href="docs/swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="docs/index.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <noscript>The explorer needs JavaScript; the document itself is at <a href="openapi.json">openapi.json</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js" charset="utf-8"></script>
  <script src="docs/swagger-ui-standalone-preset.js" charset="utf-8"></script>
  <script src="docs/swagger-initializer.js" charset="utf-8"></script>
</body>
</html>
"""


def docs_initializer() -> str:
    """Swagger UI's start-up script: the 3.0 form of the document, from this server."""
    return """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "docs/openapi-3.0.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""
