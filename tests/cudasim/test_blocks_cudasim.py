"""Per-block sums of the numba.cuda kernel under the CUDA simulator: equal to the CPU build's and consistent."""

from __future__ import annotations

import os
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import block_cases as bc
import sim_cases as sc

from gpu_backtest.core.simulate import cpu
from gpu_backtest.core.simulate import cuda as cuda_build


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc.cases(max_bars=40, max_cols=4), st.integers(1, 9))
def test_cuda_blocks_equal_cpu(case, n_blocks):
    def cuda_simulate(*args, blocks_out):
        return cuda_build.simulate(np, *args, blocks_out=blocks_out, n_blocks=n_blocks)

    out, blocks = bc.run_blocks(cuda_simulate, case, n_blocks)
    bc.assert_blocks_consistent(case, out, blocks)
    _, blocks_cpu = bc.run_blocks(cpu.simulate, case, n_blocks)
    np.testing.assert_allclose(blocks, blocks_cpu, rtol=1e-12, atol=1e-15)
