"""GPU build of the portfolio kernel: ``numba.cuda``, one thread per portfolio column.

The device function is `portfolio.simulate_portfolio` itself, compiled with
``cuda.jit(device=True)``; numba.cuda is imported only when this build is first asked for.
``NUMBA_ENABLE_CUDASIM=1`` runs this exact path on the CPU (tests/cudasim covers it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .portfolio import PortfolioRun, check_shapes, simulate_portfolio
from .portfolio_layout import N_OFIELDS, N_PACC, N_SCRATCH
from .portfolio_options import PortfolioOptions

THREADS_PER_BLOCK = 128


@lru_cache(maxsize=1)
def _kernel() -> Any:
    # a module global, not a closure variable: see cuda.py (the simulator swaps module globals)
    global cuda
    from numba import cuda

    column = cuda.jit(device=True)(simulate_portfolio)

    @cuda.jit
    def run_all(open_, close, weights, rebalance, ended, fopts, iopts, scratch, acc, equity_out, orders_out,
                n_orders_out):  # pragma: no cover
        c = cuda.grid(1)
        if c < weights.shape[2]:
            column(c, open_, close, weights, rebalance, ended, fopts, iopts, scratch, acc, equity_out, orders_out,
                   n_orders_out)

    return run_all


def run_portfolio_cuda(
    xp: Any,
    open_: Any,
    close: Any,
    weights: Any,
    rebalance: Any,
    ended: Any,
    opts: PortfolioOptions,
    max_records: int = 0,
) -> PortfolioRun:
    """Launch one thread per column; returns a `PortfolioRun` of device arrays.

    ``xp`` is the array module the inputs live in (CuPy on a GPU, numpy under the simulator);
    inputs are already on the device, shapes and dtypes as in `portfolio.run_portfolio_cpu`
    (float64 prices and weights, int64 ``rebalance`` and ``ended``).
    """
    n_bars, n_sym, n_rows, n_cols = check_shapes(open_.shape, close.shape, weights.shape, rebalance.shape,
                                                 ended.shape)
    if n_rows == 0:  # no rebalance bar: a NaN row keeps the launch free of zero-size arrays
        weights = xp.full((1, n_sym, n_cols), xp.nan, dtype=xp.float64)
    fopts_h, iopts_h = opts.arrays()
    fopts = xp.asarray(fopts_h)
    iopts = xp.asarray(iopts_h)
    scratch = xp.empty((n_cols, max(n_sym, 1), N_SCRATCH), dtype=xp.float64)
    acc = xp.empty((n_cols, N_PACC), dtype=xp.float64)
    equity = xp.empty((n_bars, n_cols), dtype=xp.float64)
    if max_records > 0:
        orders = xp.zeros((n_cols, max_records, N_OFIELDS), dtype=xp.float64)
        n_orders = xp.zeros(n_cols, dtype=xp.int64)
    else:
        orders = xp.zeros((1, 1, 1), dtype=xp.float64)
        n_orders = xp.zeros(1, dtype=xp.int64)
    if n_cols > 0:
        blocks = (n_cols + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
        _kernel()[blocks, THREADS_PER_BLOCK](open_, close, weights, rebalance, ended, fopts, iopts, scratch, acc,
                                             equity, orders, n_orders)
    if max_records > 0:
        return PortfolioRun(acc, equity, orders, n_orders)
    return PortfolioRun(acc, equity)
