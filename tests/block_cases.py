"""Shared checks of the kernel's per-block sums (iopts[I_N_BLOCKS] = B > 0), for the CPU and CUDA-simulator tests.

`run_blocks` runs a kernel build on a `sim_cases.Case` with per-bar returns, trade records and
B blocks; `assert_blocks_consistent` checks each block's sums against the returns and trades of
its bars (a trade counts in the block of its exit bar) and the sums combined over all blocks
against the whole-run accumulators (count, mean, std, Sharpe, closed trades, pnl).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_cases as sc

from gpu_backtest.core import overfitting as of
from gpu_backtest.core.simulate import layout as L


def run_blocks(simulate: Callable[..., np.ndarray], case: sc.Case, n_blocks: int, **kw) -> tuple:
    """(KernelOutput, blocks (C, B, N_BLOCK_ACC)) of ``case``; ``blocks`` is NaN-poisoned first."""
    n_bars, n_cols = case.n_bars, case.n_cols
    fopts, iopts = sc.option_arrays(case.opts, True, True)
    iopts[L.I_N_BLOCKS] = n_blocks
    returns = np.full((n_bars, n_cols), np.nan)
    equity = np.full((n_bars, n_cols), np.nan)
    trades = np.full((n_cols, n_bars + 2, L.N_TFIELDS), np.nan)
    ntrades = np.full(n_cols, -1, dtype=np.int64)
    blocks = np.full((n_cols, n_blocks, L.N_BLOCK_ACC), np.nan)
    short_entries, short_exits = case.short_entries, case.short_exits
    if case.short_dummy:
        short_entries = short_exits = np.zeros((1, 1), dtype=bool)
    acc = simulate(
        case.open_, case.high, case.low, case.close, case.sym,
        case.entries, case.exits, short_entries, short_exits,
        fopts, iopts, returns, equity, trades, ntrades, blocks_out=blocks, **kw,
    )
    return sc.KernelOutput(np.asarray(acc), returns, equity, trades, ntrades), blocks


def assert_blocks_consistent(case: sc.Case, out: sc.KernelOutput, blocks: np.ndarray) -> None:
    n_blocks = blocks.shape[1]
    assert not np.isnan(blocks).any()
    bounds = of.block_bounds(case.n_bars, n_blocks)
    for c in range(case.n_cols):
        r = out.returns[:, c]
        nt = int(out.ntrades[c])
        tr = out.trades[c, :nt]
        closed = tr[tr[:, L.T_EXIT_REASON] != L.R_OPEN]
        for b in range(n_blocks):
            x = r[bounds[b]:bounds[b + 1]]
            want = [x.size, x.sum(), (x**2).sum(), (x**3).sum(), (x**4).sum()]
            np.testing.assert_allclose(blocks[c, b, :5], want, rtol=1e-9, atol=1e-12)
            in_b = (closed[:, L.T_EXIT_IDX] >= bounds[b]) & (closed[:, L.T_EXIT_IDX] < bounds[b + 1])
            assert blocks[c, b, L.BK_N_CLOSED] == in_b.sum()
            np.testing.assert_allclose(blocks[c, b, L.BK_PNL], closed[in_b, L.T_PNL].sum(), rtol=1e-9, atol=1e-6)
        # combined over all blocks = the whole-run statistics of the column
        tot = blocks[c].sum(axis=0)
        acc = out.acc[c]
        assert tot[L.BK_N] == acc[L.A_N_BARS]
        assert tot[L.BK_N_CLOSED] == acc[L.A_N_CLOSED]
        np.testing.assert_allclose(tot[L.BK_PNL], acc[L.A_PNL_MEAN] * acc[L.A_N_CLOSED], rtol=1e-9, atol=1e-6)
        n = tot[L.BK_N]
        if n >= 1:
            np.testing.assert_allclose(tot[L.BK_SUM] / n, acc[L.A_RET_MEAN], rtol=1e-9, atol=1e-15)
        if n >= 2:
            mom = of.moments_from_sums(*tot[:5])
            std = math.sqrt(acc[L.A_RET_M2] / (n - 1))
            np.testing.assert_allclose(mom["std"], std, rtol=1e-6, atol=1e-12)
            if std > 1e-9:
                sr = float(of.sharpe_from_sums(n, tot[L.BK_SUM], tot[L.BK_SUM2]))
                np.testing.assert_allclose(sr, acc[L.A_RET_MEAN] / std, rtol=1e-6, atol=1e-9)
