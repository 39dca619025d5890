"""Expression text → typed IR, with Python's ``ast`` restricted to a whitelist of node types.

The text is checked before Python's parser sees it (type, length, ASCII only, parenthesis
depth), parsed with ``ast.parse(mode="eval")`` — which only builds a syntax tree: nothing is
compiled or evaluated — measured iteratively (node count, depth), and only then converted,
node by node, into `ir` nodes. Any node type not in the language is refused with its column.
Every problem is a `SpecError` on the expression's field path with a reason that names the
1-based column and what was expected.
"""

from __future__ import annotations

import ast
import math
import unicodedata
import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import SpecError
from . import limits
from .functions import DEFAULT_WINDOW, FUNCTIONS
from .ir import BOOL, CONST, FLOAT, PARAM, SERIES, Field, Node, Num, Op, Param, Type, join_level

FIELDS = ("open", "high", "low", "close", "volume")
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_NAMES = {
    ast.Pow: "the power operator **", ast.FloorDiv: "the operator //", ast.Mod: "the operator %",
    ast.BitAnd: "the operator &", ast.BitOr: "the operator |", ast.BitXor: "the operator ^",
    ast.LShift: "the operator <<", ast.RShift: "the operator >>", ast.MatMult: "the operator @",
    ast.Attribute: "attribute access (a.b)", ast.Subscript: "subscripts (a[b])", ast.Lambda: "lambda",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.IfExp: "conditional expressions (use where(c, a, b))",
    ast.NamedExpr: "assignment (:=)", ast.Starred: "starred arguments", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield", ast.JoinedStr: "strings", ast.FormattedValue: "strings",
    ast.List: "lists", ast.Tuple: "tuples", ast.Set: "sets", ast.Dict: "dicts", ast.Slice: "slices",
    ast.Invert: "the operator ~", ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
}
EXPECTED = "a number, a bar field (open, high, low, close, volume), a parameter or a function call"


class Scope:
    """What names an expression may use: the declared parameters (name → "int"/"float"),
    whether bar fields and functions over bars are allowed, and whether it is a portfolio
    expression (rank and zscore)."""

    def __init__(self, params: Mapping[str, str], series: bool = True, portfolio: bool = False) -> None:
        self.params = dict(params)
        self.series = series
        self.portfolio = portfolio
        self.windows: dict[str, int] = {}  # parameter used as a window → column of its first such use


def _fail(path: str, col: int, reason: str) -> SpecError:
    return SpecError(path, f"column {col}: {reason}")


def precheck(src: Any, path: str) -> str:
    """The checks before parsing: a non-empty ASCII string within the length limit, parentheses
    nested no deeper than the depth limit."""
    if not isinstance(src, str):
        raise SpecError(path, f"must be an expression string, got {type(src).__name__}")
    if len(src) > limits.MAX_SOURCE_CHARS:
        raise _fail(path, limits.MAX_SOURCE_CHARS + 1,
                    f"the expression is {len(src)} characters long; the limit is {limits.MAX_SOURCE_CHARS}")
    if not src.strip():
        raise _fail(path, 1, f"empty expression; expected {EXPECTED}")
    depth = 0
    for i, ch in enumerate(src):
        if ord(ch) > 126 or (ord(ch) < 32 and ch not in " \t"):
            name = unicodedata.name(ch, "a control character") if ord(ch) >= 32 else "a control character"
            raise _fail(path, i + 1, f"character U+{ord(ch):04X} ({name}) is not allowed; expressions "
                                     f"are written in printable ASCII (letters a-z, digits, operators)")
        if ch in "([{":
            depth += 1
            if depth > limits.MAX_DEPTH:
                raise _fail(path, i + 1, f"brackets nested deeper than {limits.MAX_DEPTH}")
        elif ch in ")]}":
            depth -= 1
    return src


def _measure(tree: ast.AST, path: str) -> None:
    """Node count and depth of the tree, without recursion."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        col = getattr(node, "col_offset", 0) + 1
        if count > limits.MAX_NODES:
            raise _fail(path, col, f"the expression has more than {limits.MAX_NODES} syntax nodes")
        if depth > limits.MAX_DEPTH:
            raise _fail(path, col, f"the expression is nested deeper than {limits.MAX_DEPTH}")
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1))


def parse(src: Any, path: str, scope: Scope) -> Node:
    """The IR of expression ``src`` (field path ``path`` for errors); SpecError otherwise."""
    src = precheck(src, path)
    try:
        with warnings.catch_warnings():  # (SyntaxWarnings about odd literals: the text is refused anyway)
            warnings.simplefilter("ignore")
            tree = ast.parse(src.strip(), mode="eval")
    except SyntaxError as exc:
        col = (exc.offset or 1) + (len(src) - len(src.lstrip()))
        raise _fail(path, col, f"syntax error ({exc.msg}); expected {EXPECTED}, combined with "
                               f"+ - * / < <= > >= == != and or not") from None
    except (ValueError, RecursionError, MemoryError, OverflowError):
        raise _fail(path, 1, "the expression cannot be parsed (too complex)") from None
    _measure(tree, path)
    offset = len(src) - len(src.lstrip())
    return _Builder(path, scope, offset).build(tree.body)


class _Builder:
    """ast → IR, one whitelisted node type at a time (depth already bounded by `_measure`)."""

    def __init__(self, path: str, scope: Scope, offset: int) -> None:
        self.path = path
        self.scope = scope
        self.offset = offset

    def col(self, node: ast.AST) -> int:
        return getattr(node, "col_offset", 0) + 1 + self.offset

    def fail(self, node: ast.AST, reason: str) -> SpecError:
        return _fail(self.path, self.col(node), reason)

    def build(self, node: ast.AST) -> Node:
        col = self.col(node)
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                x = self.expect_bool(node.operand, "not")
                return Op(Type(BOOL, x.type.level), col, "not", (x,))
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                x = self.expect_float(node.operand, "unary minus")
                if isinstance(node.op, ast.UAdd):
                    return x
                if isinstance(x, Num):
                    return Num(x.type, col, -x.value, x.is_int)
                return Op(x.type, col, "neg", (x,))
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            sym = _ARITH[type(node.op)]
            a = self.expect_float(node.left, f"operator {sym}")
            b = self.expect_float(node.right, f"operator {sym}")
            return Op(Type(FLOAT, join_level(a.type.level, b.type.level)), col, sym, (a, b))
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            args = tuple(self.expect_bool(v, word) for v in node.values)
            out = args[0]
            for nxt in args[1:]:
                out = Op(Type(BOOL, join_level(out.type.level, nxt.type.level)), col, word, (out, nxt))
            return out
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        what = _NAMES.get(type(node)) or (_NAMES.get(type(getattr(node, "op", None))) if hasattr(node, "op") else None)
        raise self.fail(node, f"{what or type(node).__name__} is not allowed in an expression; expected {EXPECTED}")

    def number(self, node: ast.Constant) -> Num:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            kind = "a string" if isinstance(v, (str, bytes)) else repr(v)
            raise self.fail(node, f"{kind} is not allowed in an expression; expected {EXPECTED}")
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise self.fail(node, "the number is not finite; expected a finite number")
        return Num(Type(FLOAT, CONST), self.col(node), f, isinstance(v, int))

    def name(self, node: ast.Name) -> Node:
        n = node.id
        if n in self.scope.params:
            return Param(Type(FLOAT, PARAM), self.col(node), n, self.scope.params[n])
        if n in FIELDS:
            if not self.scope.series:
                raise self.fail(node, f"bar field {n!r} is not allowed here; expected a parameter or a number")
            return Field(Type(FLOAT, SERIES), self.col(node), n)
        if n in FUNCTIONS:
            raise self.fail(node, f"{n!r} is a function; expected a call {n}(...)")
        known = ", ".join(sorted(self.scope.params)) or "none declared"
        raise self.fail(node, f"unknown name {n[:40]!r}; expected {EXPECTED} (parameters: {known})")

    def expect_float(self, node: ast.AST, what: str) -> Node:
        x = self.build(node)
        if x.type.kind != FLOAT:
            raise self.fail(node, f"{what} needs a number, got a {x.type}")
        return x

    def expect_bool(self, node: ast.AST, what: str) -> Node:
        x = self.build(node)
        if x.type.kind != BOOL:
            raise self.fail(node, f"{what} needs a condition (a comparison, cross_above, …), got a {x.type}")
        return x

    def compare(self, node: ast.Compare) -> Node:
        parts = [self.expect_float(node.left, "a comparison")]
        out: Node | None = None
        for op, right in zip(node.ops, node.comparators, strict=True):
            if type(op) not in _CMP:
                raise self.fail(right, f"{_NAMES.get(type(op), type(op).__name__)} is not allowed; "
                                       f"expected < <= > >= == !=")
            b = self.expect_float(right, "a comparison")
            a = parts[-1]
            cmp = Op(Type(BOOL, join_level(a.type.level, b.type.level)), self.col(node), _CMP[type(op)], (a, b))
            out = cmp if out is None else Op(Type(BOOL, join_level(out.type.level, cmp.type.level)),
                                             self.col(node), "and", (out, cmp))
            parts.append(b)
        assert out is not None
        return out

    def call(self, node: ast.Call) -> Node:
        col = self.col(node)
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, f"only the language's functions can be called; expected a name such as "
                                       f"sma(close, 20), got {_NAMES.get(type(node.func), type(node.func).__name__)}")
        fn = node.func.id
        sig = FUNCTIONS.get(fn)
        if sig is None:
            raise self.fail(node.func, f"unknown function {fn[:40]!r}; expected one of "
                                       f"{', '.join(sorted(FUNCTIONS))}")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.fail(a, f"starred arguments are not allowed; expected positional arguments: {sig.doc}")
        if node.keywords:
            raise self.fail(node.keywords[0].value, f"{fn}() takes no keyword arguments; expected "
                                                    f"positional arguments: {sig.doc}")
        if sig.portfolio_only and not self.scope.portfolio:
            raise self.fail(node.func, f"{fn}() ranks across symbols and is allowed only in a portfolio "
                                       f"strategy's score or weights")
        if (sig.time or any(k == "s" for k in sig.args)) and not self.scope.series:
            raise self.fail(node.func, f"{fn}() works on bars and is not allowed here; expected parameters "
                                       f"and numbers")
        n = len(node.args)
        lo, hi = len(sig.args) - sig.optional, len(sig.args)
        if not lo <= n <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise self.fail(node, f"{fn}() takes {want} argument{'s' if hi != 1 else ''}, got {n}; {sig.doc}")
        args: list[Node] = []
        for i, (kind, a) in enumerate(zip(sig.args, node.args, strict=False)):
            args.append(self.argument(fn, i, kind, a, sig.doc))
        for kind in sig.args[n:]:
            assert kind == "w"
            args.append(Num(Type(FLOAT, CONST), col, float(DEFAULT_WINDOW), True))
        if sig.time:
            level = SERIES
        elif fn in ("cross_above", "cross_below"):
            level = SERIES
        else:
            level = join_level(*(x.type.level for x in args))
        return Op(Type(sig.result, level), col, fn, tuple(args))

    def argument(self, fn: str, i: int, kind: str, node: ast.AST, doc: str) -> Node:
        nth = f"argument {i + 1} of {fn}()"
        if kind == "w":
            x = self.build(node)
            if isinstance(x, Num):
                if not x.is_int or not 1 <= x.value <= limits.MAX_WINDOW:
                    raise self.fail(node, f"{nth} is a window: expected an integer from 1 to {limits.MAX_WINDOW}, "
                                          f"got {x.value:g}")
                return x
            if isinstance(x, Param):
                if x.ptype != "int":
                    raise self.fail(node, f"{nth} is a window: parameter {x.name!r} must be declared "
                                          f"\"type\": \"int\"")
                self.scope.windows.setdefault(x.name, self.col(node))
                return x
            raise self.fail(node, f"{nth} is a window: expected an integer literal or an int parameter, got "
                                  f"a {x.type}; {doc}")
        if kind == "b":
            return self.expect_bool(node, nth)
        x = self.expect_float(node, nth)
        if kind == "s" and x.type.level != SERIES:
            raise self.fail(node, f"{nth} must be a series (a bar field or a function of one), got a "
                                  f"{x.type}; {doc}")
        if kind == "n" and x.type.level == SERIES:
            raise self.fail(node, f"{nth} must be a number or a parameter, got a series; {doc}")
        return x
