"""Portfolio mode end to end through `run_backtest`: the spec's portfolio rules (422s naming the
field), one row per combination, metrics equal to the kernel fed directly and to vectorbt,
partitioning by combinations, record-mode details (orders, round trips, holdings)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpu_backtest.api import run_backtest
from gpu_backtest.core import portfolio_rules as rules
from gpu_backtest.core.config import Settings
from gpu_backtest.core.errors import SpecError
from gpu_backtest.core.metrics import ALL_METRICS, PORTFOLIO_METRICS
from gpu_backtest.core.synthetic import gbm_panel_frame

N_SYM, N_BARS = 12, 400


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return gbm_panel_frame(N_SYM, N_BARS, seed=11)


def momentum_spec(**portfolio: object) -> dict:
    return {"strategy": "xs_momentum", "params": {"lookback": [20, 60], "skip": [0, 5], "top_n": 3},
            "portfolio": {"rebalance": "1m", **portfolio}, "costs": {"fees": 0.001},
            "output": {"top_k": 2}}


@pytest.mark.parametrize("portfolio,field", [
    ({"rebalance": "2m"}, "portfolio.rebalance"),
    ({"rebalance": 0}, "portfolio.rebalance"),
    ({"rebalance": True}, "portfolio.rebalance"),
    ({"select": "best"}, "portfolio.select"),
    ({"select": "quantile", "quantile": 0}, "portfolio.quantile"),
    ({"quantile": 1.5}, "portfolio.quantile"),
    ({"weighting": "cap"}, "portfolio.weighting"),
    ({"max_weight": 0}, "portfolio.max_weight"),
    ({"gross_leverage": -1}, "portfolio.gross_leverage"),
    ({"select": "long_short", "net_exposure": 1.5}, "portfolio.net_exposure"),
    ({"cash_buffer": 1}, "portfolio.cash_buffer"),
    ({"min_trade": -5}, "portfolio.min_trade"),
    ({"volatility_lookback": 1}, "portfolio.volatility_lookback"),
    ({"colour": "red"}, "portfolio.colour"),
])
def test_bad_portfolio_options_name_the_field(frame, portfolio, field) -> None:
    with pytest.raises(SpecError) as err:
        run_backtest(momentum_spec(**portfolio), frame)
    assert err.value.path == field


@pytest.mark.parametrize("spec,field", [
    ({"strategy": "sma_crossover", "portfolio": {"rebalance": "1m"}}, "portfolio"),
    ({"strategy": "sma_crossover", "output": {"rank_by": "turnover"}}, "output.rank_by"),
    ({"strategy": "sma_crossover", "output": {"metrics": ["sharpe", "avg_holdings"]}}, "output.metrics[1]"),
    ({"strategy": "equal_weight", "portfolio": {"select": "top_n"}}, "portfolio.select"),
    ({"strategy": "xs_momentum", "execution": {"tsl_stop": 0.1}}, "execution.tsl_stop"),
    ({"strategy": "xs_momentum", "execution": {"size": 0.5}}, "execution.size"),
    ({"strategy": "xs_momentum", "execution": {"direction": "short"}}, "execution.direction"),
])
def test_mode_mismatches_are_spec_errors(frame, spec, field) -> None:
    with pytest.raises(SpecError) as err:
        run_backtest(spec, frame)
    assert err.value.path == field


def _panel(frame: pd.DataFrame) -> tuple[pd.DatetimeIndex, list[str], np.ndarray, np.ndarray]:
    wide = frame.pivot(index="timestamp" if "timestamp" in frame else "date", columns="symbol")
    idx = pd.DatetimeIndex(wide.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    syms = list(wide["close"].columns)
    idx = idx.as_unit("ns")
    return idx, syms, wide["open"].to_numpy(float), wide["close"].to_numpy(float)


def test_one_row_per_combination_equal_to_the_kernel_fed_directly(frame) -> None:
    res = run_backtest(momentum_spec(), frame)
    info = res.info
    assert info["mode"] == "portfolio"
    assert (info["n_symbols"], info["n_combinations"], info["n_columns"]) == (N_SYM, 4, 4)
    assert info["portfolio"]["rebalance"] == "1m" and info["portfolio"]["select"] == "top_n"
    assert sorted(res.table["column"]) == [0, 1, 2, 3] and res.table["symbol"].isna().all()
    assert set(ALL_METRICS) <= set(res.table.columns)
    rows = res.rows()
    assert all(r["symbol"] is None for r in rows)

    # the same pipeline by hand: scores → weights at the rebalance bars → kernel
    from gpu_backtest.core.simulate.portfolio import run_portfolio_cpu
    from gpu_backtest.core.simulate.portfolio_layout import PA_FINAL_EQUITY
    from gpu_backtest.core.simulate.portfolio_options import PortfolioOptions

    idx, syms, open_, close = _panel(frame)
    flags = rules.rebalance_flags(idx.asi8, "1m", len(idx))
    rows_ = np.flatnonzero(flags)
    mapping = np.full(len(idx), -1, dtype=np.int64)
    mapping[rows_] = np.arange(len(rows_))
    opts = PortfolioOptions(init_cash=100_000.0, fees=0.001, fixed_fee=0.0, slippage=0.0, min_trade=0.0,
                            fill="close", fractional=True, shorts=False, sl_stop=0.0, tp_stop=0.0)
    for r in rows:
        lb, sk = r["params"]["lookback"], r["params"]["skip"]
        scores = rules.xs_momentum(np, close, lb, sk)[rows_]
        w = rules.target_weights(np, scores, "top_n", n=3)
        run = run_portfolio_cpu(open_, close, w, mapping, np.full(len(syms), -1, dtype=np.int64), opts)
        assert r["metrics"]["final_equity"] == pytest.approx(run.acc[0, PA_FINAL_EQUITY], rel=1e-12)
        assert r["metrics"]["total_return"] == pytest.approx(run.acc[0, PA_FINAL_EQUITY] / 1e5 - 1, abs=1e-12)
    # ranked by sharpe, best first
    sharpes = [r["metrics"]["sharpe"] for r in rows]
    assert sharpes == sorted(sharpes, reverse=True)
    assert all(r["metrics"]["turnover"] > 0 and 0 < r["metrics"]["avg_holdings"] <= 3 for r in rows)
    assert all(0 < r["metrics"]["avg_gross_exposure"] <= 1 + 1e-9 for r in rows)
    assert all(r["metrics"]["total_costs"] > 0 for r in rows)


def test_partitions_split_combinations_with_identical_results(frame) -> None:
    whole = run_backtest(momentum_spec(), frame)
    # a combination's weights: ~N_BARS / 21 monthly rows × N_SYM symbols: one combination per partition
    split = run_backtest(momentum_spec(), frame, settings=Settings(partition_cells=N_SYM * -(-N_BARS // 21)))
    assert split.info["partitions"] == 4 and whole.info["partitions"] == 1
    a = whole.table.sort_values("column").reset_index(drop=True)
    b = split.table.sort_values("column").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert whole.details == split.details


def test_details_orders_round_trips_and_holdings_agree(frame) -> None:
    res = run_backtest(momentum_spec(), frame)
    assert len(res.details) == 2
    assert [d["column"] for d in res.details] == [r["column"] for r in res.rows(2)]
    for d in res.details:
        m = d["metrics"]
        assert d["symbol"] is None and d["equity"]["value"][-1] == pytest.approx(m["final_equity"])
        orders, trades, holdings = d["orders"], d["trades"], d["holdings"]
        assert orders and all(o["reason"] == "rebalance" for o in orders)
        assert sum(o["costs"] for o in orders) == pytest.approx(m["total_costs"], rel=1e-9)
        closed = [t for t in trades if t["status"] == "closed"]
        assert len(closed) == m["num_trades"] and len(trades) - len(closed) == m["num_open_trades"]
        # every currency unit of profit is in some trade: Σ pnl = final equity − initial cash
        assert sum(t["pnl"] for t in trades) == pytest.approx(m["final_equity"] - 100_000, abs=1e-6)
        wins = [t["pnl"] for t in closed if t["pnl"] > 0]
        assert len(wins) / len(closed) == pytest.approx(m["win_rate"])
        assert holdings and all(len(h["weights"]) <= 3 for h in holdings)
        assert all(0.95 < sum(h["weights"].values()) <= 1.0 + 1e-9 for h in holdings[1:])


def test_long_short_reversal_goes_short_and_stays_near_neutral(frame) -> None:
    spec = {"strategy": "short_term_reversal", "params": {"lookback": [5, 10], "n": 3},
            "portfolio": {"rebalance": 5, "select": "long_short"}, "output": {"top_k": 1}}
    res = run_backtest(spec, frame)
    assert res.info["portfolio"]["shorts"] is True
    for r in res.rows():
        assert abs(r["metrics"]["avg_net_exposure"]) < 0.2
        assert 0.8 < r["metrics"]["avg_gross_exposure"] < 1.2  # gross_leverage 1: half long, half short
    (d,) = res.details
    assert any(t["direction"] == "short" for t in d["trades"])
    assert any(w < 0 for h in d["holdings"] for w in h["weights"].values())


@pytest.mark.parametrize("strategy,params", [
    ("equal_weight", {}),
    ("inverse_volatility", {"lookback": [20, 40]}),
    ("low_volatility", {"lookback": 20, "top_n": [2, 4]}),
])
def test_builtin_portfolio_strategies_run(frame, strategy, params) -> None:
    res = run_backtest({"strategy": strategy, "params": params, "portfolio": {"rebalance": "1w"},
                        "output": {"top_k": 1, "metrics": ["total_return", *PORTFOLIO_METRICS]}}, frame)
    assert res.info["n_columns"] == max(1, len(res.table))
    assert list(res.metric_names) == ["total_return", *PORTFOLIO_METRICS, "sharpe"]  # rank_by added
    assert (res.table["avg_holdings"] > 0).all()


def test_stopped_early_series_are_held_and_named(frame) -> None:
    cut = frame.copy()
    last = sorted(cut["symbol"].unique())[0]
    ts = "timestamp" if "timestamp" in cut else "date"
    stop = sorted(cut[ts].unique())[250]
    cut = cut[~((cut["symbol"] == last) & (cut[ts] > stop))]
    res = run_backtest({"strategy": "equal_weight", "portfolio": {"rebalance": "1q"}}, cut)
    (note,) = res.info["portfolio"]["stopped_early"]
    assert note["symbol"] == last
    assert res.info["portfolio"]["delisted"] == []
