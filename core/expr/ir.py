"""The typed intermediate form of an expression.

Every node has a `Type`: its ``kind`` (``"float"`` or ``"bool"``) and its ``level``:
``"const"`` (a number known when the expression is parsed), ``"param"`` (one value per
parameter combination) or ``"series"`` (one value per bar and symbol, and per combination
when it depends on a parameter). ``col`` is the 1-based column of the node in its expression.
`Node.key` is a canonical text of the node with each parameter replaced by its position in
``names`` — two calls that compute the same thing for the same parameter values have the same
key, which is how indicators are shared across a grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FLOAT = "float"
BOOL = "bool"
CONST = "const"
PARAM = "param"
SERIES = "series"
_LEVELS = {CONST: 0, PARAM: 1, SERIES: 2}


@dataclass(frozen=True)
class Type:
    """The kind (float or bool) and level (const, param, series) of a node's value."""

    kind: str
    level: str

    def __str__(self) -> str:
        noun = {CONST: "number", PARAM: "parameter value", SERIES: "series"}[self.level]
        return f"{'boolean ' if self.kind == BOOL else ''}{noun}"


def join_level(*levels: str) -> str:
    """The level of a value computed elementwise from values of these levels."""
    return max(levels, key=_LEVELS.__getitem__) if levels else CONST


@dataclass(frozen=True)
class Node:
    """Base of the IR nodes."""

    type: Type
    col: int

    def children(self) -> tuple[Node, ...]:
        return ()

    def params(self) -> tuple[str, ...]:
        """Names of the parameters this node depends on, in order of first appearance."""
        seen: dict[str, None] = {}
        stack: list[Node] = [self]
        order: list[str] = []
        while stack:
            n = stack.pop()
            if isinstance(n, Param) and n.name not in seen:
                seen[n.name] = None
                order.append(n.name)
            stack.extend(reversed(n.children()))
        return tuple(order)

    def key(self, names: tuple[str, ...]) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class Num(Node):
    """A finite number literal."""

    value: float = 0.0
    is_int: bool = False

    def key(self, names: tuple[str, ...]) -> str:
        return repr(int(self.value)) if self.is_int else repr(float(self.value))


@dataclass(frozen=True)
class Param(Node):
    """A declared parameter (``ptype`` ``"int"`` or ``"float"``)."""

    name: str = ""
    ptype: str = "float"

    def key(self, names: tuple[str, ...]) -> str:
        return f"${names.index(self.name)}" if self.name in names else self.name


@dataclass(frozen=True)
class Field(Node):
    """A bar field: open, high, low, close, volume."""

    name: str = "close"

    def key(self, names: tuple[str, ...]) -> str:
        return self.name


@dataclass(frozen=True)
class Op(Node):
    """An operator or function applied to ``args``: arithmetic (``+ - * /``, ``neg``),
    comparisons (``< <= > >= == !=``), logic (``and or not``) or a call ``fn``."""

    op: str = ""
    args: tuple[Node, ...] = field(default_factory=tuple)

    def children(self) -> tuple[Node, ...]:
        return self.args

    def key(self, names: tuple[str, ...]) -> str:
        return f"{self.op}({','.join(a.key(names) for a in self.args)})"
