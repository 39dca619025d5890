"""GPU build of the portfolio kernel: ``numba.cuda``, one thread per portfolio column.

The device function is `portfolio.simulate_portfolio` itself, compiled with
``cuda.jit(device=True)``; numba.cuda is imported only when this build is first asked for.
``NUMBA_ENABLE_CUDASIM=1`` runs this exact path on the CPU (tests/cudasim covers it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .portfolio import simulate_portfolio
from .portfolio_layout import N_PACC, N_SCRATCH

THREADS_PER_BLOCK = 128


@lru_cache(maxsize=1)
def _kernel() -> Any:
    # a module global, not a closure variable: see cuda.py (the simulator swaps module globals)
    global cuda
    from numba import cuda

    column = cuda.jit(device=True)(simulate_portfolio)

    @cuda.jit
    def run_all(open_, close, weights, rebalance, fopts, iopts, scratch, acc, equity_out):  # pragma: no cover
        c = cuda.grid(1)
        if c < rebalance.shape[1]:
            column(c, open_, close, weights, rebalance, fopts, iopts, scratch, acc, equity_out)

    return run_all


def run_portfolio_cuda(
    xp: Any,
    open_: Any,
    close: Any,
    weights: Any,
    rebalance: Any,
    fopts: Any,
    iopts: Any,
    want_equity: bool = True,
) -> tuple[Any, Any]:
    """Launch one thread per column; returns ``(acc (C, N_PACC), equity (T, C) or None)`` on the device.

    ``xp`` is the array module the inputs live in (CuPy on a GPU, numpy under the simulator);
    shapes as in `portfolio.simulate_portfolio`.
    """
    n_bars, n_sym = close.shape
    n_cols = int(rebalance.shape[1])
    scratch = xp.empty((n_cols, n_sym, N_SCRATCH), dtype=xp.float64)
    acc = xp.empty((n_cols, N_PACC), dtype=xp.float64)
    equity = xp.empty((n_bars, n_cols) if want_equity else (1, 1), dtype=xp.float64)
    if n_cols > 0:
        blocks = (n_cols + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
        _kernel()[blocks, THREADS_PER_BLOCK](open_, close, weights, rebalance, fopts, iopts, scratch, acc, equity)
    return acc, (equity if want_equity else None)
