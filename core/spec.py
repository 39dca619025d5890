"""BacktestSpec: the validated backtest request — the document ``POST /backtest`` takes.

`BacktestSpec.from_dict(doc)` checks every field and raises `SpecError` naming the field's
path (``execution.fill``, ``params.fast[2]``) and the reason. `BacktestSpec.json_schema()` is
the request's JSON Schema (served in /openapi.json): each field is declared once, with the rule
(core/specfields.py) that both checks it and describes its type, choices, default and bounds.
`expand_grid` turns the spec's ``params`` into the list of parameter combinations for a strategy.

Parameter values are a scalar, a list, or a range ``{"start", "stop", "step"}`` whose
``stop`` is included. The grid is the product of all parameters in the strategy's declared
order, filtered by the strategy's constraint; omitted parameters take their defaults.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .errors import SpecError
from .folds import Validation
from .panel import SYMBOL_RE
from .specfields import (
    Choice,
    Described,
    Flag,
    Integer,
    Many,
    Nested,
    Number,
    Text,
    field_names,
    meta,
    object_schema,
    rule_of,
    take,
)
from .strategy import Strategy
from .timeutil import end_bound_utc, to_utc

FILLS = ("close", "next_open")
DIRECTIONS = ("long", "short", "both")
SIZE_TYPES = ("percent", "value", "units")
FREQUENCIES = ("1min", "5min", "15min", "30min", "1h", "4h", "1d", "1w", "1mo")
_DATE = {"type": "string", "nullable": True}  # an ISO 8601 date or date-time (pandas.Timestamp parses it)


def _obj(doc: Any, path: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise SpecError(path, f"must be an object, got {type(doc).__name__}")
    return dict(doc)


def _no_extra(doc: Mapping[str, Any], allowed: set[str], path: str) -> None:
    for key in doc:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise SpecError(where, f"unknown field; allowed: {', '.join(sorted(allowed))}")


#: The dates a spec may name: what an int64 count of nanoseconds holds (pandas' Timestamp range), in whole days.
DATE_MIN = pd.Timestamp("1677-09-22", tz="UTC")
DATE_MAX = pd.Timestamp("2262-04-10", tz="UTC")


def _timestamp(v: Any, path: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise SpecError(path, f"must be an ISO date string, got {v!r}")
    try:
        ts = pd.Timestamp(v)
    except (ValueError, TypeError):
        raise SpecError(path, f"is not a date: {v!r}") from None
    if ts is pd.NaT:
        raise SpecError(path, f"is not a date: {v!r}")
    try:  # the store and the engine count time in int64 UTC nanoseconds
        _ = to_utc(ts).value, end_bound_utc(v).value
    except (OverflowError, ValueError):  # (pandas' OutOfBoundsDatetime is a ValueError)
        raise SpecError(path, f"{v!r} is outside the dates this service can hold "
                              f"({DATE_MIN.date()} … {DATE_MAX.date()})") from None
    return v


def _metric_names() -> tuple[str, ...]:
    from .metrics import ALL_METRICS

    return ALL_METRICS


_PARAM_VALUE = {"oneOf": [
    {"type": "number"}, {"type": "string"}, {"type": "boolean"},
    {"type": "array", "minItems": 1, "items": {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}},
    {"type": "object", "required": ["start", "stop"], "additionalProperties": False,
     "properties": {"start": {"type": "number"}, "stop": {"type": "number"},
                    "step": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "default": 1}}},
]}
_EXPR = {"type": "string", "minLength": 1, "maxLength": 2000}
_EXPRESSION_STRATEGY = {
    "type": "object", "additionalProperties": False,
    "description": "an expression strategy: exactly one of signals, score, weights",
    "properties": {
        "name": {"type": "string", "maxLength": 64},
        "description": {"type": "string", "maxLength": 2000},
        "signals": {"type": "object", "additionalProperties": False, "required": ["entry", "exit"],
                    "properties": {k: _EXPR for k in ("entry", "exit", "short_entry", "short_exit")}},
        "score": _EXPR,
        "weights": _EXPR,
        "params": {"type": "object", "maxProperties": 16, "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["default"],
            "properties": {"type": {"type": "string", "enum": ["int", "float"], "default": "float"},
                           "default": {"type": "number"}, "min": {"type": "number", "nullable": True},
                           "max": {"type": "number", "nullable": True},
                           "description": {"type": "string", "maxLength": 500}}}},
        "constraint": {"type": "string", "maxLength": 2000, "nullable": True},
        "select": {"type": "string", "enum": ["top_n", "bottom_n", "quantile", "all", "long_short"],
                   "nullable": True},
        "weighting": {"type": "string", "enum": ["equal", "score", "inverse_volatility"], "nullable": True},
        "version": {"type": "integer", "minimum": 1, "maximum": 999_999_999, "nullable": True,
                    "description": "a saved strategy's version (the server sets it when a spec names one)"},
    },
}
_STRATEGY_NAME = Text("is required: the name of a strategy (see GET /strategies) or an expression strategy "
                      "object", nonempty=True)


def _strategy(value: Any) -> str | dict[str, Any]:
    """A strategy name, or an expression strategy document in its canonical form."""
    if isinstance(value, Mapping):
        from .expr import canonical

        return canonical(value, "strategy")
    return _STRATEGY_NAME.check(value, "strategy")


_SYMBOL = {"type": "string", "pattern": SYMBOL_RE.pattern, "maxLength": 32}
_METRIC = Choice(_metric_names, noun="metric")


@dataclass(frozen=True)
class Costs:
    """Trading costs: ``fees`` (fraction of traded value), ``fixed_fee`` (per fill), ``slippage``."""

    fees: float = field(default=0.0, metadata=meta(Number(0.0, 1.0, hi_open=True),
                                                   "fraction of traded value charged on every fill"))
    fixed_fee: float = field(default=0.0, metadata=meta(Number(0.0), "currency charged on every fill"))
    slippage: float = field(default=0.0, metadata=meta(
        Number(0.0, 1.0, hi_open=True), "fraction; buys fill at price × (1 + slippage), sells at × (1 − slippage)"))

    @classmethod
    def from_dict(cls, doc: Any, path: str = "costs") -> Costs:
        d = _obj(doc, path)
        _no_extra(d, field_names(cls), path)
        return cls(
            fees=take(cls, d, "fees", path),
            fixed_fee=take(cls, d, "fixed_fee", path),
            slippage=take(cls, d, "slippage", path),
        )

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the ``costs`` object (from the fields' rules)."""
        return object_schema(cls)


@dataclass(frozen=True)
class Execution:
    """How orders execute; see docs/semantics.md."""

    init_cash: float = field(default=100_000.0, metadata=meta(Number(0.0, lo_open=True), "starting cash"))
    fill: str = field(default="close", metadata=meta(
        Choice(FILLS), "close: at the signal bar's close; next_open: at the next valid bar's open"))
    direction: str = field(default="long", metadata=meta(Choice(DIRECTIONS), "which signals trade"))
    size: float = field(default=1.0, metadata=meta(
        Number(0.0, lo_open=True), "position size in size_type units; at most 1 when size_type is percent"))
    size_type: str = field(default="percent", metadata=meta(
        Choice(SIZE_TYPES), "percent: fraction of equity; value: cash; units: shares"))
    fractional: bool = field(default=True, metadata=meta(Flag(), "false: whole units only (rounded down)"))
    sl_stop: float = field(default=0.0, metadata=meta(
        Number(0.0, 1.0, hi_open=True), "stop-loss as a fraction of the entry price; 0 = off"))
    tp_stop: float = field(default=0.0, metadata=meta(
        Number(0.0), "take-profit as a fraction of the entry price; 0 = off"))
    tsl_stop: float = field(default=0.0, metadata=meta(
        Number(0.0, 1.0, hi_open=True), "trailing stop as a fraction of the peak (trough) price; 0 = off"))

    @classmethod
    def from_dict(cls, doc: Any, path: str = "execution") -> Execution:
        d = _obj(doc, path)
        _no_extra(d, field_names(cls), path)
        size_type = take(cls, d, "size_type", path)
        size_rule = replace(rule_of(cls, "size"), hi=1.0 if size_type == "percent" else None)
        size = take(cls, d, "size", path, size_rule)
        return cls(
            init_cash=take(cls, d, "init_cash", path),
            fill=take(cls, d, "fill", path),
            direction=take(cls, d, "direction", path),
            size=size,
            size_type=size_type,
            fractional=take(cls, d, "fractional", path),
            sl_stop=take(cls, d, "sl_stop", path),
            tp_stop=take(cls, d, "tp_stop", path),
            tsl_stop=take(cls, d, "tsl_stop", path),
        )

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the ``execution`` object (from the fields' rules)."""
        return object_schema(cls)


@dataclass(frozen=True)
class MetricsOptions:
    """``risk_free`` per period; ``periods_per_year`` inferred from the bars' calendar when None;
    ``benchmark``: a symbol whose returns alpha/beta are measured against."""

    risk_free: float = field(default=0.0, metadata=meta(Number(-1.0, 1.0, lo_open=True), "risk-free rate per period"))
    periods_per_year: float | None = field(default=None, metadata=meta(
        Number(0.0, lo_open=True, nullable=True),
        "annualisation factor; null: inferred from the bars' calendar (docs/metrics.md)"))
    benchmark: str | None = field(default=None, metadata=meta(
        Text("must be a symbol name, got {value!r}", nullable=True),
        "a symbol whose returns alpha and beta are measured against"))

    @classmethod
    def from_dict(cls, doc: Any, path: str = "metrics") -> MetricsOptions:
        d = _obj(doc, path)
        _no_extra(d, field_names(cls), path)
        ppy = take(cls, d, "periods_per_year", path)
        bench = take(cls, d, "benchmark", path)
        return cls(risk_free=take(cls, d, "risk_free", path), periods_per_year=ppy, benchmark=bench)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the ``metrics`` object (from the fields' rules)."""
        return object_schema(cls)


DEFAULT_CSCV_BLOCKS = 16
CSCV_BLOCKS = tuple(range(2, 21, 2))


DEFAULT_OVERFITTING = {"blocks": DEFAULT_CSCV_BLOCKS}


def _overfitting(value: Any, where: str) -> dict[str, int] | None:
    """``output.overfitting``: null (off) or ``{"blocks": S}`` with S even, 2 to 20 (default 16)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError(where, f"must be an object or null, got {value!r}")
    extra = sorted(set(value) - {"blocks"})
    if extra:
        raise SpecError(f"{where}.{extra[0]}", "unknown field")
    blocks = value.get("blocks", DEFAULT_CSCV_BLOCKS)
    if isinstance(blocks, bool) or blocks not in CSCV_BLOCKS:
        raise SpecError(f"{where}.blocks", f"must be an even integer from 2 to 20, got {blocks!r}")
    return {"blocks": int(blocks)}


@dataclass(frozen=True)
class OutputOptions:
    """What the result holds: ranking metric, how many top rows get details, which details."""

    rank_by: str = field(default="sharpe", metadata=meta(
        _METRIC, "the metric the table is ranked by (in its better direction)"))
    top_k: int = field(default=10, metadata=meta(Integer(0, 1000), "how many of the best columns get details"))
    equity_curves: bool = field(default=True, metadata=meta(Flag(), "details include the equity curve"))
    trades: bool = field(default=True, metadata=meta(Flag(), "details include the trades"))
    metrics: tuple[str, ...] | None = field(default=None, metadata=meta(  # None: every metric
        Many(_METRIC), "the metrics to compute (rank_by is added); null: all"))
    overfitting: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_OVERFITTING), metadata=meta(
        Described({"type": "object", "nullable": True, "additionalProperties": False,
                   "properties": {"blocks": {"type": "integer", "enum": list(CSCV_BLOCKS),
                                             "default": DEFAULT_CSCV_BLOCKS}}}),
        "overfitting statistics of a sweep (PSR, DSR, MinTRL, CSCV's PBO; docs/metrics.md) over `blocks` "
        "(an even number 2-20, default 16) time blocks; on by default (`{\"blocks\": 16}`), null: off"))

    @classmethod
    def from_dict(cls, doc: Any, path: str = "output") -> OutputOptions:
        d = _obj(doc, path)
        _no_extra(d, field_names(cls), path)
        rank_by = take(cls, d, "rank_by", path)
        top_k = take(cls, d, "top_k", path)
        wanted = take(cls, d, "metrics", path)
        if wanted is not None:
            if rank_by not in wanted:
                wanted = [*wanted, rank_by]
            wanted = tuple(wanted)
        return cls(rank_by=rank_by, top_k=top_k, equity_curves=take(cls, d, "equity_curves", path),
                   trades=take(cls, d, "trades", path), metrics=wanted,
                   overfitting=(_overfitting(d["overfitting"], f"{path}.overfitting") if "overfitting" in d
                                else dict(DEFAULT_OVERFITTING)))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the ``output`` object (from the fields' rules)."""
        return object_schema(cls)


_REBALANCE_RULES = ("1d", "1w", "1m", "1q")
_SELECTIONS = ("top_n", "bottom_n", "quantile", "all", "long_short")
_WEIGHTINGS = ("equal", "score", "inverse_volatility")
MAX_GROSS_LEVERAGE = 10.0


def _nullable_choice(value: Any, options: tuple[str, ...], where: str) -> str | None:
    if value is None:
        return None
    if value not in options:
        raise SpecError(where, f"must be one of {', '.join(options)} or null, got {value!r}")
    return value


@dataclass(frozen=True)
class Portfolio:
    """Portfolio-mode rules, for portfolio strategies only (null: these defaults; docs/semantics.md,
    "Portfolio mode" and "Target weights"): when and how a portfolio strategy's scores become
    target weights for one shared cash balance."""

    rebalance: str | int = field(default="1m", metadata=meta(
        Described({"oneOf": [{"type": "string", "enum": list(_REBALANCE_RULES)},
                             {"type": "integer", "minimum": 1, "maximum": 1_000_000}]}),
        "1d / 1w / 1m / 1q: the first bar of each day, week, month, quarter; an integer N: every N bars"))
    select: str | None = field(default=None, metadata=meta(
        Described({"type": "string", "enum": list(_SELECTIONS), "nullable": True}),
        "top_n, bottom_n, quantile, all, long_short (top n long, bottom n short); null: the strategy's own"))
    quantile: float = field(default=0.2, metadata=meta(
        Number(0.0, 1.0, lo_open=True), "select quantile: the top fraction of eligible names held"))
    weighting: str | None = field(default=None, metadata=meta(
        Described({"type": "string", "enum": list(_WEIGHTINGS), "nullable": True}),
        "equal, score (∝ score), inverse_volatility (∝ 1/σ); null: the strategy's own"))
    volatility_lookback: int = field(default=60, metadata=meta(
        Integer(2, 10_000), "returns in σ for inverse_volatility weighting (when the strategy gives no σ)"))
    max_weight: float | None = field(default=None, metadata=meta(
        Number(0.0, lo_open=True, nullable=True), "cap on one name's |weight|; the excess goes to the others"))
    gross_leverage: float = field(default=1.0, metadata=meta(
        Number(0.0, MAX_GROSS_LEVERAGE, lo_open=True), "sum of |weights| of a fully invested book"))
    net_exposure: float = field(default=0.0, metadata=meta(
        Number(-1.0, 1.0),
        "select long_short: (longs − shorts) ÷ gross_leverage; 0 = market neutral, 1 = long only"))
    cash_buffer: float = field(default=0.0, metadata=meta(
        Number(0.0, 1.0, hi_open=True), "fraction of value kept in cash: weights × (1 − cash_buffer)"))
    min_trade: float = field(default=0.0, metadata=meta(
        Number(0.0), "orders worth less than this (currency) are skipped"))

    @classmethod
    def from_dict(cls, doc: Any, path: str = "portfolio") -> Portfolio:
        d = _obj(doc, path)
        _no_extra(d, field_names(cls), path)
        rebalance = d.get("rebalance", "1m")
        if isinstance(rebalance, bool) or not (
                rebalance in _REBALANCE_RULES
                or (isinstance(rebalance, int) and 1 <= rebalance <= 1_000_000)):
            raise SpecError(f"{path}.rebalance", f"must be one of {', '.join(_REBALANCE_RULES)} or an integer "
                                                 f"number of bars from 1 to 1000000, got {rebalance!r}")
        select = _nullable_choice(d.get("select"), _SELECTIONS, f"{path}.select")
        weighting = _nullable_choice(d.get("weighting"), _WEIGHTINGS, f"{path}.weighting")
        quantile = take(cls, d, "quantile", path)
        gross = take(cls, d, "gross_leverage", path)
        net = take(cls, d, "net_exposure", path)
        return cls(rebalance=rebalance, select=select, quantile=quantile, weighting=weighting,
                   volatility_lookback=take(cls, d, "volatility_lookback", path),
                   max_weight=take(cls, d, "max_weight", path), gross_leverage=gross, net_exposure=net,
                   cash_buffer=take(cls, d, "cash_buffer", path), min_trade=take(cls, d, "min_trade", path))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the ``portfolio`` object (from the fields' rules)."""
        return object_schema(cls)


@dataclass(frozen=True)
class BacktestSpec:
    """A validated backtest request. Build with `from_dict`; `to_dict` gives the JSON form."""

    strategy: str | dict[str, Any] = field(metadata=meta(
        Described({"oneOf": [{"type": "string", "minLength": 1}, _EXPRESSION_STRATEGY]}),
        "a strategy name (GET /strategies), or an expression strategy object (docs/strategies.md "
        "\"Expression strategies\")"))
    params: dict[str, Any] = field(default_factory=dict, metadata=meta(
        Described({"type": "object", "additionalProperties": _PARAM_VALUE, "nullable": True}),
        "per parameter: a value, a list, or a range {start, stop, step} (stop included); "
        "omitted parameters take their defaults"))
    symbols: tuple[str, ...] | None = field(default=None, metadata=meta(
        Described({"oneOf": [_SYMBOL, {"type": "array", "minItems": 1, "uniqueItems": True, "items": _SYMBOL}],
                   "nullable": True}),
        "the symbols to run (one name or a list); null: every symbol of the data or source"))
    source: str | None = field(default=None, metadata=meta(
        Text("must be a data source name, got {value!r}", nullable=True, nonempty=True),
        "the data source (GET /data/sources); null: synthetic"))
    frequency: str = field(default="1d", metadata=meta(Choice(FREQUENCIES), "bar frequency"))
    start: str | None = field(default=None, metadata=meta(Described(_DATE), "first bar: an ISO 8601 date or date-time"))
    end: str | None = field(default=None, metadata=meta(
        Described(_DATE), "last bar: an ISO 8601 date or date-time; a bare date includes its whole day"))
    adjusted: bool = field(default=True, metadata=meta(
        Flag(), "split/dividend-adjusted prices where the source has them"))
    costs: Costs = field(default_factory=Costs, metadata=meta(Nested(Costs)))
    execution: Execution = field(default_factory=Execution, metadata=meta(Nested(Execution)))
    metrics: MetricsOptions = field(default_factory=MetricsOptions, metadata=meta(Nested(MetricsOptions)))
    output: OutputOptions = field(default_factory=OutputOptions, metadata=meta(Nested(OutputOptions)))
    portfolio: Portfolio | None = field(default=None, metadata=meta(Nested(Portfolio)))
    validation: Validation | None = field(default=None, metadata=meta(
        Nested(Validation), "walk-forward validation (docs/semantics.md \"Walk-forward\"); null: none"))
    callback_url: str | None = field(default=None, metadata=meta(
        Text("must be an http(s) URL", nullable=True, prefixes=("http://", "https://"), extra={"format": "uri"}),
        "POSTed {job_id, status, error, links} when the job ends: public addresses only, no "
        "credentials, redirects not followed (see docs/deploy.md)"))

    @classmethod
    def from_dict(cls, doc: Any) -> BacktestSpec:
        """Validate a JSON-like document; SpecError names the first bad field."""
        if isinstance(doc, BacktestSpec):
            return doc
        d = _obj(doc, "")
        _no_extra(d, field_names(cls), "")
        strategy = _strategy(d.get("strategy"))
        params = _obj(d.get("params"), "params")
        symbols = d.get("symbols")
        if symbols is not None:
            if isinstance(symbols, str):
                symbols = [symbols]
            if not isinstance(symbols, list) or not symbols:
                raise SpecError("symbols", "must be a non-empty list of symbol names")
            for i, s in enumerate(symbols):
                if not isinstance(s, str) or not SYMBOL_RE.fullmatch(s) or ".." in s:
                    raise SpecError(f"symbols[{i}]", f"must be a symbol name (letters, digits, . _ ^ = -), "
                                                     f"got {s!r}")
            if len(set(symbols)) != len(symbols):
                raise SpecError("symbols", "lists a symbol twice")
            symbols = tuple(symbols)
        source = rule_of(cls, "source").check(d.get("source"), "source")
        frequency = rule_of(cls, "frequency").check(d.get("frequency", "1d"), "frequency")
        start = _timestamp(d.get("start"), "start")
        end = _timestamp(d.get("end"), "end")
        if start and end and to_utc(start) > to_utc(end):  # (naive dates are UTC: never compared with aware ones)
            raise SpecError("end", "is before start")
        callback = rule_of(cls, "callback_url").check(d.get("callback_url"), "callback_url")
        if callback is not None:
            from .netpolicy import url_problem

            problem = url_problem(callback)
            if problem is not None:
                raise SpecError("callback_url", problem)
        return cls(
            strategy=strategy,
            params=params,
            symbols=symbols,
            source=source,
            frequency=frequency,
            start=start,
            end=end,
            adjusted=take(cls, d, "adjusted", ""),
            costs=Costs.from_dict(d.get("costs")),
            execution=Execution.from_dict(d.get("execution")),
            metrics=MetricsOptions.from_dict(d.get("metrics")),
            output=OutputOptions.from_dict(d.get("output")),
            portfolio=Portfolio.from_dict(d["portfolio"]) if d.get("portfolio") is not None else None,
            callback_url=callback,
            validation=Validation.from_dict(d.get("validation")),
        )

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the request document (``POST /backtest``), nested objects inline."""
        return object_schema(cls)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (round-trips through `from_dict`)."""
        out = asdict(self)
        if self.symbols is not None:
            out["symbols"] = list(self.symbols)
        if self.output.metrics is not None:
            out["output"]["metrics"] = list(self.output.metrics)
        return out


SPEC_FIELDS = frozenset(field_names(BacktestSpec))
"""The top-level keys of a spec document."""


def _range_count(raw: Mapping[str, Any]) -> int | None:
    """How many values a range ``{"start", "stop", "step"}`` holds, by arithmetic (None when it is
    malformed: `_param_values` then says what is wrong)."""
    start, stop, step = raw.get("start"), raw.get("stop"), raw.get("step", 1)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, stop, step)):
        return None
    if step <= 0 or stop < start:
        return None
    span = (stop - start) / step
    return math.floor(span + 1e-9) + 1 if math.isfinite(span) else None


def grid_bound(strategy: Strategy, params: Mapping[str, Any]) -> int:
    """An upper bound of the grid's size, computed without building any value: the product of
    each parameter's count (a range's by arithmetic, a list's length; duplicates and the
    constraint can only make the grid smaller). Unknown parameters are ignored here."""
    size = 1
    for p in strategy.params:
        raw = params.get(p.name, p.default)
        if isinstance(raw, Mapping):
            n = _range_count(raw)
            if n is None:
                continue
        elif isinstance(raw, list):
            n = max(1, len(raw))
        else:
            n = 1
        size *= n
    return size


def _param_values(p: Any, raw: Any, path: str) -> list[Any]:
    """The list of values one parameter takes in the grid."""
    if isinstance(raw, Mapping):
        _no_extra(raw, {"start", "stop", "step"}, path)
        for key in ("start", "stop"):
            if key not in raw:
                raise SpecError(f"{path}.{key}", "is required in a range")
        start, stop = raw["start"], raw["stop"]
        step = raw.get("step", 1)
        for key, v in (("start", start), ("stop", stop), ("step", step)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(f"{path}.{key}", f"must be a number, got {v!r}")
        if step <= 0:
            raise SpecError(f"{path}.step", f"must be > 0, got {step!r}")
        if stop < start:
            raise SpecError(f"{path}.stop", f"must be >= start ({start!r}), got {stop!r}")
        span = (stop - start) / step
        if not math.isfinite(span) or span > 1_000_000:
            raise SpecError(path, "range has too many values")
        count = math.floor(span + 1e-9) + 1
        if count > 1_000_000:
            raise SpecError(path, f"range has {count} values; too many")
        values = [start + i * step for i in range(count)]
        if p.type is int:
            values = [round(v, 9) for v in values]
        else:
            values = [round(v, 12) for v in values]
        items = values
    elif isinstance(raw, list):
        if not raw:
            raise SpecError(path, "is an empty list")
        items = raw
    else:
        items = [raw]
    out = []
    for i, v in enumerate(items):
        where = f"{path}[{i}]" if isinstance(raw, (list, Mapping)) else path
        try:
            out.append(p.check(v))
        except ValueError as exc:
            raise SpecError(where, str(exc)) from None
        except Exception as exc:  # a plugin's own check failed otherwise: still the value's fault
            raise SpecError(where, f"rejected by the strategy ({type(exc).__name__}: {str(exc)[:300]})") from None
    # keep order, drop duplicates
    seen: dict[Any, None] = {}
    for v in out:
        seen.setdefault(v, None)
    return list(seen)


def expand_grid(strategy: Strategy, params: Mapping[str, Any], max_grid: int | None = None) -> dict[str, np.ndarray]:
    """The parameter grid as name → array (one entry per combination), constraint applied.

    Raises SpecError for unknown or invalid parameters, a grid over ``max_grid``, or an empty grid.
    """
    known = [p.name for p in strategy.params]
    for name in params:
        if name not in known:
            takes = ", ".join(known) if known else "no parameters"
            raise SpecError(f"params.{name}", f"unknown parameter; {strategy.name} takes {takes}")
    if max_grid is not None:  # before any value is built: a huge range is refused by arithmetic
        bound = grid_bound(strategy, params)
        if bound > max_grid:
            raise SpecError("params", f"the grid has {bound} combinations; the limit is {max_grid} "
                                      "(GPU_BACKTEST_MAX_GRID)")
    lists = []
    for p in strategy.params:
        raw = params.get(p.name, p.default)
        lists.append(_param_values(p, raw, f"params.{p.name}"))
    size = 1
    for values in lists:
        size *= len(values)
    if max_grid is not None and size > max_grid:
        raise SpecError("params", f"the grid has {size} combinations; the limit is {max_grid} "
                                  "(GPU_BACKTEST_MAX_GRID)")
    if not strategy.params:
        return {}
    combos = list(itertools.product(*lists))
    grid = {p.name: np.array([c[i] for c in combos], dtype=_dtype(p.type)) for i, p in enumerate(strategy.params)}
    if strategy.constraint is not None:
        try:
            mask = np.asarray(strategy.constraint(grid), dtype=bool).reshape(-1)
        except Exception as exc:  # a plugin's constraint failed on these values
            raise SpecError("params", f"the strategy's constraint failed ({type(exc).__name__}: "
                                      f"{str(exc)[:300]})") from None
        if mask.shape != (len(combos),):
            raise SpecError("params", f"the strategy's constraint returned {mask.shape[0]} values for "
                                      f"{len(combos)} combinations")
        grid = {k: v[mask] for k, v in grid.items()}
        if mask.sum() == 0:
            raise SpecError(
                "params", f"the grid is empty after the constraint {strategy.constraint_text or ''}".rstrip()
            )
    return grid


def _dtype(t: type) -> Any:
    return {int: np.int64, float: np.float64, bool: np.bool_}.get(t, object)


def grid_rows(grid: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """The grid as a list of plain-Python parameter dicts (one per combination)."""
    if not grid:
        return [{}]
    n = len(next(iter(grid.values())))
    return [{k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in grid.items()} for i in range(n)]


def grid_size(grid: Mapping[str, np.ndarray]) -> int:
    """Number of combinations (1 for a strategy without parameters)."""
    return len(next(iter(grid.values()))) if grid else 1
