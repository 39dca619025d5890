"""The ``gpu-backtest`` command: run (table and --json), strategies, exit code 2 with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_backtest.core.synthetic import gbm_panel_frame

CLI = str(Path(sys.executable).parent / "gpu-backtest")


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    frame = gbm_panel_frame(3, 300, seed=7)
    paths = {}
    for sym, g in frame.groupby("symbol"):
        p = d / f"{sym}.csv"
        g.drop(columns="symbol").to_csv(p, index=False)
        paths[sym] = p
    long = d / "long.parquet"
    frame.to_parquet(long)
    paths["long"] = long
    spec = d / "spec.json"
    spec.write_text(json.dumps({"strategy": "sma_crossover", "params": {"fast": [5, 10], "slow": 30}}))
    paths["spec"] = spec
    return paths


def test_run_prints_a_table(data) -> None:
    r = cli("run", str(data["spec"]), "--data", str(data["SYM0000"]), str(data["SYM0001"]))
    assert r.returncode == 0, r.stderr
    assert "rank" in r.stdout and "SYM0001" in r.stdout and "4 columns" in r.stdout


def test_run_json_document(data) -> None:
    r = cli("run", str(data["spec"]), "--data", str(data["long"]), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["results"]) == 6
    row = doc["results"][0]
    assert set(row) >= {"symbol", "params", "metrics"}
    assert doc["details"][0]["trades"] is not None


def test_run_portfolio_prints_one_row_per_combination(data, tmp_path) -> None:
    spec = tmp_path / "portfolio.json"
    spec.write_text(json.dumps({"strategy": "xs_momentum", "params": {"lookback": [20, 40], "skip": 0, "top_n": 1},
                                "portfolio": {"rebalance": 21}}))
    r = cli("run", str(spec), "--data", str(data["long"]))
    assert r.returncode == 0, r.stderr
    assert "2 portfolios (2 combinations, each over 3 symbols)" in r.stdout and "turnover" in r.stdout
    doc = json.loads(cli("run", str(spec), "--data", str(data["long"]), "--json").stdout)
    assert [row["symbol"] for row in doc["results"]] == [None, None] and doc["details"][0]["holdings"]


def test_strategies_lists_builtins() -> None:
    r = cli("strategies")
    assert r.returncode == 0
    assert "sma_crossover" in r.stdout and "fast" in r.stdout and "constraint: fast < slow" in r.stdout
    doc = json.loads(cli("strategies", "--json").stdout)
    assert {"buy_and_hold", "sma_crossover"} <= {s["name"] for s in doc}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"strategy": "nope"}, "strategy: unknown strategy 'nope'"),
        ({"strategy": "sma_crossover", "params": {"fast": -3}}, "params.fast"),
        ({"strategy": "sma_crossover", "params": {"fast": 100, "slow": 20}}, "grid is empty"),
        ({"strategy": "xs_momentum", "portfolio": {"rebalance": "2m"}}, "portfolio.rebalance"),
        ({"strategy": "xs_momentum", "portfolio": {"gross_leverage": 0}}, "portfolio.gross_leverage"),
        ({"strategy": "sma_crossover", "portfolio": {}}, "portfolio: strategy 'sma_crossover' is a single-asset"),
    ],
)
def test_bad_spec_exit_2(data, tmp_path, spec, needle) -> None:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(spec))
    r = cli("run", str(p), "--data", str(data["long"]))
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_inputs_exit_2(data, tmp_path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    r = cli("run", str(broken), "--data", str(data["long"]))
    assert r.returncode == 2 and "broken.json" in r.stderr and "invalid JSON" in r.stderr
    r = cli("run", str(data["spec"]), "--data", str(tmp_path / "nope.csv"))
    assert r.returncode == 2 and "nope.csv" in r.stderr
    garbage = tmp_path / "XYZ.parquet"
    garbage.write_bytes(b"not a parquet file")
    r = cli("run", str(data["spec"]), "--data", str(garbage))
    assert r.returncode == 2 and "XYZ.parquet" in r.stderr
    assert "Traceback" not in r.stderr


def test_strategies_save_show_run_and_delete(data, tmp_path) -> None:
    env = {"GPU_BACKTEST_DATA_DIR": str(tmp_path / "state"), "DATABASE_URL": ""}
    doc = {"name": "cli_cross", "description": "SMA crossover saved from the command line",
           "signals": {"entry": "cross_above(sma(close, fast), sma(close, slow))",
                       "exit": "cross_below(sma(close, fast), sma(close, slow))"},
           "params": {"fast": {"type": "int", "default": 5}, "slow": {"type": "int", "default": 30}},
           "constraint": "fast < slow"}
    path = tmp_path / "cli_cross.json"
    path.write_text(json.dumps(doc))
    r = cli("strategies", "save", str(path), env=env)
    assert r.returncode == 0 and "saved cli_cross version 1" in r.stdout, r.stderr
    assert "saved cli_cross version 2" in cli("strategies", "save", str(path), env=env).stdout
    listing = cli("strategies", env=env).stdout
    assert "cli_cross [saved v2]" in listing and "sma_crossover" in listing
    shown = json.loads(cli("strategies", "show", "cli_cross", "--version", "1", env=env).stdout)
    assert shown["version"] == 1 and shown["versions"] == [1, 2]
    spec = tmp_path / "run.json"
    spec.write_text(json.dumps({"strategy": "cli_cross", "params": {"fast": [5, 10], "slow": 30}}))
    out = json.loads(cli("run", str(spec), "--data", str(data["long"]), "--json", env=env).stdout)
    assert out["info"]["strategy_source"]["kind"] == "saved" and out["info"]["strategy_source"]["version"] == 2
    builtin = tmp_path / "builtin.json"
    builtin.write_text(json.dumps({"strategy": "sma_crossover", "params": {"fast": [5, 10], "slow": 30}}))
    ref = json.loads(cli("run", str(builtin), "--data", str(data["long"]), "--json", env=env).stdout)
    assert [r["metrics"] for r in out["results"]] == [r["metrics"] for r in ref["results"]]
    assert "deleted cli_cross (2 versions)" in cli("strategies", "delete", "cli_cross", env=env).stdout
    gone = cli("strategies", "show", "cli_cross", env=env)
    assert gone.returncode == 2 and "no saved strategy 'cli_cross'" in gone.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**doc, "signals": {"entry": "close >", "exit": "close < 1"}}))
    r = cli("strategies", "save", str(bad), env=env)
    assert r.returncode == 2 and "signals.entry" in r.stderr and "Traceback" not in r.stderr
