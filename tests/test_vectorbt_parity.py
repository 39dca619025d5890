"""Our SMA-crossover run gives vectorbt's trades and final equity (close fills, fractional units)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpu_backtest import run_backtest
from gpu_backtest.core.synthetic import gbm_panel_frame

vbt = pytest.importorskip("vectorbt")


@pytest.mark.parametrize("fees", [0.0, 0.001])
def test_sma_crossover_matches_vectorbt(fees: float) -> None:
    seed = int(np.random.default_rng().integers(0, 2**31))
    frame = gbm_panel_frame(3, 800, seed=seed)
    spec = {
        "strategy": "sma_crossover",
        "params": {"fast": [5, 10], "slow": [30, 60]},
        "costs": {"fees": fees},
        "execution": {"init_cash": 10_000, "fill": "close", "direction": "long", "fractional": True},
        "output": {"top_k": 12, "equity_curves": True, "trades": True},
    }
    result = run_backtest(spec, frame, backend="cpu")
    assert len(result.details) == 12
    close = frame.pivot(index="timestamp", columns="symbol", values="close")
    close.index = close.index.tz_localize(None)
    for d in result.details:
        sym, fast, slow = d["symbol"], d["params"]["fast"], d["params"]["slow"]
        c = close[sym]
        f = vbt.MA.run(c, fast).ma
        s = vbt.MA.run(c, slow).ma
        entries = f.vbt.crossed_above(s)
        exits = f.vbt.crossed_below(s)
        pf = vbt.Portfolio.from_signals(c, entries, exits, init_cash=10_000, fees=fees, freq="1D")
        # final equity and the whole equity curve
        assert d["equity"]["value"][-1] == pytest.approx(pf.final_value(), rel=1e-9)
        np.testing.assert_allclose(d["equity"]["value"], pf.value().to_numpy(), rtol=1e-9)
        # the trades: same entries, exits, sizes, prices, pnl
        vt = pf.trades.records_readable
        ours = d["trades"]
        assert len(ours) == len(vt), (sym, fast, slow, seed)
        for t, (_, v) in zip(ours, vt.iterrows(), strict=True):
            assert pd.Timestamp(t["entry_time"]).tz_localize(None) == v["Entry Timestamp"]
            assert t["size"] == pytest.approx(v["Size"], rel=1e-9)
            assert t["entry_price"] == pytest.approx(v["Avg Entry Price"], rel=1e-12)
            assert t["pnl"] == pytest.approx(v["PnL"], rel=1e-8, abs=1e-6)
            if t["status"] == "closed":
                assert v["Status"] == "Closed"
                assert pd.Timestamp(t["exit_time"]).tz_localize(None) == v["Exit Timestamp"]
                assert t["exit_price"] == pytest.approx(v["Avg Exit Price"], rel=1e-12)
            else:
                assert v["Status"] == "Open"
        assert d["metrics"]["total_return"] == pytest.approx(pf.total_return(), rel=1e-9)
        assert d["metrics"]["max_drawdown"] == pytest.approx(pf.max_drawdown(), rel=1e-9, abs=1e-12)
