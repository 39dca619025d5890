"""The portfolio strategy contract: `PortfolioStrategy`, `PortfolioContext`, `Scores`, `TargetWeights`.

A portfolio strategy ranks a universe against itself. For a block of ``K`` parameter
combinations it returns, on each **rebalance bar**, either per-symbol scores that the spec's
``portfolio`` rules (selection, weighting, caps: core/portfolio_rules.py) turn into target
weights, or the target weights themselves — ``(R, S, K)`` arrays (rebalance rows × symbols ×
combinations) written against ``ctx.xp``, so one implementation runs on numpy and CuPy.

Only rebalance rows are materialised: a strategy computes its indicators over all ``T`` bars
(``(T, S)`` per distinct parameter value, through `PortfolioContext.per_combo`) and the
context samples them at the ``R`` rebalance bars — a monthly schedule over ten years keeps
120 rows of weights, not 2,520.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .strategy import Param, _scalar, param_named

Array = Any  # numpy.ndarray or cupy.ndarray

KIND_SIGNALS = "signals"
KIND_PORTFOLIO = "portfolio"


@dataclass
class Scores:
    """Per-bar scores ``(R, S, K)``; higher is better, non-finite = not eligible.

    ``n``: the selection size per combination (``(K,)`` or a scalar; required by ``top_n``,
    ``bottom_n`` and ``long_short``). ``volatility``: ``(R, S)`` or ``(R, S, K)`` for the
    ``inverse_volatility`` weighting (None: the engine computes it from the closes with the
    spec's ``portfolio.volatility_lookback``)."""

    values: Array
    n: Array | int | None = None
    volatility: Array | None = None


@dataclass
class TargetWeights:
    """Target weights ``(R, S, K)`` used as given (NaN: keep the symbol's earlier target);
    negative weights are short positions, which trade only with ``execution.direction`` "both"."""

    values: Array


class PortfolioContext:
    """What a portfolio strategy's ``weights`` sees for one block of combinations.

    Attributes: ``xp``; ``open``/``high``/``low``/``close``/``volume`` as ``(T, S)`` arrays;
    ``params`` (name → host numpy array of length K); ``rows`` (host int64 ``(R,)``: the bar
    index of each rebalance row); ``index`` (the bars' ``pandas.DatetimeIndex``); ``n_bars``,
    ``n_symbols``, ``n_combos``, ``n_rows``.
    """

    def __init__(self, xp: Any, bars: Mapping[str, Array], params: Mapping[str, np.ndarray],
                 rows: np.ndarray, index: Any = None, cache: dict[Any, Array] | None = None) -> None:
        self.xp = xp
        self.open = bars["open"]
        self.high = bars["high"]
        self.low = bars["low"]
        self.close = bars["close"]
        self.volume = bars.get("volume")
        self.params = {k: np.asarray(v) for k, v in params.items()}
        self.rows = np.asarray(rows, dtype=np.int64)
        self.index = index
        self.n_bars, self.n_symbols = self.close.shape
        sizes = {len(v) for v in self.params.values()}
        self.n_combos = sizes.pop() if sizes else 1
        self.n_rows = len(self.rows)
        self._rows_dev = xp.asarray(self.rows)
        self._cache: dict[Any, Array] = {} if cache is None else cache
        self.indicator_calls = 0

    def at_rows(self, arr: Array) -> Array:
        """A ``(T, S)`` (or ``(T, ...)``) array sampled at the rebalance rows: ``(R, S)``."""
        return self.xp.take(arr, self._rows_dev, axis=0)

    def per_combo(self, key: str, fn: Callable[..., Array], *names: str) -> Array:
        """``fn(*values) -> (T, S)`` once per unique value tuple of the params ``names``
        (values passed as Python scalars), sampled at the rebalance rows and gathered into
        ``(R, S, K)``. ``key`` names the indicator so equal values share one computation."""
        xp = self.xp
        cols = np.stack([self.params[n] for n in names], axis=1) if names else np.zeros((self.n_combos, 0))
        uniq, inverse = np.unique(cols, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        arrays = []
        for row in uniq:
            values = tuple(_scalar(v) for v in row)
            ck = (key, values)
            if ck not in self._cache:
                self._cache[ck] = self.at_rows(xp.asarray(fn(*values), dtype=xp.float64))
                self.indicator_calls += 1
            arrays.append(self._cache[ck])
        stack = xp.stack(arrays, axis=2)  # (R, S, U)
        return xp.take(stack, xp.asarray(inverse), axis=2)

    def param(self, name: str, dtype: Any = None) -> np.ndarray:
        """Parameter ``name`` per combination (host ``(K,)``)."""
        values = self.params[name]
        return values if dtype is None else values.astype(dtype)


@dataclass
class PortfolioStrategy:
    """A portfolio strategy: parameters, an optional constraint, and a ``weights`` function
    returning `Scores` or `TargetWeights` for a `PortfolioContext`.

    ``select`` and ``weighting`` are the rules the strategy's scores are meant for (used when
    the spec's ``portfolio`` leaves them null)."""

    name: str
    description: str
    params: Sequence[Param]
    weights: Callable[[PortfolioContext], Scores | TargetWeights]
    select: str = "top_n"
    weighting: str = "equal"
    constraint: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None
    constraint_text: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    kind: str = KIND_PORTFOLIO

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
            "shorts": self.select == "long_short",
            "select": self.select,
            "weighting": self.weighting,
        }


def strategy_kind(strategy: Any) -> str:
    """``"portfolio"`` for a `PortfolioStrategy`, ``"signals"`` for a single-asset `Strategy`."""
    return getattr(strategy, "kind", KIND_SIGNALS)
