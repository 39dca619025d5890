"""The numba.cuda build of the kernel, run under the CUDA simulator, agrees with the reference.

Runs `gpu_backtest.core.simulate.cuda.simulate(np, ...)` (numpy arrays work under the
simulator) on small random cases from tests/sim_cases.py and compares every column with
tests/reference_sim.py, exactly as tests/test_simulate_reference.py does for the CPU build.
Only collected when NUMBA_ENABLE_CUDASIM=1 (see conftest.py); tests/test_cudasim.py runs it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sim_cases as sc

from gpu_backtest.core.simulate import cuda as cuda_build


def cuda_simulate(*args):
    return cuda_build.simulate(np, *args)


def test_running_under_the_simulator():
    from numba import config

    assert config.ENABLE_CUDASIM


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc.cases(max_bars=60, max_cols=8))
def test_cuda_kernel_matches_reference(case):
    out = sc.run_kernel(cuda_simulate, case)
    sc.assert_matches_reference(case, out)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc.cases(max_bars=40, max_cols=4))
def test_cuda_sweep_mode_matches_reference(case):
    out = sc.run_kernel(cuda_simulate, case, want_returns=False, record=False)
    sc.assert_matches_reference(case, out)


def test_cuda_hand_case():
    """A short/long reversal with a stop, fees and slippage: the GPU build's numbers, by hand."""
    bars = [(10, 10, 10, 10), (12, 12, 12, 12), (9, 9, 9, 9)]
    case = sc.single_column_case(
        bars, entries=[0, 2], short_entries=[1], direction="both", init_cash=1_000.0,
    )
    out = sc.run_kernel(cuda_simulate, case)
    sc.assert_matches_reference(case, out)
    np.testing.assert_allclose(out.equity[:, 0], [1_000.0, 1_200.0, 1_500.0], rtol=1e-12)
    assert int(out.ntrades[0]) == 3
