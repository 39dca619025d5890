"""CPU build of the simulation kernel: numba ``njit``, parallel over columns with ``prange``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange, types

from ..jitcache import compile_lock, drop_stale_builds
from .kernel import simulate_column
from .layout import FUSED_N_IDX, FUSED_N_W, I_FUSED, I_N_BLOCKS, I_N_TAIL, N_ACC, N_BLOCK_ACC

_LAUNCH_LOCK = threading.Lock()
_column = njit(nogil=True, cache=True)(simulate_column)


@njit(parallel=True, nogil=True, cache=True)
def _simulate_all(
    open_, high, low, close, sym, entries, exits, short_entries, short_exits,
    fopts, iopts, acc, returns_out, equity_out, trades_out, ntrades_out, blocks_out, tails_out,
    fused_bank, fused_idx, fused_w,
):  # pragma: no cover - compiled
    for c in prange(sym.shape[0]):
        _column(  # np.int64: the same signature at typing and in the parallel loop (one compile, not two)
            np.int64(c), open_, high, low, close, sym, entries, exits, short_entries, short_exits,
            fopts, iopts, acc, returns_out, equity_out, trades_out, ntrades_out, blocks_out, tails_out,
            fused_bank, fused_idx, fused_w,
        )


# numba keys its on-disk cache on the compiled function's own file only, not on the modules the
# build includes (kernel.py, layout.py and the inlined orders.py/accumulators.py): drop the cached
# builds when any of them changed (core/jitcache.py).
drop_stale_builds((_column, _simulate_all), [Path(__file__).resolve().parent / n for n in (
    "kernel.py", "layout.py", "orders.py", "accumulators.py", "cpu.py")], "cpu")


def _array(dtype: Any, ndim: int, readonly: bool = False) -> Any:
    return types.Array(dtype, ndim, "A", readonly=readonly)


# The one signature `_simulate_all` is built for: every array of layout "A" (any strides), the
# inputs read-only (a writable array converts to it too). numba otherwise compiles one build per
# combination of argument layouts it sees — the sweep's column-major bars and signals, one
# symbol's bars (numpy calls a (T, 1) array row-major), one column's signals, the (1, 1) dummies
# for absent short signals: up to five builds of seconds each on a small machine, where this one
# runs as fast (bench/RESULTS.md, "Cold start"). The inputs are cast to these dtypes (no copy when
# they have them); outputs must be float64/int64 already.
_F8, _I8, _B1 = types.float64, types.int64, types.boolean
SIGNATURE = (
    *(_array(_F8, 2, True),) * 4,                  # open, high, low, close (T, S)
    _array(_I8, 1, True),                          # sym (C,)
    *(_array(_B1, 2, True),) * 4,                  # entries, exits, short_entries, short_exits
    _array(_F8, 1, True), _array(_I8, 1, True),    # fopts, iopts
    _array(_F8, 2),                                # acc (C, N_ACC)
    _array(_F8, 2), _array(_F8, 2),                # returns_out, equity_out
    _array(_F8, 3), _array(_I8, 1),                # trades_out, ntrades_out
    _array(_F8, 3),                                # blocks_out
    _array(_F8, 3),                                # tails_out
    _array(_F8, 3, True),                          # fused_bank (L, T, S)
    _array(_I8, 2, True), _array(_F8, 2, True),    # fused_idx, fused_w
)
_COMPILE_LOCK = threading.Lock()


def _kernel() -> Any:
    """`_simulate_all` built for `SIGNATURE` (loaded from numba's disk cache when there), with
    further compilation disabled so that every call uses that build. Processes sharing the disk
    cache compile it once: the others wait for the file lock, then load it."""
    if not hasattr(_simulate_all, "disable_compile"):  # NUMBA_DISABLE_JIT: plain Python
        return _simulate_all
    if not _simulate_all.signatures:
        with _COMPILE_LOCK, compile_lock(_simulate_all, "cpu"):
            if not _simulate_all.signatures:
                _simulate_all.compile(SIGNATURE)
                _simulate_all.disable_compile()
    return _simulate_all


def simulate(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    sym: np.ndarray,
    entries: np.ndarray,
    exits: np.ndarray,
    short_entries: np.ndarray,
    short_exits: np.ndarray,
    fopts: np.ndarray,
    iopts: np.ndarray,
    returns_out: np.ndarray,
    equity_out: np.ndarray,
    trades_out: np.ndarray,
    ntrades_out: np.ndarray,
    blocks_out: np.ndarray | None = None,
    tails_out: np.ndarray | None = None,
    fused: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Run every column on the CPU; returns the (C, N_ACC) accumulator array.

    See `kernel.simulate_column` for the shapes; the output buffers are filled in place.
    ``blocks_out`` (C, B, N_BLOCK_ACC) is needed when ``iopts[I_N_BLOCKS]`` = B > 0,
    ``tails_out`` (C, 2, m) when ``iopts[I_N_TAIL]`` = m > 0; ``fused`` = (bank (L, T, S),
    idx (C, 16), w (C, 8)) when ``iopts[I_FUSED]`` is set.
    """
    blocks_out = _blocks_buffer(np, sym, iopts, blocks_out)
    tails_out = tails_buffer(np, sym, int(iopts[I_N_TAIL]), tails_out)
    fused_bank, fused_idx, fused_w = fused_buffers(np, sym, bool(iopts[I_FUSED]), fused)
    acc = np.empty((sym.shape[0], N_ACC), dtype=np.float64)
    f8, b1 = np.float64, np.bool_
    open_, high, low, close = (np.asarray(a, dtype=f8) for a in (open_, high, low, close))
    entries, exits, short_entries, short_exits = (np.asarray(a, dtype=b1)
                                                  for a in (entries, exits, short_entries, short_exits))
    sym, fopts, iopts = np.asarray(sym, dtype=np.int64), np.asarray(fopts, dtype=f8), np.asarray(iopts, dtype=np.int64)
    fused_bank, fused_idx, fused_w = (np.asarray(fused_bank, dtype=f8), np.asarray(fused_idx, dtype=np.int64),
                                      np.asarray(fused_w, dtype=f8))
    kernel = _kernel()
    # One parallel launch at a time per process: prange already uses every core, and numba's
    # workqueue threading layer (used when neither OpenMP nor TBB is available) is not safe for
    # launches from several threads at once (Dask worker threads, the server's job threads).
    with _LAUNCH_LOCK:
        kernel(
            open_, high, low, close, sym, entries, exits, short_entries, short_exits,
            fopts, iopts, acc, returns_out, equity_out, trades_out, ntrades_out, blocks_out, tails_out,
            fused_bank, fused_idx, fused_w,
        )
    return acc


def _blocks_buffer(xp: Any, sym: Any, iopts: Any, blocks_out: Any) -> Any:
    """``blocks_out`` checked against ``iopts[I_N_BLOCKS]``, or the (1, 1, 1) dummy when off."""
    n_blocks = int(iopts[I_N_BLOCKS])
    if n_blocks <= 0:
        return xp.zeros((1, 1, 1), dtype=xp.float64) if blocks_out is None else blocks_out
    want = (int(sym.shape[0]), n_blocks, N_BLOCK_ACC)
    if blocks_out is None or tuple(blocks_out.shape) != want:
        raise ValueError(f"iopts asks for {n_blocks} blocks: blocks_out must have shape {want}")
    return blocks_out


def tails_buffer(xp: Any, sym: Any, n_tail: int, tails_out: Any) -> Any:
    """``tails_out`` checked against ``n_tail`` (``iopts[I_N_TAIL]``), or the (1, 1, 1) dummy when off."""
    if n_tail <= 0:
        return xp.zeros((1, 1, 1), dtype=xp.float64) if tails_out is None else tails_out
    want = (int(sym.shape[0]), 2, n_tail)
    if tails_out is None or tuple(tails_out.shape) != want:
        raise ValueError(f"iopts asks for {n_tail} tail values: tails_out must have shape {want}")
    return tails_out


def fused_buffers(xp: Any, sym: Any, on: bool, fused: Any) -> tuple[Any, Any, Any]:
    """The fused form's (bank, idx, w) checked (``on``: ``iopts[I_FUSED]``), or dummies when off."""
    if not on:
        return (xp.zeros((1, 1, 1), dtype=xp.float64), xp.zeros((1, FUSED_N_IDX), dtype=xp.int64),
                xp.zeros((1, FUSED_N_W), dtype=xp.float64))
    n = int(sym.shape[0])
    if fused is None or len(fused) != 3 or fused[0].ndim != 3 or tuple(fused[1].shape) != (n, FUSED_N_IDX) \
            or tuple(fused[2].shape) != (n, FUSED_N_W):
        raise ValueError(f"iopts asks for fused signals: fused must be (bank (L, T, S), idx ({n}, "
                         f"{FUSED_N_IDX}), w ({n}, {FUSED_N_W}))")
    return fused[0], fused[1], fused[2]
