"""Spec field rules: each checks one JSON value and describes it as an OpenAPI 3.0 schema.

The spec dataclasses (core/spec.py) declare every field as ``field(default=…, metadata=meta(rule, doc))``.
Their ``from_dict`` checks values with those rules (`take`) and their ``json_schema`` builds
the request schema from the same declarations (`object_schema`), so the validator and the
OpenAPI document (web/openapi.py) describe one set of fields, choices, defaults and bounds.

A rule's ``check(value, where)`` returns the value to store or raises `SpecError` naming
``where``; its ``schema()`` is the JSON Schema of the values it accepts (without the field's
default and description, which `object_schema` adds).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SpecError

__all__ = [
    "Choice",
    "Described",
    "Flag",
    "Integer",
    "Many",
    "Nested",
    "Number",
    "Rule",
    "Text",
    "field_names",
    "meta",
    "object_schema",
    "rule_of",
    "take",
]


class Rule:
    """Base of the field rules."""

    def check(self, value: Any, where: str) -> Any:
        """The value to store, or SpecError(where, reason)."""
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        """The JSON Schema (OpenAPI 3.0 dialect) of the accepted values."""
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Rule):
    """A finite number (bool excluded) within optional bounds; ``*_open``: the bound itself is excluded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    nullable: bool = False

    def check(self, value: Any, where: str) -> float | None:
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(where, f"must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise SpecError(where, "must be finite")
        lo, hi = self.lo, self.hi
        if lo is not None and (v < lo or (self.lo_open and v == lo)):
            raise SpecError(where, f"must be {'>' if self.lo_open else '>='} {lo:g}, got {v:g}")
        if hi is not None and (v > hi or (self.hi_open and v == hi)):
            raise SpecError(where, f"must be {'<' if self.hi_open else '<='} {hi:g}, got {v:g}")
        return v

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.lo is not None:
            out["minimum"] = self.lo
            if self.lo_open:
                out["exclusiveMinimum"] = True
        if self.hi is not None:
            out["maximum"] = self.hi
            if self.hi_open:
                out["exclusiveMaximum"] = True
        if self.nullable:
            out["nullable"] = True
        return out


@dataclass(frozen=True)
class Integer(Rule):
    """An integer (bool excluded) from ``lo`` to ``hi`` inclusive."""

    lo: int
    hi: int

    def check(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise SpecError(where, f"must be an integer from {self.lo} to {self.hi}, got {value!r}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True)
class Choice(Rule):
    """One of ``choices`` (a tuple, or a function giving it, for lists defined elsewhere).

    The reason reads "must be one of a, b, got 'x'", or with ``noun`` "unknown <noun> 'x'; one of a, b".
    """

    choices: tuple[str, ...] | Callable[[], Sequence[str]]
    noun: str | None = None

    def options(self) -> tuple[str, ...]:
        """The accepted values, in order."""
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def check(self, value: Any, where: str) -> Any:
        options = self.options()
        if value not in options:
            if self.noun:
                raise SpecError(where, f"unknown {self.noun} {value!r}; one of {', '.join(options)}")
            raise SpecError(where, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.options())}


@dataclass(frozen=True)
class Flag(Rule):
    """true or false."""

    def check(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise SpecError(where, f"must be true or false, got {value!r}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Text(Rule):
    """A string: ``nonempty``, starting with one of ``prefixes`` when given; None when ``nullable``.

    ``reason`` is the SpecError reason; ``{value!r}`` in it is replaced by the value given.
    """

    reason: str
    nullable: bool = False
    nonempty: bool = False
    prefixes: tuple[str, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # more schema keywords (format, …)

    def check(self, value: Any, where: str) -> str | None:
        if value is None and self.nullable:
            return None
        if (not isinstance(value, str) or (self.nonempty and not value)
                or (self.prefixes and not value.startswith(self.prefixes))):
            raise SpecError(where, self.reason.format(value=value))
        return value

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", **self.extra}
        if self.nonempty:
            out["minLength"] = 1
        if self.prefixes:
            out["pattern"] = "^(" + "|".join(p.replace(".", "\\.") for p in self.prefixes) + ")"
        if self.nullable:
            out["nullable"] = True
        return out


@dataclass(frozen=True)
class Many(Rule):
    """A non-empty list of ``item`` values (a `Choice` with a noun), or None; returns the list as given."""

    item: Choice

    def check(self, value: Any, where: str) -> list[Any] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise SpecError(where, f"must be a non-empty list of {self.item.noun} names")
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "items": self.item.schema(), "nullable": True}


@dataclass(frozen=True)
class Nested(Rule):
    """An object validated by ``cls.from_dict(value, where)``; null and omitted mean all defaults."""

    cls: Any

    def check(self, value: Any, where: str) -> Any:
        return self.cls.from_dict(value, where)

    def schema(self) -> dict[str, Any]:
        return {**self.cls.json_schema(), "nullable": True}


@dataclass(frozen=True)
class Described(Rule):
    """A field whose owner's ``from_dict`` checks it in code; this rule only carries its schema."""

    json: dict[str, Any]

    def check(self, value: Any, where: str) -> Any:
        raise NotImplementedError("checked by the owner's from_dict")

    def schema(self) -> dict[str, Any]:
        return dict(self.json)


def meta(rule: Rule, doc: str = "") -> dict[str, Any]:
    """The ``metadata`` of a spec field: its rule and description (``field(default=…, metadata=meta(…))``)."""
    return {"rule": rule, "doc": doc}


def _field(cls: Any, name: str) -> dataclasses.Field[Any]:
    return cls.__dataclass_fields__[name]


def rule_of(cls: Any, name: str) -> Any:
    """The rule declared for field ``name`` of the spec dataclass ``cls``."""
    return _field(cls, name).metadata["rule"]


def field_names(cls: Any) -> set[str]:
    """The JSON keys ``cls`` accepts: its dataclass fields."""
    return {f.name for f in dataclasses.fields(cls)}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def take(cls: Any, doc: dict[str, Any], name: str, path: str, rule: Rule | None = None) -> Any:
    """Check ``doc[name]`` (its default when absent) with the field's rule (or ``rule``); where: ``path.name``."""
    f = _field(cls, name)
    return (rule or f.metadata["rule"]).check(doc.get(name, _default(f)), f"{path}.{name}" if path else name)


def object_schema(cls: Any) -> dict[str, Any]:
    """The JSON Schema of a spec dataclass: every field with its rule's schema, default and description;
    no other keys (``additionalProperties: false``); fields without a default are required."""
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        prop = f.metadata["rule"].schema()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        else:
            default = _default(f)
            if default is None or isinstance(default, (bool, int, float, str, dict, list, tuple)):
                prop["default"] = list(default) if isinstance(default, tuple) else default
        if f.metadata["doc"]:
            prop["description"] = f.metadata["doc"]
        properties[f.name] = prop
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    if required:
        out["required"] = required
    return out
