"""The public entry points: `expression_strategy`, `canonical`, `strategy_digest`.

A strategy document (a spec's ``strategy`` object) is validated field by field — every problem
a `SpecError` naming the field's path (``strategy.signals.entry``, ``strategy.params.fast.min``)
— into its *canonical* form (defaults filled, keys fixed), which is what a run records and what
its digest (sha256 of the canonical JSON) identifies. `expression_strategy` compiles it into a
`Strategy` (``signals``) or a `PortfolioStrategy` (``score`` → `Scores`, ``weights`` →
`TargetWeights`) that the engine runs like any built-in.
"""

from __future__ import annotations

import copy
import hashlib
import json
import keyword
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..errors import SpecError
from ..jsonsafe import UNSTORABLE_TEXT
from ..portfolio_strategy import PortfolioContext, PortfolioStrategy, Scores, TargetWeights
from ..strategy import Param as StrategyParam
from ..strategy import SignalContext, Signals, Strategy
from . import limits
from .compiler import Evaluator, GridFrame, PortfolioFrame, SignalFrame, bytes_per_cell, evaluate, shared_keys
from .functions import FUNCTIONS
from .ir import BOOL, FLOAT, Node
from .parser import FIELDS, Scope, parse

DEFAULT_NAME = "expression"
SIGNAL_KEYS = ("entry", "exit", "short_entry", "short_exit")
SELECTIONS = ("top_n", "bottom_n", "quantile", "all", "long_short")
WEIGHTINGS = ("equal", "score", "inverse_volatility")
_TOP = ("name", "description", "params", "constraint", "signals", "score", "weights", "select", "weighting",
        "version")
MAX_VERSION = 999_999_999
_PARAM_KEYS = ("type", "default", "min", "max", "description")
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")
_RESERVED = set(FIELDS) | set(FUNCTIONS) | set(keyword.kwlist) | {"true", "false", "nan", "inf"}


def is_expression(value: Any) -> bool:
    """Whether a spec's ``strategy`` value is an expression strategy document (an object)."""
    return isinstance(value, Mapping)


def _obj(v: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise SpecError(path, f"must be an object, got {type(v).__name__}")
    return v


def _keys(d: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for k in d:
        if k not in allowed:
            shown = str(k)[:40]
            raise SpecError(f"{path}.{shown}" if path else shown, f"unknown field; allowed: {', '.join(allowed)}")


def check_text(v: str, path: str) -> str:
    """``v`` if every database can store it (no U+0000, no lone surrogate: `UNSTORABLE_TEXT`);
    SpecError on ``path`` otherwise."""
    bad = UNSTORABLE_TEXT.search(v)
    if bad is not None:
        raise SpecError(path, f"character {bad.start() + 1} is U+{ord(bad.group()):04X}, which text may not "
                              "hold (no NUL, no lone surrogate)")
    return v


def _text(v: Any, path: str, limit: int, default: str | None = None) -> str | None:
    if v is None:
        return default
    if not isinstance(v, str):
        raise SpecError(path, f"must be a string, got {type(v).__name__}")
    if len(v) > limit:
        raise SpecError(path, f"is {len(v)} characters long; the limit is {limit}")
    return check_text(v, path)


def _number(v: Any, path: str, ptype: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(path, f"must be a number, got {type(v).__name__}")
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError(path, "must be finite")
    if ptype == "int":
        if isinstance(v, float) and not v.is_integer():
            raise SpecError(path, f"must be an integer, got {v!r}")
        if abs(v) > 2**53:
            raise SpecError(path, "is too large")
        return int(v)
    try:
        f = float(v)
    except OverflowError:
        raise SpecError(path, "is too large") from None
    if not math.isfinite(f):
        raise SpecError(path, "is too large")
    return f


def _params(raw: Any, path: str) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    d = _obj(raw, path)
    if len(d) > limits.MAX_PARAMS:
        raise SpecError(path, f"declares {len(d)} parameters; the limit is {limits.MAX_PARAMS}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in d.items():
        where = f"{path}.{str(name)[:40]}"
        if (not isinstance(name, str) or len(name) > limits.MAX_NAME_CHARS or not _NAME_RE.match(name)
                or name.startswith("__")):
            raise SpecError(where, f"a parameter name is lower-case letters, digits and _ (not starting "
                                   f"with a digit or __), at most {limits.MAX_NAME_CHARS} characters")
        if name in _RESERVED:
            raise SpecError(where, f"{name!r} is reserved (a bar field, a function or a keyword)")
        p = _obj(spec, where)
        _keys(p, _PARAM_KEYS, where)
        ptype = p.get("type", "float")
        if ptype not in ("int", "float"):
            raise SpecError(f"{where}.type", f"must be \"int\" or \"float\", got {ptype!r}")
        if "default" not in p:
            raise SpecError(f"{where}.default", "is required")
        default = _number(p["default"], f"{where}.default", ptype)
        lo = None if p.get("min") is None else _number(p["min"], f"{where}.min", ptype)
        hi = None if p.get("max") is None else _number(p["max"], f"{where}.max", ptype)
        if lo is not None and hi is not None and lo > hi:
            raise SpecError(f"{where}.max", f"is below min ({lo})")
        if lo is not None and default < lo:
            raise SpecError(f"{where}.default", f"is below min ({lo})")
        if hi is not None and default > hi:
            raise SpecError(f"{where}.default", f"is above max ({hi})")
        desc = _text(p.get("description"), f"{where}.description", limits.MAX_PARAM_DESCRIPTION_CHARS, "")
        out[name] = {"type": ptype, "default": default, "min": lo, "max": hi, "description": desc}
    return out


def _check(node: Node, path: str, kind: str) -> Node:
    if node.type.kind != kind:
        want = "a condition (a comparison, cross_above, and/or/not …)" if kind == BOOL else "a number or a series"
        raise SpecError(path, f"column 1: the expression gives a {node.type}; expected {want}")
    return node


class _Compiled:
    """A validated document: its canonical form and its parsed expressions."""

    def __init__(self, canon: dict[str, Any], exprs: dict[str, Node], constraint: Node | None,
                 version: int | None = None) -> None:
        self.canon = canon
        self.exprs = exprs
        self.constraint = constraint
        self.version = version  # a saved strategy's version (set by the server; not part of the digest)
        self.digest = hashlib.sha256(_canonical_json(canon).encode()).hexdigest()


def _canonical_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _compile(doc: Any, path: str) -> _Compiled:
    d = _obj(doc, path)
    _keys(d, _TOP, path)
    modes = [k for k in ("signals", "score", "weights") if d.get(k) is not None]
    if len(modes) != 1:
        raise SpecError(path, "needs exactly one of \"signals\" (a single-asset strategy), \"score\" or "
                              f"\"weights\" (a portfolio strategy); got {', '.join(modes) or 'none'}")
    mode = modes[0]
    canon: dict[str, Any] = {
        "name": _text(d.get("name"), f"{path}.name", limits.MAX_STRATEGY_NAME_CHARS, DEFAULT_NAME) or DEFAULT_NAME,
        "description": _text(d.get("description"), f"{path}.description", limits.MAX_DESCRIPTION_CHARS, ""),
    }
    params = _params(d.get("params"), f"{path}.params")
    types = {n: p["type"] for n, p in params.items()}
    scope = Scope(types, series=True, portfolio=mode != "signals")
    exprs: dict[str, Node] = {}
    if mode == "signals":
        sig = _obj(d["signals"], f"{path}.signals")
        _keys(sig, SIGNAL_KEYS, f"{path}.signals")
        out: dict[str, str] = {}
        for key in SIGNAL_KEYS:
            src = sig.get(key)
            if src is None:
                if key in ("entry", "exit"):
                    raise SpecError(f"{path}.signals.{key}", "is required: a condition expression")
                continue
            exprs[key] = _check(parse(src, f"{path}.signals.{key}", scope), f"{path}.signals.{key}", BOOL)
            out[key] = src
        canon["signals"] = out
        for k in ("select", "weighting"):
            if d.get(k) is not None:
                raise SpecError(f"{path}.{k}", "is for portfolio strategies (score or weights) only")
    else:
        exprs[mode] = _check(parse(d[mode], f"{path}.{mode}", scope), f"{path}.{mode}", FLOAT)
        canon[mode] = d[mode]
        has_n = any(n in params for n in ("top_n", "n"))
        select = d.get("select") if d.get("select") is not None else ("top_n" if has_n else "all")
        if select not in SELECTIONS:
            raise SpecError(f"{path}.select", f"must be one of {', '.join(SELECTIONS)}, got {select!r}")
        weighting = d.get("weighting") if d.get("weighting") is not None else "equal"
        if weighting not in WEIGHTINGS:
            raise SpecError(f"{path}.weighting", f"must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        canon["select"], canon["weighting"] = select, weighting
    constraint = None
    if d.get("constraint") is not None:
        cscope = Scope(types, series=False)
        constraint = _check(parse(d["constraint"], f"{path}.constraint", cscope), f"{path}.constraint", BOOL)
    canon["constraint"] = d.get("constraint")
    for name in scope.windows:  # a window parameter's values must be windows
        p = params[name]
        where = f"{path}.params.{name}"
        if p["min"] is None:
            p["min"] = 1
        if p["max"] is None:
            p["max"] = limits.MAX_WINDOW
        if p["min"] < 1:
            raise SpecError(f"{where}.min", f"{name} is used as a window, so min must be at least 1")
        if p["max"] > limits.MAX_WINDOW:
            raise SpecError(f"{where}.max", f"{name} is used as a window, so max must be at most {limits.MAX_WINDOW}")
        if not p["min"] <= p["default"] <= p["max"]:
            raise SpecError(f"{where}.default", f"{name} is used as a window: must be from {p['min']} to {p['max']}")
    # parameter order (the grid's order, so the column numbering) follows the text, not the JSON
    # object's key order (which a JSONB column does not keep): first use in the expressions in
    # field order, then the unused ones by name
    order: dict[str, None] = {}
    for node in [*exprs.values(), *([constraint] if constraint is not None else [])]:
        order.update(dict.fromkeys(node.params()))
    order.update(dict.fromkeys(sorted(params)))
    canon["params"] = {name: params[name] for name in order}
    version = d.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or not 1 <= version <= MAX_VERSION):
        raise SpecError(f"{path}.version", f"must be a saved strategy's version (an integer >= 1), got {version!r}")
    return _Compiled(canon, exprs, constraint, version)


_CACHE: OrderedDict[str, _Compiled] = OrderedDict()
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()  # the server validates and the stages compile on several threads


def _compiled(doc: Any, path: str) -> _Compiled:
    try:
        key = _canonical_json(doc) if isinstance(doc, Mapping) else None
    except (TypeError, ValueError, RecursionError):  # not JSON (a Python caller's object): validate uncached
        key = None
    if key is not None:
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
                return hit
    c = _compile(doc, path)
    if key is not None and len(key) < 200_000:
        with _CACHE_LOCK:
            _CACHE[key] = c
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return c


def canonical(doc: Mapping[str, Any], path: str = "strategy") -> dict[str, Any]:
    """The validated document with defaults filled (SpecError naming the field otherwise).

    Its ``params`` are in the strategy's parameter order: first use in the expressions (signals
    entry, exit, short_entry, short_exit; score; weights; constraint), then unused ones by name."""
    c = _compiled(doc, path)
    out = copy.deepcopy(c.canon)
    if c.version is not None:  # a saved strategy's version travels with its document (outside the digest)
        out["version"] = c.version
    return out


def strategy_digest(doc: Mapping[str, Any], path: str = "strategy") -> str:
    """sha256 (hex) of the canonical document's JSON (sorted keys, no spaces)."""
    return _compiled(doc, path).digest


def source_info(doc: Mapping[str, Any], path: str = "strategy") -> dict[str, Any]:
    """What a run records as ``info.strategy_source`` for an expression strategy."""
    c = _compiled(doc, path)
    if c.version is not None:  # a saved strategy (POST /strategies), inlined with its version at submit
        return {"kind": "saved", "name": c.canon["name"], "version": c.version, "digest": c.digest,
                "text": canonical(doc, path)}
    return {"kind": "expression", "digest": c.digest, "text": canonical(doc, path)}


def expression_strategy(doc: Mapping[str, Any], path: str = "strategy") -> Strategy | PortfolioStrategy:
    """Compile a strategy document into a `Strategy` (``signals``) or a `PortfolioStrategy`
    (``score`` / ``weights``); SpecError naming the field path, the column and what was expected."""
    c = _compiled(doc, path)
    canon = c.canon
    params = tuple(
        StrategyParam(name, int if p["type"] == "int" else float, p["default"], p["min"], p["max"],
                      description=p["description"])
        for name, p in canon["params"].items())
    constraint = None
    if c.constraint is not None:
        node = c.constraint

        def constraint(grid: Mapping[str, Any]) -> Any:
            return evaluate(GridFrame(grid), node)

    name, description = canon["name"], canon["description"]
    if "signals" in canon:
        exprs = c.exprs
        shared = shared_keys(*exprs.values())

        def signals(ctx: SignalContext) -> Signals:
            frame = SignalFrame(ctx)
            ev = Evaluator(frame, shared)
            out = {k: evaluate(frame, node, ev) for k, node in exprs.items()}
            return Signals(out["entry"], out["exit"], out.get("short_entry"), out.get("short_exit"))

        strategy = Strategy(name=name, description=description, params=params, signals=signals,
                            constraint=constraint, constraint_text=canon["constraint"],
                            shorts="short_entry" in exprs or "short_exit" in exprs, tags=("expression",))
        strategy.bytes_per_cell = bytes_per_cell(*exprs.values())  # type: ignore[attr-defined]  # (Engine.sweep)
        return strategy
    mode = "score" if "score" in canon else "weights"
    node = c.exprs[mode]
    n_name = next((n for n in ("top_n", "n") if n in canon["params"]), None)

    def weights(ctx: PortfolioContext) -> Scores | TargetWeights:
        values = evaluate(PortfolioFrame(ctx), node)
        if mode == "weights":
            return TargetWeights(values)
        return Scores(values, n=ctx.param(n_name) if n_name else None)

    return PortfolioStrategy(name=name, description=description, params=params, weights=weights,
                             select=canon["select"], weighting=canon["weighting"], constraint=constraint,
                             constraint_text=canon["constraint"], tags=("expression",))
