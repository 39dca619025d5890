"""Per-block sums of the CPU kernel (issue 16): each block agrees with its bars and trades; blocks add up to the run."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import block_cases as bc
import sim_cases as sc

from gpu_backtest.core.simulate import cpu
from gpu_backtest.core.simulate import layout as L


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc.cases(max_bars=120, max_cols=5), st.integers(1, 20))
def test_blocks_match_bars_and_whole_run(case, n_blocks):
    out, blocks = bc.run_blocks(cpu.simulate, case, n_blocks)
    bc.assert_blocks_consistent(case, out, blocks)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc.cases(max_bars=80, max_cols=4), st.integers(1, 12))
def test_blocks_leave_everything_else_unchanged(case, n_blocks):
    plain = sc.run_kernel(cpu.simulate, case)
    out, _ = bc.run_blocks(cpu.simulate, case, n_blocks)
    np.testing.assert_array_equal(out.acc, plain.acc)
    np.testing.assert_array_equal(out.equity, plain.equity)
    np.testing.assert_array_equal(out.trades, plain.trades)


def test_position_across_block_boundary():
    # long from bar 0 to bar 3 over 2 blocks of 2 bars: returns go to each bar's block, the
    # trade (exit at bar 3) to block 1
    case = sc.single_column_case(
        [(10, 10, 10, 10), (11, 11, 11, 11), (12, 12, 12, 12), (13, 13, 13, 13)],
        entries=[0], exits=[3], init_cash=100.0,
    )
    out, blocks = bc.run_blocks(cpu.simulate, case, 2)
    bc.assert_blocks_consistent(case, out, blocks)
    assert blocks[0, :, L.BK_N_CLOSED].tolist() == [0.0, 1.0]
    assert blocks[0, 1, L.BK_PNL] == pytest.approx(30.0)
    assert blocks[0, 0, L.BK_SUM] == pytest.approx(0.1)


def test_wrong_buffer_shape_is_refused():
    case = sc.single_column_case([(10, 10, 10, 10)] * 3)
    fopts, iopts = sc.option_arrays(case.opts, False, False)
    iopts[L.I_N_BLOCKS] = 4
    z = np.zeros((1, 1))
    with pytest.raises(ValueError, match="blocks_out"):
        cpu.simulate(case.open_, case.high, case.low, case.close, case.sym, case.entries, case.exits,
                     case.short_entries, case.short_exits, fopts, iopts, z, z, np.zeros((1, 1, 1)),
                     np.zeros(1, np.int64), blocks_out=np.zeros((1, 3, L.N_BLOCK_ACC)))
