"""Engine API: data forms, spec errors as typed exceptions, chunking, details, sweep == record."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpu_backtest import DataError, SpecError, run_backtest
from gpu_backtest.core.backend import cpu_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import Engine, plan_chunks
from gpu_backtest.core.panel import MarketPanel
from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.plugins.manager import default_registry

SWEEP = {"strategy": "sma_crossover", "params": {"fast": {"start": 5, "stop": 15, "step": 5}, "slow": [20, 40]}}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return gbm_panel_frame(4, 400, seed=int(np.random.default_rng().integers(2**31)))


def test_sweep_shape_and_ranking(frame: pd.DataFrame) -> None:
    res = run_backtest(SWEEP, frame, backend="cpu")
    assert res.info["n_columns"] == 4 * 6
    assert len(res.table) == 24
    sharpe = res.table["sharpe"].to_numpy()
    finite = sharpe[np.isfinite(sharpe)]
    assert np.all(np.diff(finite) <= 0)  # ranked best first
    doc = res.to_dict()
    assert set(doc) == {"info", "results", "details"}
    assert doc["results"][0]["params"].keys() == {"fast", "slow"}
    assert len(res.details) == 10  # top_k default


def test_data_forms_agree(frame: pd.DataFrame, tmp_path) -> None:
    spec = {"strategy": "sma_crossover", "params": {"fast": 5, "slow": 20}, "symbols": ["SYM0001"]}
    a = run_backtest(spec, frame, backend="cpu").table
    per_symbol = {s: g.drop(columns="symbol").set_index("timestamp") for s, g in frame.groupby("symbol")}
    b = run_backtest(spec, per_symbol, backend="cpu").table
    path = tmp_path / "SYM0001.csv"
    frame[frame.symbol == "SYM0001"].drop(columns="symbol").rename(columns={"timestamp": "Date"}).to_csv(path)
    c = run_backtest(spec, [path], backend="cpu").table
    long_path = tmp_path / "long.parquet"
    frame.to_parquet(long_path)
    d = run_backtest(spec, str(long_path), backend="cpu").table
    for other in (b, c, d):
        assert other["final_equity"].iloc[0] == pytest.approx(a["final_equity"].iloc[0], rel=1e-12)


def test_sweep_metrics_equal_record_metrics(frame: pd.DataFrame) -> None:
    spec = {**SWEEP, "costs": {"fees": 0.001, "slippage": 0.0005, "fixed_fee": 1.0},
            "execution": {"direction": "both", "sl_stop": 0.05, "tsl_stop": 0.1, "fill": "next_open"},
            "output": {"top_k": 24}}
    res = run_backtest(spec, frame, backend="cpu")
    by_col = res.table.set_index("column")
    for d in res.details:
        row = by_col.loc[d["column"]]
        for name, value in d["metrics"].items():
            a = row[name]
            if value is None:  # JSON null: NaN or ±inf (e.g. profit factor with no losing trade)
                assert not np.isfinite(a), name
                continue
            assert a == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_chunked_equals_unchunked(frame: pd.DataFrame) -> None:
    settings = Settings.from_env()
    big = Engine(settings, cpu_backend(settings), default_registry()).run(SWEEP, frame)
    tiny = Engine(settings, cpu_backend(settings), default_registry())
    tiny.backend.memory_budget = 400 * 40 * 5  # ~5 columns per chunk
    small = tiny.run(SWEEP, frame)
    assert small.info["chunks"] > 4
    pd.testing.assert_frame_equal(big.table, small.table)


def test_plan_chunks_splits_combos_when_one_symbol_is_too_big() -> None:
    chunks = plan_chunks(3, 100, 1000, budget=1000 * 40 * 30, bytes_per_cell=40)
    assert all(c.n_columns <= 30 for c in chunks)
    assert sum(c.n_columns for c in chunks) == 300
    whole = plan_chunks(10, 5, 1000, budget=1000 * 40 * 30, bytes_per_cell=40)
    assert [c.sym_stop - c.sym_start for c in whole] == [6, 4]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"strategy": "nope"}, "strategy"),
        ({"strategy": "sma_crossover", "params": {"fast": "x"}}, "params.fast"),
        ({"strategy": "sma_crossover", "params": {"fast": [5, 0]}}, "params.fast[1]"),
        ({"strategy": "sma_crossover", "params": {"speed": 3}}, "params.speed"),
        ({"strategy": "sma_crossover", "params": {"fast": 50, "slow": 20}}, "params"),
        ({"strategy": "sma_crossover", "execution": {"fill": "midpoint"}}, "execution.fill"),
        ({"strategy": "sma_crossover", "costs": {"fees": -1}}, "costs.fees"),
        ({"strategy": "sma_crossover", "output": {"rank_by": "luck"}}, "output.rank_by"),
        ({"strategy": "sma_crossover", "symbols": ["ZZZ"]}, None),
        ({"strategy": "sma_crossover", "params": {"fast": {"start": 5, "stop": 1}}}, "params.fast.stop"),
        ({"strategy": "sma_crossover", "bogus": 1}, "bogus"),
    ],
)
def test_bad_specs_raise_typed_errors_naming_the_field(frame: pd.DataFrame, spec, field) -> None:
    with pytest.raises((SpecError, DataError)) as info:
        run_backtest(spec, frame, backend="cpu")
    if field is not None:
        assert isinstance(info.value, SpecError)
        assert info.value.path == field
        assert field in str(info.value)


def test_grid_limit_is_a_setting(frame: pd.DataFrame) -> None:
    settings = Settings.from_env({"GPU_BACKTEST_MAX_GRID": "3"})
    with pytest.raises(SpecError, match="limit is 3"):
        run_backtest(SWEEP, frame, settings=settings, backend="cpu")


def test_unreadable_file_names_the_file(tmp_path) -> None:
    bad = tmp_path / "AAPL.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError) as info:
        run_backtest({"strategy": "buy_and_hold"}, [bad], backend="cpu")
    assert str(bad) in str(info.value)
    with pytest.raises(DataError, match="no such file"):
        run_backtest({"strategy": "buy_and_hold"}, [tmp_path / "missing.csv"], backend="cpu")


def test_nan_gaps_are_not_filled() -> None:
    frame = gbm_panel_frame(2, 200, seed=3)
    frame = frame[~((frame.symbol == "SYM0001") & (frame.index % 7 == 0))]  # holes in one symbol
    panel = MarketPanel.from_long(frame)
    assert np.isnan(panel.close[:, 1]).sum() > 0 and not np.isnan(panel.close[:, 0]).any()
    res = run_backtest({"strategy": "buy_and_hold"}, panel, backend="cpu")
    assert res.table["final_equity"].notna().all()


def test_single_backtest_details_and_periods_per_year(frame: pd.DataFrame) -> None:
    spec = {"strategy": "sma_crossover", "params": {"fast": 5, "slow": 20}, "symbols": ["SYM0002"],
            "output": {"top_k": 0}}
    res = run_backtest(spec, frame, backend="cpu")
    assert res.info["periods_per_year"] == 252
    (d,) = res.details
    assert len(d["equity"]["value"]) == 400
    for t in d["trades"]:
        assert set(t) >= {"entry_time", "exit_time", "entry_price", "exit_price", "size", "pnl", "return",
                          "exit_reason"}
    closed = sum(t["pnl"] for t in d["trades"] if t["status"] == "closed")
    open_pnl = sum(t["pnl"] for t in d["trades"] if t["status"] == "open")
    assert d["equity"]["value"][-1] - 100_000 == pytest.approx(closed + open_pnl, rel=1e-9)


def test_benchmark_alpha_beta(frame: pd.DataFrame) -> None:
    spec = {"strategy": "buy_and_hold", "symbols": ["SYM0000"], "metrics": {"benchmark": "SYM0000"}}
    res = run_backtest(spec, frame, backend="cpu")
    row = res.table.iloc[0]
    assert row["beta"] == pytest.approx(1.0, rel=1e-6)
    assert row["alpha"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"fast": {"start": 1, "stop": 1e308, "step": 1e-10}}, "params.fast"),
        ({"fast": {"start": -1e308, "stop": 1e308}}, "params.fast"),
        ({"fast": float("inf")}, "params.fast"),
        ({"fast": 10**400}, "params.fast"),
        ({"fast": 5.5}, "params.fast"),
    ],
)
def test_extreme_parameter_values_are_spec_errors(frame: pd.DataFrame, params, field) -> None:
    with pytest.raises(SpecError) as info:
        run_backtest({"strategy": "sma_crossover", "params": params}, frame, backend="cpu")
    assert info.value.path.startswith(field)


def test_bad_symbol_is_rejected_at_validation() -> None:
    from gpu_backtest.core.spec import BacktestSpec

    with pytest.raises(SpecError) as info:
        BacktestSpec.from_dict({"strategy": "buy_and_hold", "symbols": ["OK", "A\x00B"]})
    assert info.value.path == "symbols[1]"
