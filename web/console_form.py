"""The console's job form (docs/ui.md): strategy parameter schemas → form fields, a submitted form → a spec.

The fields come from the same schemas as GET /strategies (`core.strategy_catalog`). A parameter's
text is one value (``10``), a list (``5, 10, 20``) or a range ``start:stop:step`` (stop included,
as in the spec); empty takes the strategy's default. Symbols are separated by commas or spaces;
empty symbols or dates take the spec's defaults. What cannot be read is a `SpecError` naming the
spec field, like the JSON API's; everything else is checked by the same submit path as POST /backtest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..core.errors import SpecError

MAX_FIELD = 2000
_SPLIT = re.compile(r"[\s,;]+")


def param_fields(strategy: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The form fields of a strategy's parameters: name, type, default, bounds, choices, hint."""
    out = []
    for p in strategy.get("params") or []:
        kind = str(p.get("type") or "float")
        if p.get("choices"):
            hint = "one of " + ", ".join(str(c) for c in p["choices"]) + " (or several, comma separated)"
        elif kind == "bool":
            hint = "true or false (or both: true, false)"
        else:
            bounds = [f"≥ {p['min']}" if p.get("min") is not None else "", f"≤ {p['max']}" if p.get("max") is not None
                      else ""]
            hint = "a value, a list (5, 10, 20) or a range start:stop:step" + (
                f"; {' and '.join(b for b in bounds if b)}" if any(bounds) else "")
        out.append({"name": str(p.get("name")), "type": kind, "default": p.get("default"),
                    "description": p.get("description") or "", "hint": hint})
    return out


def _number(text: str, kind: str, path: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(path, f"{text[:40]!r} is not a number") from None
    if kind == "int":
        if not value.is_integer():
            raise SpecError(path, f"{text[:40]!r} is not an integer")
        return int(value)
    return value


def _scalar(text: str, kind: str, path: str) -> Any:
    if kind in ("int", "float"):
        return _number(text, kind, path)
    if kind == "bool":
        low = text.lower()
        if low not in ("true", "false"):
            raise SpecError(path, f"{text[:40]!r} is not true or false")
        return low == "true"
    return text


def parse_param(text: str, kind: str, path: str) -> Any:
    """One parameter's text as the spec's scalar, list or ``{"start", "stop", "step"}``; None when empty."""
    text = text.strip()
    if not text:
        return None
    if ":" in text and kind in ("int", "float"):
        parts = [t.strip() for t in text.split(":")]
        if len(parts) != 3 or not all(parts):
            raise SpecError(path, f"a range is start:stop:step, got {text[:40]!r}")
        start, stop, step = (_number(t, kind, path) for t in parts)
        return {"start": start, "stop": stop, "step": step}
    items = [t for t in re.split(r"\s*,\s*", text) if t]
    values = [_scalar(t, kind, path) for t in items]
    return values[0] if len(values) == 1 else values


def spec_from_form(form: Mapping[str, str], strategy: Mapping[str, Any]) -> dict[str, Any]:
    """The spec a submitted form stands for (`SpecError` naming the field for text it cannot read)."""
    for key, value in form.items():
        if len(str(value)) > MAX_FIELD:
            raise SpecError(str(key)[:60], f"longer than {MAX_FIELD} characters")
    spec: dict[str, Any] = {"strategy": strategy["name"]}
    params = {}
    for f in param_fields(strategy):
        value = parse_param(str(form.get(f"param.{f['name']}", "")), f["type"], f"params.{f['name']}")
        if value is not None:
            params[f["name"]] = value
    if params:
        spec["params"] = params
    symbols = [s for s in _SPLIT.split(str(form.get("symbols", "")).strip()) if s]
    if symbols:
        spec["symbols"] = symbols
    for field in ("start", "end"):
        value = str(form.get(field, "")).strip()
        if value:
            spec[field] = value
    fees = str(form.get("fees", "")).strip()
    if fees:
        spec["costs"] = {"fees": _number(fees, "float", "costs.fees")}
    rank_by = str(form.get("rank_by", "")).strip()
    if rank_by:
        spec["output"] = {"rank_by": rank_by}
    return spec
