"""MarketDataStore, the synthetic source, the data service and the ``gpu-backtest data`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpu_backtest import DataError, SpecError, run_backtest
from gpu_backtest.core.config import Settings
from gpu_backtest.core.dataservice import MarketDataService
from gpu_backtest.core.marketdata import MarketDataStore
from gpu_backtest.core.synthetic import symbol_bars
from gpu_backtest.plugins.datasources.synthetic import DEMO_SYMBOLS, SyntheticSource
from gpu_backtest.plugins.manager import default_registry

CLI = str(Path(sys.executable).parent / "gpu-backtest")


def bars(n: int, start: str = "2020-01-01", seed: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"timestamp": pd.bdate_range(start, periods=n, tz="UTC"), "open": close,
                         "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": rng.integers(1, 1000, n).astype(float)})


def new_store(tmp_path: Path) -> MarketDataStore:
    """A store with its root under ``tmp_path/market`` and its catalog in ``tmp_path/jobs.sqlite``."""
    return MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")


def snapshot(store: MarketDataStore) -> tuple[dict[str, bytes], list]:
    """Every file under the store's root with its bytes, and every catalog row."""
    root = store.root
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return files, store.catalog()


def test_write_read_catalog(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    df = bars(50)
    entry = store.write("upload", "ABC", "1d", df)
    assert (entry.rows, entry.first, entry.last) == (50, df.timestamp.iloc[0], df.timestamp.iloc[-1])
    back = store.read("upload", "ABC", "1d")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert [e.symbol for e in store.catalog("upload")] == ["ABC"]
    assert store.path("upload", "ABC", "1d").parent.name == "symbol=ABC"  # hive partition by symbol


def test_merge_is_an_upsert(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    df = bars(60)
    store.write("upload", "ABC", "1d", df.iloc[:40])
    newer = df.iloc[30:].copy()
    newer.loc[newer.index[0], "close"] = 123.0  # overlapping bar: the new one wins
    entry = store.merge("upload", "ABC", "1d", newer)
    back = store.read("upload", "ABC", "1d")
    assert entry.rows == 60 and len(back) == 60
    assert back.loc[30, "close"] == 123.0 and back.loc[29, "close"] == df.loc[29, "close"]


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 40, "A B"])
def test_bad_symbols_never_reach_a_path(tmp_path: Path, bad: str) -> None:
    store = new_store(tmp_path)
    before = snapshot(store)
    with pytest.raises(DataError):
        store.write("upload", bad, "1d", bars(5))
    with pytest.raises(DataError):
        store.write("../up", "ABC", "1d", bars(5))
    with pytest.raises(DataError):
        store.write_many("upload", "1d", {"ABC": bars(5), bad: bars(5)})
    assert snapshot(store) == before


def test_failed_write_leaves_previous_data(tmp_path: Path, monkeypatch) -> None:
    store = new_store(tmp_path)
    store.write("upload", "ABC", "1d", bars(20, seed=1))
    before = snapshot(store)
    import pyarrow.parquet as pq

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        store.write("upload", "ABC", "1d", bars(30, seed=2))
    assert snapshot(store) == before  # no temp file left, old file and catalog intact


def test_load_panel_aligns_without_filling(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    a, b = bars(30, seed=3), bars(30, seed=4)
    b = b.drop(index=[5, 6, 7])
    store.write("upload", "AAA", "1d", a)
    store.write("upload", "BBB", "1d", b)
    panel = store.load_panel("upload", ["AAA", "BBB"], "1d")
    assert panel.close.shape == (30, 2)
    assert np.isnan(panel.close[5:8, 1]).all() and not np.isnan(panel.close[:, 0]).any()
    cut = store.load_panel("upload", ["AAA"], "1d", start=a.timestamp[10], end=str(a.timestamp[19].date()))
    assert cut.n_bars == 10
    with pytest.raises(DataError, match="CCC"):
        store.load_panel("upload", ["AAA", "CCC"], "1d")


def test_adjusted_columns_are_used_when_asked(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    df = bars(10)
    for f in ("open", "high", "low", "close", "volume"):
        df[f"adj_{f}"] = df[f] / 2
    store.write("tiingo", "ABC", "1d", df)
    assert np.allclose(store.load_panel("tiingo", ["ABC"], adjusted=True).close[:, 0], df.close / 2)
    assert np.allclose(store.load_panel("tiingo", ["ABC"], adjusted=False).close[:, 0], df.close)


def test_synthetic_is_deterministic_and_prefix_stable() -> None:
    short, long = symbol_bars("XYZ", 100), symbol_bars("XYZ", 300)
    assert np.array_equal(short, long[:, :100])
    assert not np.array_equal(symbol_bars("XYZ", 100), symbol_bars("XYW", 100))
    b = symbol_bars("XYZ", 300)
    o, h, lo, c, v = b
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all() and (v >= 0).all()
    src = SyntheticSource()
    one = src.fetch("SYN123", pd.Timestamp("2012-01-01", tz="UTC"), pd.Timestamp("2012-12-31", tz="UTC"), "1d")
    two = src.fetch("SYN123", None, pd.Timestamp("2015-06-30", tz="UTC"), "1d")
    merged = two.set_index("timestamp").loc[one.timestamp]
    assert np.array_equal(merged["close"].to_numpy(), one["close"].to_numpy())


def test_spec_without_data_runs_on_the_demo_store(tmp_path: Path) -> None:
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)})
    res = run_backtest({"strategy": "sma_crossover", "params": {"fast": 10, "slow": 40}}, settings=settings,
                       backend="cpu")
    assert res.info["n_symbols"] == len(DEMO_SYMBOLS)
    assert res.info["start"].startswith("2010-01-01") and res.info["end"].startswith("2019-12-31")
    again = run_backtest({"strategy": "sma_crossover", "params": {"fast": 10, "slow": 40}}, settings=settings,
                         backend="cpu")
    pd.testing.assert_frame_equal(res.table, again.table)
    sub = run_backtest({"strategy": "buy_and_hold", "symbols": ["SYN500"], "start": "2011-01-01",
                        "end": "2011-12-31", "source": "synthetic"}, settings=settings, backend="cpu")
    assert sub.info["n_bars"] == len(pd.bdate_range("2011-01-01", "2011-12-31"))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"strategy": "buy_and_hold", "source": "nope"}, "source"),
        ({"strategy": "buy_and_hold", "source": "synthetic", "frequency": "1h"}, "frequency"),
        ({"strategy": "buy_and_hold", "source": "synthetic", "symbols": ["../etc"]}, "symbols[0]"),
    ],
)
def test_store_spec_errors(tmp_path: Path, spec, field) -> None:
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)})
    with pytest.raises(SpecError) as info:
        run_backtest(spec, settings=settings, backend="cpu")
    assert info.value.path == field


def test_service_lists_sources_and_symbols(tmp_path: Path) -> None:
    svc = MarketDataService(Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)}), default_registry())
    names = {s["name"] for s in svc.describe_sources()}
    assert {"synthetic"} <= names
    svc.fetch("synthetic", ["SYN100", "SYN101"], end="2012-12-31")
    entries = svc.symbols("synthetic")
    assert [e.symbol for e in entries] == ["SYN100", "SYN101"]
    assert [e.symbol for e in svc.symbols("synthetic", limit=1, offset=1)] == ["SYN101"]


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_BACKTEST_DATA_DIR": str(tmp_path / "store")}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def test_data_commands(tmp_path: Path) -> None:
    r = cli(tmp_path, "data", "sources")
    assert r.returncode == 0 and "synthetic" in r.stdout
    r = cli(tmp_path, "data", "fetch", "--source", "synthetic", "SYN100", "SYN101", "--end", "2011-12-31")
    assert r.returncode == 0, r.stderr
    r = cli(tmp_path, "data", "symbols", "--source", "synthetic", "--json")
    assert [e["symbol"] for e in json.loads(r.stdout)] == ["SYN100", "SYN101"]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"strategy": "sma_crossover", "params": {"fast": 5, "slow": 20},
                                "symbols": ["SYN100"], "start": "2011-01-01", "end": "2011-12-31"}))
    r = cli(tmp_path, "run", str(spec), "--source", "synthetic", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["info"]["n_bars"] == len(pd.bdate_range("2011-01-01", "2011-12-31"))
    r = cli(tmp_path, "data", "fetch", "--source", "nope", "AAA")
    assert r.returncode == 2 and "unknown data source" in r.stderr
    r = cli(tmp_path, "data", "fetch", "--source", "synthetic", "../../x")
    assert r.returncode == 2 and "invalid symbol" in r.stderr


def test_adj_close_only_adjusts_open_high_low_by_the_same_factor(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    df = bars(10, seed=9)
    df["adj_close"] = df["close"] * np.linspace(0.5, 1.0, 10)
    store.write("upload", "ABC", "1d", df)
    p = store.load_panel("upload", ["ABC"], adjusted=True)
    factor = df["adj_close"] / df["close"]
    np.testing.assert_allclose(p.open[:, 0], df["open"] * factor)
    np.testing.assert_allclose(p.low[:, 0], df["low"] * factor)
    np.testing.assert_allclose(p.close[:, 0], df["adj_close"])
    np.testing.assert_allclose(p.volume[:, 0], df["volume"])


def test_data_import_command(tmp_path: Path) -> None:
    good = tmp_path / "XYZ.csv"
    bars(30, seed=11).rename(columns={"timestamp": "Date"}).to_csv(good, index=False)
    r = cli(tmp_path, "data", "import", str(good))
    assert r.returncode == 0, r.stderr
    assert "XYZ" in cli(tmp_path, "data", "symbols", "--source", "upload").stdout
    bad = tmp_path / "BAD.csv"
    frame = bars(5, seed=12)
    frame.loc[2, "high"] = frame.loc[2, "low"] / 2
    frame.to_csv(bad, index=False)
    r = cli(tmp_path, "data", "import", str(bad))
    assert r.returncode == 2 and "row 3" in r.stderr and "high" in r.stderr
    r = cli(tmp_path, "data", "import", str(good), "--symbol", "../evil")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize("n", [2, 70])  # a few symbols: one listing each; many: one listing of the prefix
def test_failed_write_many_leaves_every_file_as_it_was(tmp_path: Path, monkeypatch, n: int) -> None:
    store = new_store(tmp_path)
    other = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'other.sqlite'}")
    other.write("upload", "AAA", "1d", bars(10, seed=1))  # on the root, but not in this store's catalog
    before = other.read("upload", "AAA", "1d")
    files_before = snapshot(store)[0]
    real = store._write_file

    def failing(source, symbol, frequency, table):
        if symbol == "ZZZ":
            raise OSError("disk full")
        return real(source, symbol, frequency, table)

    monkeypatch.setattr(store, "_write_file", failing)
    frames = {"AAA": bars(5, seed=2), "ZZZ": bars(5), **{f"S{i:03d}": bars(5) for i in range(n - 2)}}
    with pytest.raises(OSError, match="disk full"):
        store.write_many("upload", "1d", frames)
    pd.testing.assert_frame_equal(other.read("upload", "AAA", "1d"), before)
    assert snapshot(store)[0] == files_before and store.catalog() == []
