"""Walk-forward jobs (`validation`): the engine against a slow reference on random data (fold
boundaries, anchored and rolling, per_symbol and universe, bars and durations), the fold rules,
and the spec errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from walkforward_reference import reference_folds, reference_walk_forward

from gpu_backtest import SpecError, run_backtest
from gpu_backtest.core.folds import Validation, make_folds
from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.core.walkforward import choose, efficiency, fold_table

GRID = {"fast": [4, 9], "slow": [16, 30]}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return gbm_panel_frame(3, 330, seed=int(np.random.default_rng().integers(2**31)))


def _spec(validation: dict, **extra: object) -> dict:
    bench = isinstance(validation, dict) and validation.get("anchored")  # the anchored cases: with a benchmark
    metrics = {"periods_per_year": 252, **({"benchmark": "SYM0002"} if bench else {})}
    return {"strategy": "sma_crossover", "params": GRID, "metrics": metrics,
            "costs": {"fees": 0.001}, "execution": {"direction": "both"}, "validation": validation, **extra}


def _num(x: float | None) -> float:
    return float("nan") if x is None else x


CASES = [
    {"train": 120, "test": 50, "anchored": False, "choose": "per_symbol"},
    {"train": 100, "test": 70, "anchored": True, "choose": "universe"},
    {"train": "6m", "test": "3m", "anchored": False, "choose": "universe"},
    {"train": "20w", "test": "45d", "anchored": True, "choose": "per_symbol"},
]


@pytest.mark.parametrize("validation", CASES, ids=lambda v: f"{v['train']}-{v['test']}-{v['anchored']}-{v['choose']}")
def test_engine_equals_reference(frame: pd.DataFrame, validation: dict) -> None:
    spec = _spec(validation)
    wf = run_backtest(spec, frame, backend="cpu").info["walk_forward"]
    ref = reference_walk_forward(spec, frame, GRID)
    assert wf["n_folds"] == len(ref["folds"]) >= 2
    for got, want in zip(wf["folds"], ref["folds"], strict=True):
        t = [x.isoformat() for x in want["times"]]
        assert [got["train_start"], got["train_end"], got["test_start"], got["test_end"]] == t
        a, b, c, d = want["bounds"]
        assert (got["train_bars"], got["test_bars"]) == (b - a, d - c)
        for g, w in zip(got["symbols"], want["rows"], strict=True):
            assert g["symbol"] == w["symbol"]
            assert g["params"] == w["params"]
            assert _num(g["in_sample"]["sharpe"]) == pytest.approx(w["is_score"], rel=1e-9, abs=1e-12, nan_ok=True)
            assert g["in_sample"]["total_return"] == pytest.approx(w["is_total_return"], rel=1e-9, abs=1e-12)
            for m, val in w["oos"].items():
                assert _num(g["out_of_sample"][m]) == pytest.approx(val, rel=1e-9, abs=1e-12, nan_ok=True)
    for s in wf["symbols"]:
        curve = ref["curves"][s["symbol"]]
        np.testing.assert_allclose(s["equity"]["value"], curve, rtol=1e-10)
        assert s["metrics"]["final_equity"] == pytest.approx(curve[-1], rel=1e-10)
        # a trade open at the end of a test window (not the last) counts as closed on the stitched curve
        oos = [r["oos"] for f in ref["folds"] for r in f["rows"] if r["symbol"] == s["symbol"]]
        assert s["metrics"]["num_trades"] == sum(o["num_trades"] + o["num_open_trades"] for o in oos[:-1]) + \
            oos[-1]["num_trades"]
        assert s["metrics"]["num_open_trades"] == oos[-1]["num_open_trades"]
        assert s["metrics"]["max_drawdown"] <= min(o["max_drawdown"] for o in oos) + 1e-12
        assert s["metrics"]["total_return"] == pytest.approx(curve[-1] / 100_000.0 - 1, rel=1e-9)
        # walk-forward efficiency from its definition (docs/metrics.md)
        g = np.prod([1 + r["is_total_return"] for f in ref["folds"] for r in f["rows"] if r["symbol"] == s["symbol"]])
        n_is = sum(f["bounds"][1] - f["bounds"][0] for f in ref["folds"])
        ann_is = g ** (252 / n_is) - 1
        ann_oos = (curve[-1] / 100_000.0) ** (252 / len(curve)) - 1
        assert s["annualised_oos_return"] == pytest.approx(ann_oos, rel=1e-9)
        assert s["annualised_is_return"] == pytest.approx(ann_is, rel=1e-9)
        want_eff = ann_oos / ann_is if ann_is > 0 else None
        assert s["efficiency"] == (pytest.approx(want_eff, rel=1e-9) if want_eff is not None else None)
    if validation["choose"] == "universe":
        for f in wf["folds"]:
            assert len({str(r["params"]) for r in f["symbols"]}) == 1
            assert f["params"] == f["symbols"][0]["params"]
    table = fold_table(wf)
    assert len(table) == wf["n_folds"] * 3


def test_fold_boundaries_random() -> None:
    rng = np.random.default_rng(5)
    for _ in range(60):
        n = int(rng.integers(20, 400))
        idx = pd.DatetimeIndex(np.sort(rng.choice(pd.date_range("2015-01-01", periods=800, tz="UTC"), n,
                                                  replace=False)))
        train = int(rng.integers(2, 120)) if rng.random() < 0.5 else f"{int(rng.integers(1, 30))}w"
        test = int(rng.integers(2, 80)) if rng.random() < 0.5 else f"{int(rng.integers(5, 90))}d"
        v = Validation(train=train, test=test, anchored=bool(rng.random() < 0.5))
        want = reference_folds(list(idx), train, test, v.anchored)
        try:
            got = [(f.train_start, f.train_stop, f.test_start, f.test_stop) for f in make_folds(idx, v)]
        except SpecError as exc:
            assert exc.path == "validation"
            assert not any(f[4] for f in want)  # no fold with a full test window
            continue
        assert got == [f[:4] for f in want]
        for a, b, c, d in got:  # training precedes testing
            assert a < b == c < d


def test_choose_rules() -> None:
    s = np.array([[1.0, 2.0, 2.0], [np.nan, np.nan, np.nan], [3.0, np.nan, -1.0]])
    assert choose(s, "sharpe", False).tolist() == [1, 0, 0]
    assert choose(s, "max_drawdown_duration", False).tolist() == [0, 0, 2]
    # universe: mean over symbols, NaN left out: [2, 2, 0.5] → tie → lowest index
    assert choose(s, "sharpe", True).tolist() == [0, 0, 0]
    assert np.isnan(efficiency(0.1, -0.2)) and efficiency(0.1, 0.2) == pytest.approx(0.5)


@pytest.mark.parametrize(("validation", "field"), [
    ({"train": 0, "test": 10}, "validation.train"),
    ({"train": "2q", "test": 10}, "validation.train"),
    ({"train": "2y\n", "test": 10}, "validation.train"),
    ({"train": 100, "test": "0d"}, "validation.test"),
    ({"train": 100}, "validation.test"),
    ({"train": 100, "test": True}, "validation.test"),
    ({"train": 100, "test": 1}, "validation.test"),
    ({"train": 100, "test": 10, "anchored": "yes"}, "validation.anchored"),
    ({"train": 100, "test": 10, "choose": "best"}, "validation.choose"),
    ({"train": 100, "test": 10, "method": "cv"}, "validation.method"),
    ({"train": 100, "test": 10, "folds": 3}, "validation.folds"),
    ([1], "validation"),
    ({"train": 300, "test": 100}, "validation"),  # too few bars for one fold
])
def test_bad_validation(frame: pd.DataFrame, validation: object, field: str) -> None:
    with pytest.raises(SpecError) as err:
        run_backtest(_spec(validation), frame, backend="cpu")  # type: ignore[arg-type]
    assert err.value.path == field


def test_metric_subset_and_no_parameters(frame: pd.DataFrame) -> None:
    spec = _spec({"train": 120, "test": 60}, output={"rank_by": "cagr", "metrics": ["sortino"]})
    wf = run_backtest(spec, frame, backend="cpu").info["walk_forward"]
    assert set(wf["folds"][0]["symbols"][0]["in_sample"]) == {"sortino", "cagr"}
    assert all(s["annualised_is_return"] is not None for s in wf["symbols"])
    hold = run_backtest({"strategy": "buy_and_hold", "validation": {"train": 100, "test": 100, "anchored": True,
                                                                     "choose": "universe"}}, frame, backend="cpu")
    wf = hold.info["walk_forward"]
    assert wf["n_folds"] == 3 and all(f["params"] == {} for f in wf["folds"])
    for s in wf["symbols"]:  # buy and hold per window: the stitched return chains the windows' returns
        total = np.prod([1 + f["symbols"][i]["out_of_sample"]["total_return"] for f in wf["folds"]
                         for i, r in enumerate(f["symbols"]) if r["symbol"] == s["symbol"]]) - 1
        assert s["metrics"]["total_return"] == pytest.approx(total, rel=1e-9)


def test_portfolio_strategy_rejected(frame: pd.DataFrame) -> None:
    spec = {"strategy": "equal_weight", "validation": {"train": 100, "test": 50}}
    with pytest.raises(SpecError) as err:
        run_backtest(spec, frame, backend="cpu")
    assert err.value.path == "validation"


def test_spec_round_trip() -> None:
    from gpu_backtest.core.spec import BacktestSpec

    spec = BacktestSpec.from_dict(_spec({"train": "2y", "test": 21}))
    again = BacktestSpec.from_dict(spec.to_dict())
    assert again.validation == spec.validation == Validation(train="2y", test=21)
    assert BacktestSpec.from_dict({"strategy": "sma_crossover"}).validation is None
