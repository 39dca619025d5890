"""BacktestSpec: the validated backtest request — the document ``POST /backtest`` takes.

`BacktestSpec.from_dict(doc)` checks every field and raises `SpecError` naming the field's
path (``execution.fill``, ``params.fast[2]``) and the reason. `expand_grid` turns the spec's
``params`` into the list of parameter combinations for a strategy.

Parameter values are a scalar, a list, or a range ``{"start", "stop", "step"}`` whose
``stop`` is included. The grid is the product of all parameters in the strategy's declared
order, filtered by the strategy's constraint; omitted parameters take their defaults.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import SpecError
from .panel import SYMBOL_RE
from .strategy import Strategy

FILLS = ("close", "next_open")
DIRECTIONS = ("long", "short", "both")
SIZE_TYPES = ("percent", "value", "units")
FREQUENCIES = ("1min", "5min", "15min", "30min", "1h", "4h", "1d", "1w", "1mo")


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


def _number(doc: Mapping[str, Any], key: str, path: str, default: float, lo: float | None = None,
            hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> float:
    v = doc.get(key, default)
    where = f"{path}.{key}"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(where, f"must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise SpecError(where, "must be finite")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise SpecError(where, f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise SpecError(where, f"must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
    return v


def _choice(doc: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...], default: str) -> str:
    v = doc.get(key, default)
    if v not in choices:
        raise SpecError(f"{path}.{key}", f"must be one of {', '.join(choices)}, got {v!r}")
    return v


def _bool(doc: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    v = doc.get(key, default)
    if not isinstance(v, bool):
        raise SpecError(f"{path}.{key}", f"must be true or false, got {v!r}")
    return v


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
    return v


@dataclass(frozen=True)
class Costs:
    """Trading costs: ``fees`` (fraction of traded value), ``fixed_fee`` (per fill), ``slippage``."""

    fees: float = 0.0
    fixed_fee: float = 0.0
    slippage: float = 0.0

    @classmethod
    def from_dict(cls, doc: Any, path: str = "costs") -> Costs:
        d = _obj(doc, path)
        _no_extra(d, {"fees", "fixed_fee", "slippage"}, path)
        return cls(
            fees=_number(d, "fees", path, 0.0, 0.0, 1.0, hi_open=True),
            fixed_fee=_number(d, "fixed_fee", path, 0.0, 0.0),
            slippage=_number(d, "slippage", path, 0.0, 0.0, 1.0, hi_open=True),
        )


@dataclass(frozen=True)
class Execution:
    """How orders execute; see docs/semantics.md."""

    init_cash: float = 100_000.0
    fill: str = "close"
    direction: str = "long"
    size: float = 1.0
    size_type: str = "percent"
    fractional: bool = True
    sl_stop: float = 0.0
    tp_stop: float = 0.0
    tsl_stop: float = 0.0

    @classmethod
    def from_dict(cls, doc: Any, path: str = "execution") -> Execution:
        d = _obj(doc, path)
        _no_extra(d, {f for f in cls.__dataclass_fields__}, path)
        size_type = _choice(d, "size_type", path, SIZE_TYPES, "percent")
        size = _number(d, "size", path, 1.0, 0.0, 1.0 if size_type == "percent" else None, lo_open=True)
        return cls(
            init_cash=_number(d, "init_cash", path, 100_000.0, 0.0, lo_open=True),
            fill=_choice(d, "fill", path, FILLS, "close"),
            direction=_choice(d, "direction", path, DIRECTIONS, "long"),
            size=size,
            size_type=size_type,
            fractional=_bool(d, "fractional", path, True),
            sl_stop=_number(d, "sl_stop", path, 0.0, 0.0, 1.0, hi_open=True),
            tp_stop=_number(d, "tp_stop", path, 0.0, 0.0),
            tsl_stop=_number(d, "tsl_stop", path, 0.0, 0.0, 1.0, hi_open=True),
        )


@dataclass(frozen=True)
class MetricsOptions:
    """``risk_free`` per period; ``periods_per_year`` inferred from bar spacing when None;
    ``benchmark``: a symbol whose returns alpha/beta are measured against."""

    risk_free: float = 0.0
    periods_per_year: float | None = None
    benchmark: str | None = None

    @classmethod
    def from_dict(cls, doc: Any, path: str = "metrics") -> MetricsOptions:
        d = _obj(doc, path)
        _no_extra(d, {"risk_free", "periods_per_year", "benchmark"}, path)
        ppy = d.get("periods_per_year")
        if ppy is not None:
            ppy = _number(d, "periods_per_year", path, 252.0, 0.0, lo_open=True)
        bench = d.get("benchmark")
        if bench is not None and not isinstance(bench, str):
            raise SpecError(f"{path}.benchmark", f"must be a symbol name, got {bench!r}")
        return cls(risk_free=_number(d, "risk_free", path, 0.0, -1.0, 1.0, lo_open=True),
                   periods_per_year=ppy, benchmark=bench)


@dataclass(frozen=True)
class OutputOptions:
    """What the result holds: ranking metric, how many top rows get details, which details."""

    rank_by: str = "sharpe"
    top_k: int = 10
    equity_curves: bool = True
    trades: bool = True
    metrics: tuple[str, ...] | None = None  # None: every metric

    @classmethod
    def from_dict(cls, doc: Any, path: str = "output") -> OutputOptions:
        from .metrics import METRICS

        d = _obj(doc, path)
        _no_extra(d, {"rank_by", "top_k", "equity_curves", "trades", "metrics"}, path)
        rank_by = d.get("rank_by", "sharpe")
        if rank_by not in METRICS:
            raise SpecError(f"{path}.rank_by", f"unknown metric {rank_by!r}; one of {', '.join(METRICS)}")
        top_k = d.get("top_k", 10)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= 1000:
            raise SpecError(f"{path}.top_k", f"must be an integer from 0 to 1000, got {top_k!r}")
        wanted = d.get("metrics")
        if wanted is not None:
            if not isinstance(wanted, list) or not wanted:
                raise SpecError(f"{path}.metrics", "must be a non-empty list of metric names")
            for i, m in enumerate(wanted):
                if m not in METRICS:
                    raise SpecError(f"{path}.metrics[{i}]", f"unknown metric {m!r}; one of {', '.join(METRICS)}")
            if rank_by not in wanted:
                wanted = [*wanted, rank_by]
            wanted = tuple(wanted)
        return cls(rank_by=rank_by, top_k=top_k, equity_curves=_bool(d, "equity_curves", path, True),
                   trades=_bool(d, "trades", path, True), metrics=wanted)


SPEC_FIELDS = {"strategy", "params", "symbols", "source", "frequency", "start", "end", "adjusted",
               "costs", "execution", "metrics", "output", "callback_url"}


@dataclass(frozen=True)
class BacktestSpec:
    """A validated backtest request. Build with `from_dict`; `to_dict` gives the JSON form."""

    strategy: str
    params: dict[str, Any] = field(default_factory=dict)
    symbols: tuple[str, ...] | None = None
    source: str | None = None
    frequency: str = "1d"
    start: str | None = None
    end: str | None = None
    adjusted: bool = True
    costs: Costs = field(default_factory=Costs)
    execution: Execution = field(default_factory=Execution)
    metrics: MetricsOptions = field(default_factory=MetricsOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    callback_url: str | None = None

    @classmethod
    def from_dict(cls, doc: Any) -> BacktestSpec:
        """Validate a JSON-like document; SpecError names the first bad field."""
        if isinstance(doc, BacktestSpec):
            return doc
        d = _obj(doc, "")
        _no_extra(d, SPEC_FIELDS, "")
        strategy = d.get("strategy")
        if not isinstance(strategy, str) or not strategy:
            raise SpecError("strategy", "is required: the name of a strategy (see GET /strategies)")
        params = _obj(d.get("params"), "params")
        symbols = d.get("symbols")
        if symbols is not None:
            if isinstance(symbols, str):
                symbols = [symbols]
            if not isinstance(symbols, list) or not symbols:
                raise SpecError("symbols", "must be a non-empty list of symbol names")
            for i, s in enumerate(symbols):
                if not isinstance(s, str) or not SYMBOL_RE.match(s) or ".." in s:
                    raise SpecError(f"symbols[{i}]", f"must be a symbol name (letters, digits, . _ ^ = -), "
                                                     f"got {s!r}")
            if len(set(symbols)) != len(symbols):
                raise SpecError("symbols", "lists a symbol twice")
            symbols = tuple(symbols)
        source = d.get("source")
        if source is not None and (not isinstance(source, str) or not source):
            raise SpecError("source", f"must be a data source name, got {source!r}")
        frequency = d.get("frequency", "1d")
        if frequency not in FREQUENCIES:
            raise SpecError("frequency", f"must be one of {', '.join(FREQUENCIES)}, got {frequency!r}")
        start = _timestamp(d.get("start"), "start")
        end = _timestamp(d.get("end"), "end")
        if start and end and pd.Timestamp(start) > pd.Timestamp(end):
            raise SpecError("end", "is before start")
        callback = d.get("callback_url")
        if callback is not None and (not isinstance(callback, str) or not callback.startswith(("http://", "https://"))):
            raise SpecError("callback_url", "must be an http(s) URL")
        return cls(
            strategy=strategy,
            params=params,
            symbols=symbols,
            source=source,
            frequency=frequency,
            start=start,
            end=end,
            adjusted=_bool(d, "adjusted", "", True),
            costs=Costs.from_dict(d.get("costs")),
            execution=Execution.from_dict(d.get("execution")),
            metrics=MetricsOptions.from_dict(d.get("metrics")),
            output=OutputOptions.from_dict(d.get("output")),
            callback_url=callback,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (round-trips through `from_dict`)."""
        out = asdict(self)
        if self.symbols is not None:
            out["symbols"] = list(self.symbols)
        if self.output.metrics is not None:
            out["output"]["metrics"] = list(self.output.metrics)
        return out


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
    lists = []
    for p in strategy.params:
        raw = params.get(p.name, p.default)
        lists.append(_param_values(p, raw, f"params.{p.name}"))
    size = 1
    for values in lists:
        size *= len(values)
    if max_grid is not None and size > max_grid:
        raise SpecError("params", f"the grid has {size} combinations; the limit is {max_grid}")
    if not strategy.params:
        return {}
    combos = list(itertools.product(*lists))
    grid = {p.name: np.array([c[i] for c in combos], dtype=_dtype(p.type)) for i, p in enumerate(strategy.params)}
    if strategy.constraint is not None:
        mask = np.asarray(strategy.constraint(grid), dtype=bool)
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
