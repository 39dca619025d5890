"""The strategy plugin contract: `Param`, `Strategy`, `Signals` and the `SignalContext`.

A strategy declares its parameters and writes one ``signals(ctx)`` function against the
array namespace ``ctx.xp`` (numpy on the CPU, CuPy on a GPU), so a single implementation
serves both backends. ``signals`` sees a *block*: ``S`` symbols × ``K`` parameter
combinations, laid out as ``C = S × K`` columns, symbol-major (column ``s × K + k`` is symbol
``s`` with combination ``k``). It returns boolean ``(T, C)`` arrays.

Indicators are shared across combinations through `SignalContext.per_combo`, which calls the
indicator once per *unique* parameter value (a 10 × 10 SMA grid computes 20 moving averages,
not 200) and gathers the results into columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Array = Any  # numpy.ndarray or cupy.ndarray


@dataclass(frozen=True)
class Param:
    """One strategy parameter: its type, default and allowed values."""

    name: str
    type: type = float
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    description: str = ""

    def schema(self) -> dict[str, Any]:
        """JSON-able description (for ``GET /strategies`` and ``gpu-backtest strategies``)."""
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "min": self.min,
            "max": self.max,
            "choices": list(self.choices) if self.choices is not None else None,
            "description": self.description,
        }

    def check(self, value: Any) -> Any:
        """Coerce ``value`` to this parameter's type; raise ValueError with the reason."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, got {value!r}")
            out: Any = value
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"must be an integer, got {value!r}")
            if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
                raise ValueError(f"must be an integer, got {value!r}")
            out = int(value)
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"must be a number, got {value!r}")
            try:
                out = float(value)
            except OverflowError:
                raise ValueError(f"is too large, got {value!r}") from None
            if not np.isfinite(out):
                raise ValueError(f"must be finite, got {value!r}")
        elif self.type is str:
            if not isinstance(value, str):
                raise ValueError(f"must be a string, got {value!r}")
            out = value
        else:  # pragma: no cover - declared by plugin authors
            out = value
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"must be one of {list(self.choices)}, got {value!r}")
        if self.min is not None and out < self.min:
            raise ValueError(f"must be >= {self.min}, got {value!r}")
        if self.max is not None and out > self.max:
            raise ValueError(f"must be <= {self.max}, got {value!r}")
        return out


@dataclass
class Signals:
    """Boolean (T, C) arrays. Short arrays may be None for long-only strategies."""

    entries: Array
    exits: Array
    short_entries: Array | None = None
    short_exits: Array | None = None


class SignalContext:
    """What a strategy's ``signals`` sees for one block of columns.

    Attributes: ``xp`` (array module), ``open``/``high``/``low``/``close``/``volume`` as
    (T, S) arrays, ``params`` (name → host numpy array of length K), ``n_bars``,
    ``n_symbols``, ``n_combos``, ``n_columns``.
    """

    def __init__(
        self,
        xp: Any,
        bars: Mapping[str, Array],
        params: Mapping[str, np.ndarray],
        cache: dict[Any, Array] | None = None,
        order: str = "C",
    ) -> None:
        self.xp = xp
        self.order = order  # memory layout of (T, C) arrays from per_combo: "F" on the CPU
        self.open = bars["open"]
        self.high = bars["high"]
        self.low = bars["low"]
        self.close = bars["close"]
        self.volume = bars.get("volume")
        self.params = {k: np.asarray(v) for k, v in params.items()}
        self.n_bars, self.n_symbols = self.close.shape
        sizes = {len(v) for v in self.params.values()}
        self.n_combos = sizes.pop() if sizes else 1
        self.n_columns = self.n_symbols * self.n_combos
        self._cache: dict[Any, Array] = {} if cache is None else cache
        self.indicator_calls = 0  # how many distinct indicator arrays were computed

    def cached(self, key: Any, fn: Callable[[], Array]) -> Array:
        """Compute ``fn()`` once per ``key`` within this block.

        `per_combo` stores its indicators under ``(key, values)`` — e.g. ``("ema", (20,))`` —
        so a strategy may share them by calling ``cached(("ema", (20,)), ...)`` directly."""
        if key not in self._cache:
            self._cache[key] = fn()
            self.indicator_calls += 1
        return self._cache[key]

    def per_combo(self, key: str, fn: Callable[..., Array], *names: str) -> Array:
        """Evaluate ``fn(*values) -> (T, S)`` once per unique value tuple of the params ``names``
        (values passed as Python scalars) and gather the results into a (T, C) array.

        ``key`` names the indicator so that different parameters sharing a value share the
        computation: ``per_combo("sma", f, "fast")`` and ``per_combo("sma", f, "slow")`` compute
        the SMA of window 20 once even when both grids contain 20.
        """
        xp = self.xp
        cols = np.stack([self.params[n] for n in names], axis=1) if names else np.zeros((self.n_combos, 0))
        uniq, inverse = np.unique(cols, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        arrays = []
        for row in uniq:
            values = tuple(_scalar(v) for v in row)
            arrays.append(self.cached((key, values), lambda values=values: fn(*values)))
        if len(arrays) == 1:
            one = arrays[0]
            return xp.repeat(one, self.n_combos, axis=1)
        if self.order == "F":
            # (S, U, T) stack, then (S, K, T) gather = a column-major (T, C) result: each
            # column's bars contiguous, as the CPU kernel reads them
            stack = xp.stack([a.T for a in arrays], axis=1)
            gathered = xp.take(stack, xp.asarray(inverse), axis=1)
            return gathered.reshape(self.n_columns, self.n_bars).T
        stack = xp.stack(arrays, axis=2)  # (T, S, U)
        # take() writes a C-contiguous (T, S, K) result: ~10× faster than fancy indexing here
        gathered = xp.take(stack, xp.asarray(inverse), axis=2)
        return gathered.reshape(self.n_bars, self.n_columns)

    def column_values(self, name: str, dtype: Any = None) -> Array:
        """The value of parameter ``name`` for each column, as a (1, C) array."""
        values = np.tile(self.params[name], self.n_symbols)
        arr = self.xp.asarray(values if dtype is None else values.astype(dtype))
        return arr.reshape(1, self.n_columns)

    def per_symbol(self, arr: Array) -> Array:
        """Broadcast a (T, S) array to (T, C) (each symbol's series repeated for its combos)."""
        return self.xp.repeat(arr, self.n_combos, axis=1)


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


@dataclass
class Strategy:
    """A trading strategy: parameters, an optional constraint, and a ``signals`` function.

    ``constraint(params)`` takes the name → numpy array mapping of a grid and returns a
    boolean mask of the combinations to keep (e.g. ``fast < slow``).
    """

    name: str
    description: str
    params: Sequence[Param]
    signals: Callable[[SignalContext], Signals]
    constraint: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None
    constraint_text: str | None = None
    shorts: bool = True  # whether signals() returns short entries/exits
    tags: tuple[str, ...] = field(default_factory=tuple)
    kind: str = "signals"  # a single-asset strategy (core/portfolio_strategy.py: "portfolio")
    # optional fused form (core/fused.py): the same signals as crossings of lines, read by the sweep kernel
    fused: Callable[[SignalContext], Any] | None = None

    def param(self, name: str) -> Param:
        return param_named(self.params, name)

    def schema(self) -> dict[str, Any]:
        """JSON-able description of the strategy."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "params": [p.schema() for p in self.params],
            "constraint": self.constraint_text,
            "shorts": self.shorts,
            "select": None,  # portfolio strategies only
            "weighting": None,
        }


def param_named(params: Sequence[Param], name: str) -> Param:
    """The parameter called ``name`` among ``params``; KeyError otherwise."""
    for p in params:
        if p.name == name:
            return p
    raise KeyError(name)


def crossed_above(xp: Any, a: Array, b: Array) -> Array:
    """True at bar t when ``a[t] > b[t]`` and ``a[t-1] < b[t-1]`` (NaN compares false).

    ``a`` and ``b`` broadcast against each other (``b`` may be a level: a scalar or (1, C))."""
    a, b = xp.broadcast_arrays(xp.asarray(a), xp.asarray(b))
    out = xp.zeros_like(a, dtype=bool)  # keeps a's memory layout
    out[1:] = (a[1:] > b[1:]) & (a[:-1] < b[:-1])
    return out


def crossed_below(xp: Any, a: Array, b: Array) -> Array:
    """True at bar t when ``a[t] < b[t]`` and ``a[t-1] > b[t-1]`` (NaN compares false)."""
    return crossed_above(xp, b, a)


def crossings(xp: Any, a: Array, b: Array) -> tuple[Array, Array]:
    """``(crossed_above(a, b), crossed_below(a, b))`` with two comparisons instead of four."""
    a, b = xp.broadcast_arrays(xp.asarray(a), xp.asarray(b))
    above = a > b
    below = a < b
    up = xp.zeros_like(above)  # keeps the inputs' memory layout
    down = xp.zeros_like(above)
    xp.logical_and(above[1:], below[:-1], out=up[1:])
    xp.logical_and(below[1:], above[:-1], out=down[1:])
    return up, down
