"""The HTTP API's answers as pydantic models: one model per JSON shape a handler returns.

They are the one description of each shape. `component_schemas()` turns them into the
OpenAPI document's ``components.schemas`` (web/openapi.py, JSON Schema 2020-12 as OpenAPI 3.1
uses it), and the job handlers build their documents through them (`build`), so a job
document cannot drift from its schema. The request body's schema (``BacktestSpec``) comes
from the spec's own field rules (core/spec.py, core/specfields.py), not from here.

Every field a handler always writes is required in the schema (``null`` where it may be
empty); models accept extra keys, so a newer server may add fields without breaking clients.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import models_json_schema

from ..core.jobstatus import ATTEMPT_OUTCOMES, STATUSES

__all__ = [
    "MODELS",
    "Attempt",
    "CallbackRecord",
    "ColumnDetail",
    "ColumnDoc",
    "DetailsDoc",
    "ErrorBody",
    "ErrorEnvelope",
    "GpuStatus",
    "Health",
    "JobBrief",
    "JobDoc",
    "JobFull",
    "JobList",
    "JobStatusDoc",
    "ResultsPage",
    "RunInfo",
    "SeriesDeleted",
    "SourceList",
    "StrategyList",
    "SymbolList",
    "TopRow",
    "UploadResult",
    "build",
    "component_schemas",
]

JOB_ID_EXAMPLE = "3f2b8c9d4e5f40718293a4b5c6d7e8f9"
Status = Literal[STATUSES]  # type: ignore[valid-type]
Outcome = Literal[ATTEMPT_OUTCOMES]  # type: ignore[valid-type]
# a metric or price (an integer for counts); null where it is not a finite number
Number = Annotated[int | float | None, WithJsonSchema({"type": ["number", "null"]})]


class Model(BaseModel):
    """Base: extra keys allowed; fields with defaults still required in the (serialization) schema."""

    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=True,
                              populate_by_name=True)


def _examples(*docs: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="allow", json_schema_serialization_defaults_required=True, populate_by_name=True,
                      json_schema_extra={"examples": list(docs)})


# --------------------------------------------------------------------------- errors


class ErrorBody(Model):
    """What went wrong: a stable ``code``, a readable ``message`` and ``details`` naming the field."""

    code: str = Field(description="stable machine-readable name, e.g. invalid_spec, not_found, strategy_error")
    message: str = Field(description="what went wrong, for people")
    details: Any = Field(None, description="JSON details: e.g. {field, reason} for invalid_spec, "
                                           "{parameter} for bad_request, {status} for conflict")

    model_config = _examples({"code": "invalid_spec", "message": "params.fast[1]: must be an integer, got 'x'",
                              "details": {"field": "params.fast[1]", "reason": "must be an integer, got 'x'"}})


class ErrorEnvelope(Model):
    """Every error answer (4xx, and the 500 that should never happen): never a traceback."""

    error: ErrorBody
    request_id: str = Field(description="this request's id (also the X-Request-ID header)")

    model_config = _examples({"error": {"code": "not_found", "message": f"no job '{JOB_ID_EXAMPLE}'",
                                        "details": {"job_id": JOB_ID_EXAMPLE}},
                              "request_id": "9c1e4b7a2d3f4e5a8b6c7d8e9f0a1b2c"})


# --------------------------------------------------------------------------- jobs


class JobLinks(Model):
    """Where the job's parts are (relative URLs)."""

    self: str = Field(description="this job: GET /backtest/{job_id}")
    results: str = Field(description="the full ranked table: GET /backtest/{job_id}/results")
    details: str = Field(description="the top-k columns' equity curves and trades")
    columns: str = Field(description="URL template of any column's details: replace {n} by the column index")
    report: str = Field(description="the job's HTML report: GET /backtest/{job_id}/report")


class Timings(Model):
    """When the job was submitted, started and finished (ISO 8601, UTC), and for how long it waited and ran."""

    created_at: str
    started_at: str | None = Field(description="start of its latest run; null while queued")
    finished_at: str | None = Field(description="null until it is final")
    queued_s: float | None = Field(description="seconds from submission to its (latest) start, or until now while "
                                               "queued; null for a job cancelled before it ran")
    run_s: float | None = Field(description="seconds it ran (until now while running); null if it never started")


class Attempt(Model):
    """One run of a job (a server's lease on it) and how it ended."""

    generation: int = Field(description="the lease generation of this run (1, 2, …)")
    owner: str = Field(description="the server process that ran it")
    started_at: str
    ended_at: str | None
    outcome: Outcome = Field(description="running; the job's final status; handed_back (its server stopped and "
                                         "re-queued it); lease_expired (its server stopped renewing the lease)")


class StrategySource(Model):
    """What provides the strategy: a plugin and its distribution (``version``: the package's), or
    ``kind`` expression / saved with the document's ``digest`` and ``text`` (saved: its ``name``
    and ``version`` number)."""

    plugin: str | None = None
    distribution: str | None = None
    version: str | int | None = None


class RanOn(Model):
    """Where a stage's tasks ran."""

    stage: str
    worker: str | None = None
    host: str | None = None
    backend: str | None = None
    device: int | str | None = None
    tasks: int


class WalkForwardChoice(Model):
    """One symbol's choice in one fold: the combination and its in- and out-of-sample metrics."""

    symbol: str
    combination: int = Field(description="index of the chosen combination in the grid")
    params: dict[str, Any]
    in_sample: dict[str, Number] = Field(description="the chosen column's metrics on the training window")
    out_of_sample: dict[str, Number] = Field(description="its metrics on the test window")


class WalkForwardFold(Model):
    """One fold: training and test windows (first and last bar) and each symbol's choice."""

    fold: int
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    train_bars: int
    test_bars: int
    symbols: list[WalkForwardChoice]


class WalkForwardSymbol(Model):
    """One symbol's stitched out-of-sample result (docs/semantics.md "Walk-forward")."""

    symbol: str
    metrics: dict[str, Number] = Field(description="aggregate out-of-sample metrics of the stitched curve")
    annualised_is_return: Number
    annualised_oos_return: Number
    efficiency: Number = Field(description="walk-forward efficiency (docs/metrics.md); null when undefined")


class WalkForward(Model):
    """A walk-forward run's folds and stitched out-of-sample results (spec ``validation``). The
    compact job document leaves out the stitched equity curves (``?view=full`` has them)."""

    method: str
    train: int | str
    test: int | str
    anchored: bool
    choose: Literal["per_symbol", "universe"]
    rank_by: str
    n_folds: int
    oos_bars: int
    mean_efficiency: Number
    folds: list[WalkForwardFold]
    symbols: list[WalkForwardSymbol]


class RunInfo(Model):
    """Facts of a finished run. Every field is optional: older jobs may lack some."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)  # every field optional

    strategy: str | None = None
    strategy_source: StrategySource | None = None
    backend: str | None = Field(None, description="cpu or cuda (both, comma-separated, when partitions differed)")
    n_bars: int | None = None
    n_symbols: int | None = None
    n_combinations: int | None = None
    n_columns: int | None = Field(None, description="symbols × parameter combinations: the table's rows")
    chunks: int | None = None
    partitions: int | None = None
    periods_per_year: float | None = None
    start: str | None = Field(None, description="the run's first bar (ISO 8601)")
    end: str | None = Field(None, description="the run's last bar (ISO 8601)")
    rank_by: str | None = None
    plan_hash: str | None = None
    ran_on: list[RanOn] | None = None
    stage_seconds: dict[str, float] | None = None
    elapsed_s: float | None = None
    overfitting: dict[str, Any] | None = Field(
        None, description="a sweep's overfitting statistics (output.overfitting; docs/metrics.md, 'Overfitting "
                          "statistics'): n_trials, blocks, best_column and its per-bar sharpe, skew, kurtosis, "
                          "psr, dsr, expected_max_sharpe, sharpe_variance, min_track_record (bars); cscv: "
                          "n_splits, pbo, logit_mean, logit_quantiles, slope, intercept, prob_oos_loss")
    walk_forward: WalkForward | None = Field(None, description="spec validation: the walk-forward's folds "
                                                                "and out-of-sample results")


class TopRow(Model):
    """One of the best columns: its rank, column index, symbol, parameters and metrics."""

    rank: int = Field(description="1 = best by info.rank_by")
    column: int = Field(description="the column index (GET /backtest/{job_id}/columns/{column}); in "
                                    "portfolio mode the combination's index")
    symbol: str | None = Field(description="the column's symbol; null in portfolio mode (a column is a "
                                           "portfolio over the whole universe)")
    params: dict[str, Any]
    metrics: dict[str, Number] = Field(description="metric name → value (docs/metrics.md)")


_JOB_EXAMPLE_ID = JOB_ID_EXAMPLE
_LINKS_EXAMPLE = {"self": f"/backtest/{_JOB_EXAMPLE_ID}", "results": f"/backtest/{_JOB_EXAMPLE_ID}/results",
                  "details": f"/backtest/{_JOB_EXAMPLE_ID}/details",
                  "columns": f"/backtest/{_JOB_EXAMPLE_ID}/columns/{{n}}",
                  "report": f"/backtest/{_JOB_EXAMPLE_ID}/report"}
_TIMINGS_EXAMPLE = {"created_at": "2024-05-02T09:30:00.120000+00:00",
                    "started_at": "2024-05-02T09:30:00.180000+00:00",
                    "finished_at": "2024-05-02T09:30:02.940000+00:00", "queued_s": 0.06, "run_s": 2.76}
_STATUS_EXAMPLE = {"job_id": _JOB_EXAMPLE_ID, "status": "running", "progress": 0.42, "stage": "simulating",
                   "eta_s": 3.1, "error": None, "links": _LINKS_EXAMPLE}
_BRIEF_EXAMPLE = {**_STATUS_EXAMPLE, "status": "succeeded", "progress": 1.0, "stage": "done", "eta_s": None,
                  "strategy": "sma_crossover", "n_symbols": 20, "n_columns": 240, "attempts": 1,
                  "timings": _TIMINGS_EXAMPLE}
_TOP_EXAMPLE = {"rank": 1, "column": 37, "symbol": "SYN003", "params": {"fast": 10, "slow": 150},
                "metrics": {"sharpe": 1.12, "total_return": 0.84, "max_drawdown": -0.21, "num_trades": 14}}
_INFO_EXAMPLE = {"strategy": "sma_crossover", "backend": "cpu", "n_bars": 2520, "n_symbols": 20,
                 "n_combinations": 12, "n_columns": 240, "start": "2010-01-04T00:00:00+00:00",
                 "end": "2019-08-30T00:00:00+00:00", "rank_by": "sharpe", "elapsed_s": 2.7}


class JobStatusDoc(Model):
    """``GET /backtest/{job_id}?view=status``: the lightest answer, for tight polling loops."""

    job_id: str
    status: Status
    progress: float = Field(ge=0, le=1, description="0 to 1")
    stage: str | None = Field(description="queued, calendar, simulating, done, cancelled, …")
    eta_s: float | None = Field(description="seconds left, estimated from the progress rate while running; "
                                            "null otherwise")
    error: ErrorBody | None = Field(description="why it failed (code, message, details); null unless failed")
    links: JobLinks

    model_config = _examples(_STATUS_EXAMPLE)


class JobBrief(JobStatusDoc):
    """A job in the list, and the answer of POST /backtest and DELETE /backtest/{job_id}."""

    strategy: str | None = Field(description="the strategy's name (null where the server does not record it)")
    n_symbols: int | None = Field(description="symbols in the run (null until known)")
    n_columns: int | None = Field(description="symbols × parameter combinations (null until known)")
    attempts: int = Field(description="runs that were lost or finished (a handed-back run does not count)")
    timings: Timings

    model_config = _examples(_BRIEF_EXAMPLE)


class CallbackRecord(Model):
    """The delivery of a job's ``callback_url`` (core/callbacks.py), recorded after every attempt."""

    url: str = Field(description="the callback URL (without any user:password@)")
    status: str = Field(description="pending, delivered, failed, or interrupted (the server stopped while a "
                                    "retry waited)")
    attempts: int
    last_error: str | None = None
    delivered_at: str | None = None


class JobDoc(JobBrief):
    """``GET /backtest/{job_id}``: status, progress, timings, error, and for a succeeded job the run's
    facts and its best rows with their metrics (no equity curves or trades: see ``links``)."""

    info: RunInfo | None = Field(description="facts of the run; null until it succeeded")
    top: list[TopRow] | None = Field(description="the best rows by info.rank_by (at most ?top=, default 10); "
                                                 "null until it succeeded")
    attempts_history: list[Attempt] = Field(description="every run of the job, oldest first")
    callback: CallbackRecord | None = Field(default=None, description="the callback's delivery; null without one")

    model_config = _examples({**_BRIEF_EXAMPLE, "info": _INFO_EXAMPLE, "top": [_TOP_EXAMPLE], "callback": None,
                              "attempts_history": [{"generation": 1, "owner": "gpu-box:4242:1a2b3c4d",
                                                    "started_at": _TIMINGS_EXAMPLE["started_at"],
                                                    "ended_at": _TIMINGS_EXAMPLE["finished_at"],
                                                    "outcome": "succeeded"}]})


class JobFull(JobDoc):
    """``GET /backtest/{job_id}?view=full``: the compact document plus the spec and the whole stored
    summary (``{info, top, details}``, details with every top-k equity curve and trade list: large)."""

    spec: dict[str, Any] | None = Field(description="the validated request (BacktestSpec)")
    summary: dict[str, Any] | None = Field(description="{info, top, details} once succeeded; null before")

    model_config = _examples({**_BRIEF_EXAMPLE, "info": _INFO_EXAMPLE, "top": [_TOP_EXAMPLE], "attempts_history": [],
                              "callback": None,
                              "spec": {"strategy": "sma_crossover", "params": {"fast": 10, "slow": 150}},
                              "summary": {"info": _INFO_EXAMPLE, "top": [_TOP_EXAMPLE], "details": []}})


class JobList(Model):
    """``GET /backtest``: one page of jobs, newest first."""

    jobs: list[JobBrief]
    total: int = Field(description="jobs matching the filter")
    limit: int
    offset: int

    model_config = _examples({"jobs": [_BRIEF_EXAMPLE], "total": 1, "limit": 50, "offset": 0})


# --------------------------------------------------------------------------- results and details


class ResultsPage(Model):
    """``GET /backtest/{job_id}/results`` (JSON): one page of the ranked table."""

    job_id: str
    total: int = Field(description="rows in the whole table (symbols × combinations)")
    limit: int
    offset: int
    columns: list[str] = Field(description="rank, column, symbol, the parameters, then the metrics")
    rows: list[dict[str, Any]] = Field(description="one object per row, keys as in columns; null for non-finite")

    model_config = _examples({"job_id": _JOB_EXAMPLE_ID, "total": 240, "limit": 1, "offset": 0,
                              "columns": ["rank", "column", "symbol", "fast", "slow", "sharpe"],
                              "rows": [{"rank": 1, "column": 37, "symbol": "SYN003", "fast": 10, "slow": 150,
                                        "sharpe": 1.12}]})


class EquityCurve(Model):
    """The column's equity at every bar of the run."""

    time: list[str] = Field(description="bar timestamps (ISO 8601, UTC)")
    value: list[Number]


class Trade(Model):
    """One trade of a column (docs/semantics.md); in portfolio mode a round trip of one symbol."""

    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=False,
                              populate_by_name=True)  # symbol: portfolio mode only

    symbol: str | None = Field(None, description="portfolio mode: the symbol traded")
    entry_time: str
    exit_time: str
    direction: Literal["long", "short"]
    size: Number
    entry_price: Number
    exit_price: Number
    entry_fees: Number
    exit_fees: Number
    pnl: Number
    return_: Number = Field(alias="return", serialization_alias="return")
    exit_reason: str = Field(description="signal, sl, tp, tsl, end, open, …")
    bars: int
    status: Literal["open", "closed"]


class Order(Model):
    """Portfolio mode: one executed order (docs/semantics.md, "Portfolio mode")."""

    time: str
    symbol: str
    side: Literal["buy", "sell"]
    units: Number
    price: Number = Field(description="fill price (after slippage)")
    costs: Number = Field(description="fees + fixed fee + slippage paid on this fill")
    reason: str = Field(description="rebalance, delisted, stop_loss or take_profit")


class Holdings(Model):
    """Portfolio mode: the weights held after one rebalance."""

    time: str
    weights: dict[str, Number] = Field(description="symbol → units × close ÷ equity, non-zero positions only")


class ColumnDetail(Model):
    """One column re-simulated in record mode: metrics, and (when the run asked for them) equity and
    trades; in portfolio mode also the orders and the holdings at each rebalance."""

    column: int
    symbol: str | None
    params: dict[str, Any]
    metrics: dict[str, Number]
    equity: EquityCurve | None = None
    trades: list[Trade] | None = None
    orders: list[Order] | None = None
    holdings: list[Holdings] | None = None

    model_config = ConfigDict(json_schema_serialization_defaults_required=False)  # equity/trades optional


_DETAIL_EXAMPLE = {"column": 37, "symbol": "SYN003", "params": {"fast": 10, "slow": 150},
                   "metrics": {"sharpe": 1.12, "final_equity": 184000.0},
                   "equity": {"time": ["2010-01-04T00:00:00+00:00", "2010-01-05T00:00:00+00:00"],
                              "value": [100000.0, 100210.5]},
                   "trades": [{"entry_time": "2010-03-01T00:00:00+00:00", "exit_time": "2010-05-04T00:00:00+00:00",
                               "direction": "long", "size": 812.4, "entry_price": 123.1, "exit_price": 131.7,
                               "entry_fees": 0.0, "exit_fees": 0.0, "pnl": 6986.6, "return": 0.0699,
                               "exit_reason": "signal", "bars": 45, "status": "closed"}]}


class DetailsDoc(Model):
    """``GET /backtest/{job_id}/details``: the top-k columns' equity curves and trades, best first."""

    job_id: str
    details: list[ColumnDetail]

    model_config = _examples({"job_id": _JOB_EXAMPLE_ID, "details": [_DETAIL_EXAMPLE]})


class ColumnDoc(ColumnDetail):
    """``GET /backtest/{job_id}/columns/{n}``: any column's details, computed on demand."""

    job_id: str
    rank: int | None = Field(None, description="the column's rank when it is one of the stored top rows, else null")

    model_config = ConfigDict(json_schema_serialization_defaults_required=False,
                              json_schema_extra={"examples": [{"job_id": _JOB_EXAMPLE_ID, "rank": 1,
                                                               **_DETAIL_EXAMPLE}]})


# --------------------------------------------------------------------------- catalogue, data, status


class ParamInfo(Model):
    """One strategy parameter."""

    name: str
    type: str = Field(description="int, float, bool or str")
    default: Any
    min: float | None
    max: float | None
    choices: list[Any] | None
    description: str


class StrategyInfo(Model):
    """A strategy: its parameters, constraint and whether it trades short signals."""

    name: str
    kind: str = Field(description="signals: one symbol per column (entries/exits); portfolio: one "
                                  "combination's portfolio over the universe per column (docs/strategies.md)")
    description: str
    params: list[ParamInfo]
    constraint: str | None
    shorts: bool
    select: str | None = Field(None, description="portfolio strategies: the selection rule their scores are "
                                                 "meant for (the default of the spec's portfolio.select)")
    weighting: str | None = Field(None, description="portfolio strategies: the default portfolio.weighting")
    source: str = Field(description="builtin, plugin, or saved (POST /strategies)")
    version: int | None = Field(description="saved strategies: the latest version (null otherwise)")
    versions: list[int] | None = Field(description="saved strategies: every version (null otherwise)")


class SavedStrategyDoc(Model):
    """A saved strategy's version: ``POST``/``PUT /strategies`` answers and ``GET /strategies/{name}``."""

    name: str
    version: int
    description: str
    digest: str = Field(description="sha256 of the canonical document")
    created_at: str
    strategy: dict[str, Any] = Field(description="the expression strategy's canonical document "
                                                 "(docs/strategies.md, \"Expression strategies\")")
    versions: list[int] | None = Field(None, description="GET: every version of the strategy")

    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=False,
                              json_schema_extra={"examples": [{
                                  "name": "my_cross", "version": 2, "description": "SMA crossover",
                                  "digest": "3f" * 32, "created_at": "2026-12-02T08:00:00+00:00",
                                  "strategy": {"name": "my_cross",
                                               "signals": {"entry": "cross_above(sma(close, fast), sma(close, slow))",
                                                           "exit": "cross_below(sma(close, fast), sma(close, slow))"},
                                               "params": {"fast": {"type": "int", "default": 10, "min": 2},
                                                          "slow": {"type": "int", "default": 50, "min": 2}},
                                               "constraint": "fast < slow"},
                                  "versions": [1, 2]}]})


class StrategyDeleted(Model):
    """``DELETE /strategies/{name}``."""

    deleted: str
    versions: int = Field(description="how many versions were deleted")

    model_config = _examples({"deleted": "my_cross", "versions": 2})


class StrategyList(Model):
    """``GET /strategies``."""

    strategies: list[StrategyInfo]

    model_config = _examples({"strategies": [{
        "name": "sma_crossover", "description": "long when the fast SMA crosses above the slow SMA",
        "kind": "signals",
        "params": [{"name": "fast", "type": "int", "default": 10, "min": 1, "max": None, "choices": None,
                    "description": "fast window"}],
        "constraint": "fast < slow", "shorts": True, "select": None, "weighting": None,
        "source": "builtin", "version": None, "versions": None}]})


class SourceInfo(Model):
    """A market-data source."""

    name: str
    description: str
    frequencies: list[str]
    fetchable: bool = Field(description="whether missing bars are fetched on first use")
    stored_series: int = Field(description="series of this source in the store")


class SourceList(Model):
    """``GET /data/sources``."""

    sources: list[SourceInfo]

    model_config = _examples({"sources": [{"name": "synthetic", "description": "deterministic demo bars",
                                           "frequencies": ["1d"], "fetchable": True, "stored_series": 20}]})


class SymbolEntry(Model):
    """A stored series: its first and last bar, row count, and ``ended``: its final bar when the
    source marks the series as ended (a delisting: Tiingo's end date, an upload's ``delisted``
    flag), else null."""

    source: str
    symbol: str
    frequency: str
    first: str
    last: str
    rows: int
    updated: str
    ended: str | None = None


_ENTRY_EXAMPLE = {"source": "upload", "symbol": "AAPL", "frequency": "1d", "first": "2020-01-02T00:00:00+00:00",
                  "last": "2020-12-31T00:00:00+00:00", "rows": 253, "updated": "2024-05-02T09:30:00+00:00",
                  "ended": None}


class SymbolList(Model):
    """``GET /data/symbols``: one page of stored series."""

    symbols: list[SymbolEntry]
    total: int
    limit: int
    offset: int

    model_config = _examples({"symbols": [_ENTRY_EXAMPLE], "total": 1, "limit": 100, "offset": 0})


class UploadResult(Model):
    """``POST /data/upload``: the series stored."""

    stored: list[SymbolEntry]

    model_config = _examples({"stored": [_ENTRY_EXAMPLE]})


class SeriesDeleted(Model):
    """``DELETE /data/symbols/{source}/{frequency}/{symbol}``: the series removed."""

    deleted: SymbolEntry

    model_config = _examples({"deleted": _ENTRY_EXAMPLE})


class WorkerInfo(Model):
    """A Dask worker."""

    address: str
    name: str
    nthreads: int | None
    memory_limit: int | None


class ClusterInfo(Model):
    """The Dask cluster the server runs jobs on."""

    kind: str = Field(description="local, local-cuda or external")
    scheduler: str | None
    dashboard: str | None
    workers: list[WorkerInfo]


class GpuStatus(Model):
    """``GET /gpu/status``: the device the engine computes on (or why there is none) and the cluster."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=False, json_schema_extra={"examples": [
        {"available": False, "backend": "cpu", "reason": "GPU_BACKTEST_BACKEND=cpu", "engine_backend": "cpu",
         "cluster": None}]})

    available: bool
    backend: str
    reason: str | None = Field(None, description="why no GPU is used (when available is false)")
    device: int | None = None
    device_count: int | None = None
    name: str | None = None
    compute_capability: str | None = None
    memory: dict[str, int] | None = None
    memory_limit_fraction: float | None = None
    cuda_runtime_version: int | None = None
    utilization: dict[str, float] | None = None
    engine_backend: str
    cluster: ClusterInfo | None = Field(description="null when jobs run in the server process")


class Health(Model):
    """``GET /health``."""

    status: Literal["ok"]

    model_config = _examples({"status": "ok"})


MODELS: tuple[type[BaseModel], ...] = (
    ErrorEnvelope, JobStatusDoc, JobBrief, JobDoc, JobFull, JobList, ResultsPage, DetailsDoc, ColumnDoc,
    StrategyList, SavedStrategyDoc, StrategyDeleted, SourceList, SymbolList, UploadResult, SeriesDeleted,
    GpuStatus, Health,
)
"""The models whose schemas are the document's components (with every model they refer to)."""


def component_schemas(ref_template: str = "#/components/schemas/{model}") -> dict[str, Any]:
    """``components.schemas`` of the OpenAPI document: every model in `MODELS` and those they use."""
    _, top = models_json_schema([(m, "serialization") for m in MODELS], ref_template=ref_template)
    return dict(top.get("$defs", {}))


def build(model: type[BaseModel], doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` checked against ``model`` and dumped as JSON data (aliases, every field present)."""
    return model.model_validate(doc).model_dump(mode="json", by_alias=True)
