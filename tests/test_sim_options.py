"""`SimOptions` (the single-asset kernel's named options), `RunOptions.from_spec` on top of it,
and the shared closed-trade accumulator block of both kernels' layouts."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_backtest.core.engine import RunOptions
from gpu_backtest.core.simulate import accumulators as A
from gpu_backtest.core.simulate import layout as L
from gpu_backtest.core.simulate import portfolio_layout as P
from gpu_backtest.core.simulate.sim_options import SimOptions
from gpu_backtest.core.spec import BacktestSpec


def test_arrays_fill_every_named_slot() -> None:
    opts = SimOptions(init_cash=5e4, fees=0.001, fixed_fee=2.0, slippage=0.0005, size=0.5, size_type="value",
                      fill="next_open", direction="both", fractional=False, sl_stop=0.02, tp_stop=0.03,
                      tsl_stop=0.04, risk_free=1e-4, want_returns=True, record=True)
    f, i = opts.arrays()
    assert f.dtype == np.float64 and f.shape == (L.N_FOPTS,)
    assert i.dtype == np.int64 and i.shape == (L.N_IOPTS,)
    assert (f[L.F_INIT_CASH], f[L.F_FEES], f[L.F_FIXED_FEE], f[L.F_SLIPPAGE], f[L.F_SIZE]) == (5e4, 0.001, 2.0,
                                                                                               0.0005, 0.5)
    assert (f[L.F_SL_STOP], f[L.F_TP_STOP], f[L.F_TSL_STOP], f[L.F_RISK_FREE]) == (0.02, 0.03, 0.04, 1e-4)
    assert (i[L.I_FILL], i[L.I_DIRECTION], i[L.I_SIZE_TYPE]) == (L.FILL_NEXT_OPEN, L.DIR_BOTH, L.SIZE_VALUE)
    assert (i[L.I_FRACTIONAL], i[L.I_WANT_RETURNS], i[L.I_RECORD]) == (0, 1, 1)


@pytest.mark.parametrize("field", ["fill", "direction", "size_type"])
def test_unknown_choice_is_rejected(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SimOptions(**{field: "sideways"})


def test_run_options_from_spec() -> None:
    spec = BacktestSpec.from_dict({
        "strategy": "sma_crossover",
        "params": {"fast": 5, "slow": 20},
        "execution": {"init_cash": 2500, "fill": "next_open", "direction": "short", "size": 3,
                      "size_type": "units", "fractional": False, "sl_stop": 0.05, "tsl_stop": 0.1},
        "costs": {"fees": 0.002, "fixed_fee": 1.5, "slippage": 0.001},
        "metrics": {"risk_free": 0.0001},
    })
    run = RunOptions.from_spec(spec)
    f, i = run.fopts, run.iopts
    assert (f[L.F_INIT_CASH], f[L.F_SIZE], f[L.F_SL_STOP], f[L.F_TP_STOP], f[L.F_TSL_STOP]) == (2500, 3, 0.05, 0.0,
                                                                                                0.1)
    assert (f[L.F_FEES], f[L.F_FIXED_FEE], f[L.F_SLIPPAGE], f[L.F_RISK_FREE]) == (0.002, 1.5, 0.001, 0.0001)
    assert (i[L.I_FILL], i[L.I_DIRECTION], i[L.I_SIZE_TYPE], i[L.I_FRACTIONAL]) == (L.FILL_NEXT_OPEN, L.DIR_SHORT,
                                                                                    L.SIZE_UNITS, 0)
    assert (i[L.I_WANT_RETURNS], i[L.I_RECORD]) == (0, 0)
    flagged = run.with_flags(True, False)
    assert (flagged[L.I_WANT_RETURNS], flagged[L.I_RECORD]) == (1, 0)
    assert np.array_equal(np.delete(flagged, [L.I_WANT_RETURNS, L.I_RECORD]),
                          np.delete(i, [L.I_WANT_RETURNS, L.I_RECORD]))


@pytest.mark.parametrize("prefix, module", [("A_", L), ("PA_", P)])
def test_trade_stats_block_matches_both_layouts(prefix: str, module: object) -> None:
    base = getattr(module, prefix + "N_CLOSED")
    for k, name in enumerate(A.TradeStats._fields):
        assert getattr(A, "TS_" + name.upper()) == k
        assert getattr(module, prefix + name.upper()) == base + k, name
    assert len(A.TradeStats._fields) == A.TS_N_FIELDS


def test_trade_stats_add() -> None:
    add = A.trade_stats_add.py_func
    st = A.trade_stats_new.py_func()
    for pnl, tret, held in ((10.0, 0.1, 3), (-4.0, -0.05, 2), (0.0, 0.0, 1)):
        st = add(st, pnl, tret, held)
    assert (st.n_closed, st.n_wins, st.n_losses) == (3, 1, 1)
    assert (st.gross_profit, st.gross_loss, st.best_ret, st.worst_ret, st.hold_bars) == (10.0, -4.0, 0.1, -0.05, 6.0)
    assert st.pnl_mean == pytest.approx(2.0)
    assert st.pnl_m2 == pytest.approx(np.var([10.0, -4.0, 0.0]) * 3)
