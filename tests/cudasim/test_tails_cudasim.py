"""Tail heaps of the numba.cuda kernel under the CUDA simulator: exact, and equal to the CPU build's."""

from __future__ import annotations

import os
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sim_cases as sc
import tail_cases as tc

from gpu_backtest.core import metrics as M
from gpu_backtest.core.simulate import cpu
from gpu_backtest.core.simulate import cuda as cuda_build


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc.cases(max_bars=60, max_cols=4))
def test_cuda_tails_equal_cpu(case):
    m = M.tail_size(case.n_bars)

    def cuda_simulate(*args, tails_out):
        return cuda_build.simulate(np, *args, tails_out=tails_out, n_tail=m)

    out, tails = tc.run_tails(cuda_simulate, case, m)
    tc.assert_tails_exact(out, tails)
    _, tails_cpu = tc.run_tails(cpu.simulate, case, m)
    np.testing.assert_array_equal(tails, tails_cpu)
