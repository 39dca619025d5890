"""IR → functions over ``xp`` arrays, sharing indicators across a grid like the built-ins.

An expression is evaluated for one block of columns in *column mode*: each value carries a tag —
``"c"`` a scalar, ``"p"`` one value per combination, ``"s"`` one (T, S) series per symbol (no
parameter in it), ``"x"`` a full block (signals: ``(T, C)``; portfolio: ``(R, S, K)``).
Elementwise operators combine tags (a per-symbol series meets a parameter only when it must,
the way the built-ins broadcast). A function that looks back over bars (`functions.Signature.time`)
is evaluated in *symbol mode*: with its parameters bound to Python scalars it is a plain ``(T, S)``
computation, run through the context's ``per_combo`` once per distinct value tuple of the
parameters it depends on — its cache key is the node's canonical text with those parameters
replaced by positions (`ir.Node.key`), so ``sma(close, fast)`` and ``sma(close, slow)`` share
the SMA of window 20, and nested indicators share their inner ones. Within one evaluation each
distinct sub-expression is computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import indicators as ind
from ..strategy import crossings
from .functions import FUNCTIONS
from .ir import BOOL, Field, Node, Num, Op, Param, Type

Array = Any

_ARITH: dict[str, Callable[[Any, Any, Any], Any]] = {
    "+": lambda xp, a, b: xp.add(a, b), "-": lambda xp, a, b: xp.subtract(a, b),
    "*": lambda xp, a, b: xp.multiply(a, b), "/": lambda xp, a, b: xp.true_divide(a, b),
    "<": lambda xp, a, b: xp.less(a, b), "<=": lambda xp, a, b: xp.less_equal(a, b),
    ">": lambda xp, a, b: xp.greater(a, b), ">=": lambda xp, a, b: xp.greater_equal(a, b),
    "==": lambda xp, a, b: xp.equal(a, b), "!=": lambda xp, a, b: xp.not_equal(a, b),
    "and": lambda xp, a, b: xp.logical_and(a, b), "or": lambda xp, a, b: xp.logical_or(a, b),
    "min": lambda xp, a, b: xp.minimum(a, b), "max": lambda xp, a, b: xp.maximum(a, b),
}
_UNARY: dict[str, Callable[[Any, Any], Any]] = {
    "neg": lambda xp, a: xp.negative(a), "not": lambda xp, a: xp.logical_not(a),
    "abs": lambda xp, a: xp.abs(a), "log": lambda xp, a: xp.log(a), "sqrt": lambda xp, a: xp.sqrt(a),
}


def _as_array(xp: Any, v: Any) -> Any:
    return v if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0 else None


def _sym_cross(xp: Any, a: Any, b: Any, shape: tuple[int, ...], below: bool) -> Array:
    if _as_array(xp, a) is None and _as_array(xp, b) is None:
        return xp.zeros(shape, dtype=bool)
    a = a if _as_array(xp, a) is not None else xp.full(shape, a, dtype=xp.float64)
    up, down = crossings(xp, a, b)
    return down if below else up


def rank(xp: Any, x: Array) -> Array:
    """Rank along axis 1 (symbols) among finite values: 1 = lowest, ties get their average rank,
    NaN where ``x`` is not finite."""
    x = xp.asarray(x, dtype=xp.float64)
    valid = xp.isfinite(x)
    filled = xp.where(valid, x, xp.inf)
    order = xp.argsort(filled, axis=1, kind="stable")
    srt = xp.take_along_axis(filled, order, axis=1)
    n = x.shape[1]
    idx = xp.arange(n, dtype=xp.float64).reshape((1, n) + (1,) * (x.ndim - 2))
    idx = xp.broadcast_to(idx, srt.shape)
    new_run = xp.ones(srt.shape, dtype=bool)
    new_run[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = _accumulate_max(xp, xp.where(new_run, idx, -1.0))
    end_run = xp.ones(srt.shape, dtype=bool)
    end_run[:, :-1] = new_run[:, 1:]
    last = -_accumulate_max(xp, xp.where(end_run, -idx, -float(n))[:, ::-1])[:, ::-1]
    avg_sorted = (first + last) / 2.0 + 1.0
    inverse = xp.argsort(order, axis=1)
    out = xp.take_along_axis(avg_sorted, inverse, axis=1)
    return xp.where(valid, out, xp.nan)


def _accumulate_max(xp: Any, a: Array) -> Array:
    """Running maximum along axis 1."""
    return xp.moveaxis(ind._prefix_max(xp, xp.moveaxis(a, 1, 0)), 0, 1)


def zscore(xp: Any, x: Array) -> Array:
    """``(x − mean) / σ`` along axis 1 (symbols) over the finite values (σ population); NaN where
    ``x`` is not finite or σ is 0."""
    x = xp.asarray(x, dtype=xp.float64)
    valid = xp.isfinite(x)
    n = valid.sum(axis=1, keepdims=True)
    mean = xp.where(valid, x, 0.0).sum(axis=1, keepdims=True) / n
    dev = xp.where(valid, x - mean, 0.0)
    sd = xp.sqrt((dev * dev).sum(axis=1, keepdims=True) / n)
    ok = valid & (sd > 0)
    return xp.where(ok, (x - mean) / xp.where(ok, sd, 1.0), xp.nan)


class Evaluator:
    """Evaluates IR nodes against one context (signals, portfolio or a constraint's grid).

    ``frame`` supplies the context-specific parts: ``xp``, ``bars`` ((T, S) fields),
    ``param(name)``, ``lift(sym)`` (a (T, S) series to the block's shape), ``gather(key, fn,
    names)`` (per_combo), ``cache(key, fn)`` (symbol-mode cache), ``cross_in_time`` (whether
    crossings are computed per symbol before sampling: portfolio mode)."""

    def __init__(self, frame: Any, shared: frozenset[str] | None = None) -> None:
        self.frame = frame
        self.xp = frame.xp
        self.memo: dict[str, tuple[str, Any]] = {}
        self.shared = shared  # the sub-expressions worth keeping (used more than once); None: all

    # -- column mode --------------------------------------------------------------------------
    def column(self, node: Node) -> tuple[str, Any]:
        key = node.key(())
        hit = self.memo.get(key)
        if hit is None:
            hit = self._column(node)
            if self.shared is None or key in self.shared:
                self.memo[key] = hit
        return hit

    def _column(self, node: Node) -> tuple[str, Any]:
        xp, fr = self.xp, self.frame
        if isinstance(node, Num):
            return "c", np.float64(node.value)
        if isinstance(node, Param):
            return "p", fr.param(node.name)
        if isinstance(node, Field):
            return "s", fr.bars[node.name]
        assert isinstance(node, Op)
        sig = FUNCTIONS.get(node.op)
        if (sig is not None and sig.time) or (node.op.startswith("cross_") and fr.cross_in_time):
            names = node.params()
            if not names:
                return "s", self.symbol(node, {})
            out = fr.gather(node.key(names), lambda *vals: self.symbol(node, dict(zip(names, vals, strict=True))),
                            names)
            return "x", (out != 0) if node.type.kind == BOOL and out.dtype != bool else out
        if node.op in ("cross_above", "cross_below"):
            a, b = self.column(node.args[0]), self.column(node.args[1])
            if a[0] in "cs" and b[0] in "cs":
                return "s", _sym_cross(xp, a[1], b[1], fr.sym_shape, node.op == "cross_below")
            ck = "cross:" + node.args[0].key(()) + "|" + node.args[1].key(())
            pair = self.memo.get(ck)
            if pair is None:
                pair = ("pair", crossings(xp, self.full(a), self.full(b)))
                self.memo[ck] = pair
                self.memo["cross:" + node.args[1].key(()) + "|" + node.args[0].key(())] = \
                    ("pair", pair[1][::-1])
            return "x", pair[1][1 if node.op == "cross_below" else 0]
        if node.op in ("rank", "zscore"):
            tag, v = self.column(node.args[0])
            fn = rank if node.op == "rank" else zscore
            return tag, fn(xp, v)
        vals = [self.column(a) for a in node.args]
        tags = {t for t, _ in vals}
        if tags <= {"c", "s"}:
            tag = "s" if "s" in tags else "c"
            arrays = [v for _, v in vals]
        elif tags <= {"c", "p"}:
            tag = "p"
            arrays = [v for _, v in vals]
        else:
            tag = "x"
            arrays = [fr.lift(v) if t == "s" else v for t, v in vals]
        return tag, self.apply(node.op, arrays)

    def apply(self, op: str, arrays: list[Any]) -> Any:
        xp = self.xp
        if op == "where":
            return xp.where(*arrays)
        if op in _UNARY:
            return _UNARY[op](xp, arrays[0])
        return _ARITH[op](xp, arrays[0], arrays[1])

    def full(self, value: tuple[str, Any]) -> Array:
        """A column-mode value as a full block array (a broadcast view where it repeats)."""
        tag, v = value
        if tag == "s":
            v = self.frame.lift(v)
        if hasattr(v, "shape") and tuple(v.shape) == self.frame.shape:
            return v
        return self.xp.broadcast_to(self.xp.asarray(v), self.frame.shape)

    # -- symbol mode --------------------------------------------------------------------------
    def symbol(self, node: Node, binding: Mapping[str, Any]) -> Any:
        """``node`` with its parameters bound to scalars: a (T, S) array or a scalar."""
        xp, fr = self.xp, self.frame
        if isinstance(node, Num):
            return np.float64(node.value)
        if isinstance(node, Param):
            return np.float64(binding[node.name])
        if isinstance(node, Field):
            return fr.bars[node.name]
        assert isinstance(node, Op)
        sig = FUNCTIONS.get(node.op)
        if sig is not None and sig.time:
            names = node.params()
            values = tuple(binding[n] for n in names)
            return fr.cache((node.key(names), values), lambda: self.call(node, binding))
        if node.op in ("cross_above", "cross_below"):
            a, b = self.symbol(node.args[0], binding), self.symbol(node.args[1], binding)
            return _sym_cross(xp, a, b, fr.sym_shape, node.op == "cross_below")
        if node.op in ("rank", "zscore"):
            return (rank if node.op == "rank" else zscore)(xp, self.symbol(node.args[0], binding))
        return self.apply(node.op, [self.symbol(a, binding) for a in node.args])

    def call(self, node: Op, binding: Mapping[str, Any]) -> Array:
        """A time function's (T, S) value."""
        xp, fr = self.xp, self.frame
        sig = FUNCTIONS[node.op]
        args: list[Any] = []
        for kind, a in zip(sig.args, node.args, strict=True):
            if kind == "w":
                args.append(int(a.value) if isinstance(a, Num) else int(binding[a.name]))  # type: ignore[attr-defined]
            elif kind == "n":
                args.append(float(self.symbol(a, binding)))
            else:
                args.append(self.symbol(a, binding))
        op = node.op

        def sub(name: str, *children: Node) -> Array:
            return self.symbol(Op(Type("float", "series"), node.col, name, children), binding)

        if op == "sma" or op == "bb_mid":
            return ind.sma(xp, args[0], args[1]) if op == "sma" else sub("sma", *node.args)
        if op == "ema":
            return ind.ema(xp, args[0], args[1])
        if op == "rsi":
            return ind.rsi(xp, args[0], args[1])
        if op == "atr":
            return ind.atr(xp, fr.bars["high"], fr.bars["low"], fr.bars["close"], args[0])
        if op == "stdev":
            return ind.rolling_std(xp, args[0], args[1])
        if op in ("bb_upper", "bb_lower"):
            mid = sub("sma", node.args[0], node.args[1])
            sd = sub("stdev", node.args[0], node.args[1])
            return mid + args[2] * sd if op == "bb_upper" else mid - args[2] * sd
        if op == "macd_line":
            return sub("ema", node.args[0], node.args[1]) - sub("ema", node.args[0], node.args[2])
        if op == "macd_signal":
            return ind.ema(xp, sub("macd_line", *node.args[:3]), args[3])
        if op == "macd_hist":
            return sub("macd_line", *node.args[:3]) - sub("macd_signal", *node.args)
        if op == "highest":
            return ind.rolling_max(xp, args[0], args[1])
        if op == "lowest":
            return ind.rolling_min(xp, args[0], args[1])
        if op == "shift":
            return ind.shift(xp, args[0], args[1])
        if op == "diff":
            x = ind._clean(xp, args[0])
            return x - ind.shift(xp, x, args[1])
        if op == "pct_change":
            return ind.roc(xp, args[0], args[1])
        raise AssertionError(op)  # pragma: no cover - the parser admits only FUNCTIONS


class SignalFrame:
    """Column mode over a `SignalContext`: blocks are (T, C), C = S × K symbol-major."""

    cross_in_time = False

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.xp = ctx.xp
        self.bars = {"open": ctx.open, "high": ctx.high, "low": ctx.low, "close": ctx.close,
                     "volume": ctx.volume if ctx.volume is not None else ctx.xp.full_like(ctx.close, np.nan)}
        self.shape = (ctx.n_bars, ctx.n_columns)
        self.sym_shape = (ctx.n_bars, ctx.n_symbols)

    def param(self, name: str) -> Array:
        return self.ctx.column_values(name, np.float64)

    def lift(self, a: Array) -> Array:
        return self.ctx.per_symbol(a)

    def gather(self, key: str, fn: Callable[..., Array], names: tuple[str, ...]) -> Array:
        return self.ctx.per_combo(key, fn, *names)

    def cache(self, key: Any, fn: Callable[[], Array]) -> Array:
        return self.ctx.cached(key, fn)


class PortfolioFrame:
    """Column mode over a `PortfolioContext`: blocks are (R, S, K) at the rebalance rows."""

    cross_in_time = True

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.xp = ctx.xp
        self.bars = {"open": ctx.open, "high": ctx.high, "low": ctx.low, "close": ctx.close,
                     "volume": ctx.volume if ctx.volume is not None else ctx.xp.full_like(ctx.close, np.nan)}
        self.shape = (ctx.n_rows, ctx.n_symbols, ctx.n_combos)
        self.sym_shape = (ctx.n_bars, ctx.n_symbols)

    def param(self, name: str) -> Array:
        return self.xp.asarray(self.ctx.param(name, np.float64)).reshape(1, 1, -1)

    def lift(self, a: Array) -> Array:
        return self.ctx.at_rows(a)[:, :, None]

    def gather(self, key: str, fn: Callable[..., Array], names: tuple[str, ...]) -> Array:
        return self.ctx.per_combo(key, fn, *names)

    def cache(self, key: Any, fn: Callable[[], Array]) -> Array:
        full = ("expr:full", key)
        store = self.ctx._cache
        if full not in store:
            store[full] = fn()
            self.ctx.indicator_calls += 1
        return store[full]


class GridFrame:
    """A constraint over a grid: parameters are (K,) host arrays, no bars."""

    cross_in_time = False

    def __init__(self, grid: Mapping[str, np.ndarray]) -> None:
        self.xp = np
        self.grid = grid
        self.bars: dict[str, Any] = {}
        k = len(next(iter(grid.values()))) if grid else 1
        self.shape = (k,)
        self.sym_shape = (k,)

    def param(self, name: str) -> np.ndarray:
        return np.asarray(self.grid[name], dtype=np.float64)

    def lift(self, a: Array) -> Array:  # pragma: no cover - constraints have no series
        raise AssertionError("a constraint has no series")

    def gather(self, key: str, fn: Callable[..., Array], names: tuple[str, ...]) -> Array:  # pragma: no cover
        raise AssertionError("a constraint has no series")

    def cache(self, key: Any, fn: Callable[[], Array]) -> Array:  # pragma: no cover
        raise AssertionError("a constraint has no series")


def shared_keys(*nodes: Node) -> frozenset[str]:
    """Canonical texts of the sub-expressions that occur more than once in ``nodes`` (the ones an
    `Evaluator` keeps for reuse; the rest are dropped as soon as they are used)."""
    seen: dict[str, int] = {}
    stack = list(nodes)
    while stack:
        n = stack.pop()
        k = n.key(())
        seen[k] = seen.get(k, 0) + 1
        stack.extend(n.children())
    return frozenset(k for k, c in seen.items() if c > 1)


def bytes_per_cell(*nodes: Node, base: int = 40) -> int:
    """Bytes per (bar, column) a signals evaluation may hold: ``base`` (the engine's estimate for a
    built-in: four boolean signals, two gathered float64 indicators, temporaries) plus 8 per
    further distinct float block and 1 per further boolean one (a sub-expression over bars that
    depends on a parameter is a full (T, C) block)."""
    floats: set[str] = set()
    bools: set[str] = set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        stack.extend(n.children())
        if n.type.level == "series" and n.params():
            (bools if n.type.kind == BOOL else floats).add(n.key(()))
    return base + 8 * max(0, len(floats) - 2) + max(0, len(bools) - 4)


def evaluate(frame: Any, node: Node, evaluator: Evaluator | None = None) -> Array:
    """``node``'s value as a full block array of ``frame`` (bool or float64)."""
    ev = evaluator or Evaluator(frame)
    xp = frame.xp
    with np.errstate(all="ignore"):
        tag, v = ev.column(node)
        out = ev.full((tag, v))
        if tag != "x" or not getattr(out.flags, "writeable", True):  # a broadcast view: own the memory
            out = xp.ascontiguousarray(out)
    if node.type.kind == BOOL:
        return out if out.dtype == bool else out.astype(bool)
    return out.astype(xp.float64) if out.dtype != xp.float64 else out
