"""Shared checks of the kernel's tail heaps (iopts[I_N_TAIL] = m > 0), for the CPU and CUDA-simulator tests.

`run_tails` runs a kernel build on a `sim_cases.Case` with per-bar returns and m-value heaps;
`assert_tails_exact` checks that side 0 holds exactly the m smallest returns and side 1 the m
largest (negated), each a valid max-heap, and that the quantile metrics from the heaps equal
`series_metrics` on the whole return series.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_cases as sc

from gpu_backtest.core import metrics as M
from gpu_backtest.core.simulate import layout as L


def run_tails(simulate: Callable[..., np.ndarray], case: sc.Case, n_tail: int, **kw) -> tuple:
    """(KernelOutput, tails (C, 2, m)) of ``case``; ``tails`` is NaN-poisoned first."""
    n_bars, n_cols = case.n_bars, case.n_cols
    fopts, iopts = sc.option_arrays(case.opts, True, False)
    iopts[L.I_N_TAIL] = n_tail
    returns = np.full((n_bars, n_cols), np.nan)
    tails = np.full((n_cols, 2, n_tail), np.nan)
    short_entries, short_exits = case.short_entries, case.short_exits
    if case.short_dummy:
        short_entries = short_exits = np.zeros((1, 1), dtype=bool)
    z = np.zeros((1, 1))
    acc = simulate(case.open_, case.high, case.low, case.close, case.sym, case.entries, case.exits,
                   short_entries, short_exits, fopts, iopts, returns, z, np.zeros((1, 1, 1)),
                   np.zeros(1, np.int64), tails_out=tails, **kw)
    return sc.KernelOutput(np.asarray(acc), returns, None, None, None), tails


def assert_tails_exact(out: sc.KernelOutput, tails: np.ndarray) -> None:
    m = tails.shape[2]
    r = out.returns
    n = r.shape[0]
    assert not np.isnan(tails).any()
    s = np.sort(r, axis=0)
    for c in range(r.shape[1]):
        for side, want in ((0, s[:m, c]), (1, np.sort(-s[::-1][:m, c]))):
            heap = tails[c, side]
            np.testing.assert_array_equal(np.sort(heap), np.sort(want))
            assert all(heap[(i - 1) // 2] >= heap[i] for i in range(1, m))  # a max-heap
    if m == M.tail_size(n):
        got = M.tail_metrics(tails, n)
        want = M.series_metrics(r, 252.0)
        for k in ("var_95", "tail_ratio"):  # the same order statistics and interpolation: exact
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        # CVaR: a mean of the same values, summed in another order
        np.testing.assert_allclose(got["cvar_95"], want["cvar_95"], rtol=1e-14, atol=1e-300)
