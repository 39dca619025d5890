"""Annualisation follows the market the bars come from (core/annualisation.py, docs/metrics.md):
252 for daily bars of a 5-day market, 365 of a 7-day one, bars per trading day × trading days
intraday, the observed rate for other weeks; the spec's value wins; the result's info says which."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.tseries.holiday import USFederalHolidayCalendar
from pandas.tseries.offsets import CustomBusinessDay

from gpu_backtest import run_backtest
from gpu_backtest.core.annualisation import annualise
from gpu_backtest.core.panel import MarketPanel, infer_periods_per_year
from gpu_backtest.core.synthetic import gbm_bars

SPEC = {"strategy": "sma_crossover", "params": {"fast": 5, "slow": 20}, "output": {"top_k": 0}}


def observed_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per year as observed: bars ÷ the sample's length in years."""
    spacing = pd.Series(index).diff().median()
    return len(index) / ((index[-1] - index[0] + spacing) / pd.Timedelta(days=365.25))


def us_sessions(start: str, end: str) -> pd.DatetimeIndex:
    """NYSE-like trading dates: weekdays less the US federal holidays."""
    return pd.date_range(start, end, freq=CustomBusinessDay(calendar=USFederalHolidayCalendar()), tz="UTC")


def fx_hours(start: str, end: str) -> pd.DatetimeIndex:
    """Hourly bars of a 24-hour, 5-day market as backtesting.py's EURUSD: Sunday 22:00 to Friday 21:00 UTC."""
    h = pd.date_range(start, end, freq="h", tz="UTC")
    dow, hour = h.day_of_week, h.hour
    open_ = (dow < 4) | ((dow == 4) & (hour <= 21)) | ((dow == 6) & (hour >= 22))
    return h[open_]


def run_info(index: pd.DatetimeIndex, spec: dict | None = None) -> dict:
    frame = gbm_bars(["AAA", "BBB"], index, seed=7)
    return run_backtest(spec or SPEC, frame, backend="cpu").info


def test_daily_bars_of_a_5_day_market_get_252() -> None:
    index = us_sessions("2015-01-01", "2018-12-31")
    info = run_info(index)
    assert info["periods_per_year"] == 252
    a = info["annualisation"]
    assert a == {"periods_per_year": 252.0, "bars_per_day": 1.0, "days_per_year": 252.0, "rule": "5-day week",
                 "why": a["why"]}
    assert "5-day" in a["why"]
    assert infer_periods_per_year(pd.bdate_range("2020-01-01", periods=500, tz="UTC")) == 252


def test_daily_bars_of_a_market_open_every_day_get_365() -> None:
    index = pd.date_range("2021-01-01", "2022-12-31", freq="D", tz="UTC")  # crypto
    info = run_info(index)
    assert info["periods_per_year"] == 365
    assert info["annualisation"]["rule"] == "7-day week"
    assert info["annualisation"]["days_per_year"] == 365


def test_hourly_bars_of_a_24_hour_5_day_market_follow_the_bars_observed() -> None:
    index = fx_hours("2017-04-19 09:00", "2018-02-07 15:00")
    info = run_info(index)
    obs = observed_per_year(index)
    assert 6000 < obs < 6400
    assert info["periods_per_year"] == pytest.approx(obs, rel=0.05)  # was 1,512 (252 × a 6.5-hour session)
    a = info["annualisation"]
    assert a["periods_per_year"] == info["periods_per_year"]
    assert a["bars_per_day"] * a["days_per_year"] == pytest.approx(a["periods_per_year"], rel=1e-3)
    assert a["why"]


def test_hourly_fx_without_sunday_bars_is_within_5_percent_too() -> None:
    h = pd.date_range("2019-01-07", "2019-12-27 23:00", freq="h", tz="UTC")
    index = h[h.day_of_week < 5]  # Monday 00:00 to Friday 23:00: 24 × a 5-day week
    a = annualise(index)
    assert (a.rule, a.periods_per_year) == ("5-day week", 24 * 252)
    assert a.periods_per_year == pytest.approx(observed_per_year(index), rel=0.05)


def test_backtesting_py_eurusd() -> None:
    bt_test = pytest.importorskip("backtesting.test")
    eurusd = bt_test.EURUSD
    index = pd.DatetimeIndex(eurusd.index).tz_localize("UTC")
    frame = eurusd.rename(columns=str.lower).assign(symbol="EURUSD").rename_axis("timestamp").reset_index()
    frame["timestamp"] = index
    info = run_backtest(SPEC, frame, backend="cpu").info
    assert info["periods_per_year"] == pytest.approx(observed_per_year(index), rel=0.05)
    assert len(index) / info["periods_per_year"] == pytest.approx((index[-1] - index[0]).days / 365.25, rel=0.05)


def test_us_equity_hourly_bars_get_7_times_252() -> None:
    days = us_sessions("2019-01-01", "2019-12-31")
    index = days.repeat(7) + np.tile(pd.to_timedelta(np.arange(7), unit="h"), len(days)) + pd.Timedelta("14h30min")
    info = run_info(index)
    assert info["periods_per_year"] == 7 * 252
    assert info["annualisation"]["bars_per_day"] == 7


def test_minute_bars_of_a_us_session() -> None:
    days = us_sessions("2020-02-03", "2020-03-31")
    offsets = pd.to_timedelta(np.arange(390), unit="min") + pd.Timedelta(hours=14, minutes=30)
    index = days.repeat(390) + np.tile(offsets, len(days))
    a = annualise(index)
    assert (a.rule, a.bars_per_day, a.periods_per_year) == ("5-day week", 390, 390 * 252)
    crypto = pd.date_range("2024-01-01", periods=60 * 24 * 30, freq="min", tz="UTC")
    assert annualise(crypto).periods_per_year == 1440 * 365


def test_short_samples_read_the_week_from_saturdays() -> None:
    one_day = pd.date_range("2024-03-05 14:30", periods=7, freq="h", tz="UTC")
    assert annualise(one_day).periods_per_year == 7 * 252
    assert annualise(one_day).rule == "short sample"
    ten_days = pd.date_range("2024-03-01", periods=10, freq="D", tz="UTC")  # has a Saturday
    assert annualise(ten_days).periods_per_year == 365
    two_weeks = pd.bdate_range("2024-03-01", periods=10, tz="UTC")
    assert annualise(two_weeks).periods_per_year == 252
    assert annualise(one_day[:1]).periods_per_year == 252


def test_weekly_and_monthly_bars() -> None:
    assert annualise(pd.date_range("2010-01-01", periods=200, freq="W-FRI", tz="UTC")).periods_per_year == 52
    assert annualise(pd.date_range("2010-01-01", periods=60, freq="MS", tz="UTC")).periods_per_year == 12


def test_the_spec_value_wins() -> None:
    index = fx_hours("2020-01-05 22:00", "2020-06-30")
    info = run_info(index, {**SPEC, "metrics": {"periods_per_year": 1000}})
    assert info["periods_per_year"] == 1000
    assert info["annualisation"]["rule"] == "spec"
    frame = gbm_bars(["AAA"], index, seed=1)
    assert MarketPanel.from_long(frame).periods_per_year() == pytest.approx(observed_per_year(index), rel=0.05)
