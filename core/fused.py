"""The fused signal form of a strategy (issue 18): signals as crossings of lines the kernel reads bar by bar.

A strategy's ``signals`` returns four (T, C) bool arrays — the reference, and what record mode
and every strategy use. A strategy whose signals are all crossings of lines may also give a
``fused`` function (`Strategy.fused`) that returns the lines instead: a bank of (T, S) lines
per symbol (indicators computed once per distinct parameter value, as `SignalContext.per_combo`)
and, per combination, which lines each signal compares. The sweep kernel then computes the
crossings inside its bar loop (core/simulate/kernel.py, ``iopts[I_FUSED]``), so no (T, C)
indicator, gather or signal array is ever built. Tests hold every fused built-in equal to its
array form (tests/test_fused.py).

Each of the four signals (entry, exit, short entry, short exit) is "A crosses above B":
``A[t] > B[t]`` and ``A[t−1] < B[t−1]``, NaN comparing false — `strategy.crossed_above`; a
"crosses below" is the same with A and B swapped. An operand is a line ``L`` or ``L + w·M``
with ``w`` per combination (e.g. a Bollinger band ``mid − k·σ`` = ``mid + (−k)·σ``, which is
the same float arithmetic as the array form's ``mid − k·σ``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .simulate.layout import FUSED_N_IDX, FUSED_N_W
from .strategy import SignalContext, _scalar

Array = Any


@dataclass(frozen=True)
class Operand:
    """Per combination (K,): line ``i`` plus ``w`` × line ``j`` (``j`` = −1: line ``i`` alone)."""

    i: np.ndarray
    j: np.ndarray
    w: np.ndarray


@dataclass(frozen=True)
class FusedSignals:
    """The fused form of a block's signals: ``bank`` (L, T, S) lines, ``idx`` (K, 16) and ``w`` (K, 8)
    in the kernel's layout (core/simulate/layout.py ``FUSED_N_IDX``, ``FUSED_N_W``)."""

    bank: Array
    idx: np.ndarray
    w: np.ndarray


Cross = tuple[Operand, Operand]  # (A, B): A crosses above B


class FusedLines:
    """Builds a block's line bank and the operands of its signals (a strategy's ``fused`` uses it)."""

    def __init__(self, ctx: SignalContext) -> None:
        self.ctx = ctx
        self._lines: list[Array] = []
        self._index: dict[Any, int] = {}

    def _add(self, key: Any, fn: Callable[[], Array]) -> int:
        if key not in self._index:
            self._index[key] = len(self._lines)
            self._lines.append(self.ctx.cached(key, fn))
        return self._index[key]

    def _const(self, i: int) -> Operand:
        k = self.ctx.n_combos
        return Operand(np.full(k, i, dtype=np.int64), np.full(k, -1, dtype=np.int64), np.zeros(k))

    @property
    def close(self) -> Operand:
        """The close of each symbol."""
        return self._const(self._add(("bar", "close"), lambda: self.ctx.close))

    def per_combo(self, key: str, fn: Callable[..., Array], *names: str) -> Operand:
        """``fn(*values) -> (T, S)`` once per distinct value tuple of the params ``names`` (shared
        with `SignalContext.per_combo` under the same key), each combination pointing at its own."""
        ctx = self.ctx
        cols = np.stack([ctx.params[n] for n in names], axis=1) if names else np.zeros((ctx.n_combos, 0))
        uniq, inverse = np.unique(cols, axis=0, return_inverse=True)
        ids = []
        for row in uniq:
            values = tuple(_scalar(v) for v in row)
            ids.append(self._add((key, values), lambda values=values: fn(*values)))
        i = np.asarray(ids, dtype=np.int64)[np.asarray(inverse).reshape(-1)]
        return Operand(i, np.full(ctx.n_combos, -1, dtype=np.int64), np.zeros(ctx.n_combos))

    def affine(self, base: Operand, w: np.ndarray | float, other: Operand) -> Operand:
        """``base + w·other`` per combination (both plain lines)."""
        if (base.j >= 0).any() or (other.j >= 0).any():
            raise ValueError("affine() takes plain lines")
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), (self.ctx.n_combos,)).copy()
        return Operand(base.i, other.i, w)

    def signals(self, entry: Cross | None, exit: Cross | None, short_entry: Cross | None = None,
                short_exit: Cross | None = None, order: str = "C") -> FusedSignals:
        """The block's `FusedSignals`; a None signal never fires. ``order`` "F": the bank is laid out
        so each symbol's lines are contiguous (the CPU kernel's reading order); "C": (L, T, S) rows."""
        k = self.ctx.n_combos
        idx = np.full((k, FUSED_N_IDX), -1, dtype=np.int64)
        w = np.zeros((k, FUSED_N_W))
        for q, cross in enumerate((entry, exit, short_entry, short_exit)):
            if cross is None:
                continue
            a, b = cross
            idx[:, 4 * q], idx[:, 4 * q + 1], idx[:, 4 * q + 2], idx[:, 4 * q + 3] = a.i, a.j, b.i, b.j
            w[:, 2 * q], w[:, 2 * q + 1] = a.w, b.w
        return FusedSignals(stack_lines(self.ctx.xp, self._lines, order), idx, w)


def stack_lines(xp: Any, lines: Sequence[Array], order: str = "C") -> Array:
    """(L, T, S) from L (T, S) lines; ``order`` "F": memory ordered symbol, line, bar (a view)."""
    if order == "F":
        n_t, n_s = lines[0].shape
        out = xp.empty((n_s, len(lines), n_t), dtype=xp.float64)
        for i, line in enumerate(lines):
            out[:, i, :] = line.T
        return out.transpose(1, 2, 0)
    return xp.ascontiguousarray(xp.stack([xp.asarray(a, dtype=xp.float64) for a in lines], axis=0))


def column_operands(fz: FusedSignals, n_symbols: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """Per column (symbol-major: c = s·K + k) idx and w; the side the direction never trades is off."""
    idx = np.tile(fz.idx, (n_symbols, 1))
    w = np.tile(fz.w, (n_symbols, 1))
    if direction == "long":
        idx[:, 8:] = -1
    elif direction == "short":
        idx[:, :8] = -1
    return idx, w
