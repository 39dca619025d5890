"""A backtest on Tiingo symbols through the data store: fetched on first use, cached after,
refreshed incrementally — against the local fake Tiingo server."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_tiingo import FakeTiingo, daily_frame

from gpu_backtest import run_backtest
from gpu_backtest.core.config import Settings
from gpu_backtest.plugins.manager import PluginRegistry, build_plugin_manager


def price_requests(fake: FakeTiingo) -> list[dict[str, str]]:
    return [r.query for r in fake.requests if r.path.endswith("/prices")]


def test_backtest_fetches_then_reuses_then_extends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeTiingo() as fake:
        monkeypatch.setenv("TIINGO_API_KEY", fake.token)
        monkeypatch.setenv("TIINGO_API_URL", fake.url)
        settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)})
        pm = build_plugin_manager()
        spec = {"strategy": "sma_crossover", "params": {"fast": 3, "slow": 10}, "source": "tiingo",
                "symbols": ["AAPL", "MSFT"], "start": "2015-01-02", "end": "2015-03-31"}
        first = run_backtest(spec, settings=settings, backend="cpu", pm=pm)
        assert len(price_requests(fake)) == 2  # one per symbol
        want = daily_frame("AAPL")
        want = want[(want.timestamp >= "2015-01-02") & (want.timestamp <= "2015-03-31T23:59:59Z")]
        assert first.info["n_bars"] == len(want)
        # adjusted prices (the default) are what the engine ran on: buy and hold equals the adjClose path
        bh = run_backtest({**spec, "strategy": "buy_and_hold", "params": {}, "symbols": ["AAPL"]},
                          settings=settings, backend="cpu", pm=pm)
        expected = want["adj_close"].iloc[-1] / want["adj_close"].iloc[0] - 1
        assert bh.table["total_return"].iloc[0] == pytest.approx(expected, rel=1e-9)
        assert len(price_requests(fake)) == 2  # the cache served the second run
        run_backtest({**spec, "end": "2015-06-30"}, settings=settings, backend="cpu", pm=pm)
        new = price_requests(fake)[2:]
        assert len(new) == 2
        assert all(q["startDate"] > "2015-03-31" for q in new), new  # only the new dates were asked for
        again = run_backtest(spec, settings=settings, backend="cpu", pm=pm)
        np.testing.assert_allclose(again.table["final_equity"], first.table["final_equity"], rtol=1e-12)


def test_symbols_are_stored_in_the_sources_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeTiingo() as fake:
        monkeypatch.setenv("TIINGO_API_KEY", fake.token)
        monkeypatch.setenv("TIINGO_API_URL", fake.url)
        settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)})
        pm = build_plugin_manager()
        spec = {"strategy": "buy_and_hold", "source": "tiingo", "symbols": ["brk.a", "BRK-A", "aapl"],
                "start": "2015-01-02", "end": "2015-02-27", "metrics": {"benchmark": "spy"}}
        res = run_backtest(spec, settings=settings, backend="cpu", pm=pm)
        assert sorted(res.table["symbol"]) == ["AAPL", "BRK-A"]
        assert res.table["beta"].notna().all()
        from gpu_backtest.core.dataservice import MarketDataService

        stored = [e.symbol for e in MarketDataService(settings, PluginRegistry(pm)).symbols("tiingo")]
        assert stored == ["AAPL", "BRK-A", "SPY"]


def test_a_spec_without_dates_runs_on_the_default_range_of_its_frequency(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Intraday: the last 30 days (a few IEX requests); daily: the last 10 years."""
    from gpu_backtest.core.errors import DataError

    with FakeTiingo() as fake:
        monkeypatch.setenv("TIINGO_API_KEY", fake.token)
        monkeypatch.setenv("TIINGO_API_URL", fake.url)
        settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)})
        pm = build_plugin_manager()
        spec = {"strategy": "buy_and_hold", "source": "tiingo", "symbols": ["AAPL"], "frequency": "5min"}
        today = pd.Timestamp.now(tz="UTC").normalize()
        res = run_backtest(spec, settings=settings, backend="cpu", pm=pm)
        days = {today.strftime("%Y-%m-%d"), pd.Timestamp.now(tz="UTC").normalize().strftime("%Y-%m-%d")}
        iex = price_requests(fake)
        assert 1 <= len(iex) <= 2 and all(q["resampleFreq"] == "5min" for q in iex), iex
        first = pd.Timestamp(iex[0]["startDate"], tz="UTC")
        assert first + pd.Timedelta(days=30) in {pd.Timestamp(d, tz="UTC") for d in days}, iex
        assert iex[-1]["endDate"] in days
        assert pd.Timestamp(res.info["start"]) >= first and res.info["n_bars"] > 15 * 78

        fake.requests.clear()
        with pytest.raises(DataError):  # the fake has daily bars of 2015 only: nothing in the last 10 years
            run_backtest({**spec, "frequency": "1d"}, settings=settings, backend="cpu", pm=pm)
        (daily,) = price_requests(fake)
        start = pd.Timestamp(daily["startDate"], tz="UTC")
        assert start + pd.DateOffset(years=10) in {pd.Timestamp(d, tz="UTC") for d in days}, daily
