"""GPU build of the simulation kernel: ``numba.cuda``, one thread per column, on CuPy arrays.

The device function is `kernel.simulate_column` itself, compiled with
``cuda.jit(device=True)``; numba.cuda is imported only when this build is first asked for,
so the package imports without CUDA. ``NUMBA_ENABLE_CUDASIM=1`` runs this exact path on
the CPU (slowly), which is how CI covers it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .kernel import simulate_column
from .layout import N_ACC, N_BLOCK_ACC

THREADS_PER_BLOCK = 128


@lru_cache(maxsize=1)
def _kernel() -> Any:
    # a module global, not a closure variable: the CUDA simulator swaps in its fake ``cuda``
    # module only for names in the kernel's globals
    global cuda
    from numba import cuda

    column = cuda.jit(device=True)(simulate_column)

    @cuda.jit
    def simulate_all(
        open_, high, low, close, sym, entries, exits, short_entries, short_exits,
        fopts, iopts, acc, returns_out, equity_out, trades_out, ntrades_out, blocks_out, tails_out,
    fused_bank, fused_idx, fused_w,
    ):  # pragma: no cover - compiled
        c = cuda.grid(1)
        if c < sym.shape[0]:
            column(
                c, open_, high, low, close, sym, entries, exits, short_entries, short_exits,
                fopts, iopts, acc, returns_out, equity_out, trades_out, ntrades_out, blocks_out, tails_out,
    fused_bank, fused_idx, fused_w,
            )

    return simulate_all


def simulate(
    xp: Any,
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    sym: Any,
    entries: Any,
    exits: Any,
    short_entries: Any,
    short_exits: Any,
    fopts: Any,
    iopts: Any,
    returns_out: Any,
    equity_out: Any,
    trades_out: Any,
    ntrades_out: Any,
    acc: Any = None,
    blocks_out: Any = None,
    n_blocks: int = 0,
    tails_out: Any = None,
    n_tail: int = 0,
    fused: Any = None,
) -> Any:
    """Launch one thread per column; returns the (C, N_ACC) accumulator array on the device.

    ``xp`` is the array module the inputs live in (CuPy on a GPU, numpy under the simulator).
    ``acc`` may be passed pre-filled (tests poison it with NaN to catch unwritten slots).
    ``blocks_out`` (C, B, N_BLOCK_ACC) is needed when ``n_blocks`` = B > 0, which must equal
    ``iopts[I_N_BLOCKS]`` (passed separately so a device-side iopts is never read back); likewise
    ``tails_out`` (C, 2, m) when ``n_tail`` = m > 0 (``iopts[I_N_TAIL]``); ``fused`` = (bank, idx,
    w) when given (``iopts[I_FUSED]`` must then be set).
    """
    from .cpu import fused_buffers, tails_buffer

    tails_out = tails_buffer(xp, sym, n_tail, tails_out)
    fused_bank, fused_idx, fused_w = fused_buffers(xp, sym, fused is not None, fused)
    if n_blocks <= 0:
        blocks_out = xp.zeros((1, 1, 1), dtype=xp.float64) if blocks_out is None else blocks_out
    elif blocks_out is None or tuple(blocks_out.shape) != (int(sym.shape[0]), n_blocks, N_BLOCK_ACC):
        raise ValueError(f"blocks_out must have shape {(int(sym.shape[0]), n_blocks, N_BLOCK_ACC)}")
    n_cols = int(sym.shape[0])
    if acc is None:
        acc = xp.empty((n_cols, N_ACC), dtype=xp.float64)
    if n_cols == 0:
        return acc
    blocks = (n_cols + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    _kernel()[blocks, THREADS_PER_BLOCK](
        open_, high, low, close, sym, entries, exits, short_entries, short_exits,
        fopts, iopts, acc, returns_out, equity_out, trades_out, ntrades_out, blocks_out, tails_out,
    fused_bank, fused_idx, fused_w,
    )
    return acc
