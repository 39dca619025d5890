"""core/timeutil.py: UTC conversion, the end-of-day rules and their callers (store, panel, Tiingo)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpu_backtest.core.marketdata import MarketDataStore
from gpu_backtest.core.panel import MarketPanel
from gpu_backtest.core.timeutil import end_bound_utc, to_utc, to_utc_or_none, utc_now


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


LAST_NS = pd.Timedelta(days=1) - pd.Timedelta(1, "ns")


def test_to_utc() -> None:
    assert to_utc("2020-01-02") == utc("2020-01-02") and str(to_utc("2020-01-02").tz) == "UTC"
    assert to_utc("2020-01-02T09:30:00-05:00") == utc("2020-01-02 14:30")
    assert to_utc(dt.datetime(2020, 1, 2, 3)) == utc("2020-01-02 03:00")
    assert to_utc(pd.Timestamp("2020-01-02", tz="Asia/Tokyo")) == utc("2020-01-01 15:00")
    assert to_utc(np.datetime64("2020-01-02T03:04")) == utc("2020-01-02 03:04")
    assert to_utc(None) is pd.NaT
    assert to_utc_or_none(None) is None and to_utc_or_none("2020-01-02") == utc("2020-01-02")
    with pytest.raises(ValueError):
        to_utc("not a date")


def test_utc_now() -> None:
    before = dt.datetime.now(dt.UTC)
    now = utc_now()
    assert now.tzinfo is dt.UTC and before <= now <= dt.datetime.now(dt.UTC)


# value → (store rule: bare_date, panel rule: bare_date+midnight, Tiingo rule: midnight)
END_CASES = {
    "2020-01-02": (utc("2020-01-02") + LAST_NS,) * 3,
    "2020-01": (utc("2020-01-01") + LAST_NS,) * 3,
    # a short string at a time of day: only the store's rule moves it
    "1/2/20 5pm": (utc("2020-01-03 16:59:59.999999999"), utc("2020-01-02 17:00"), utc("2020-01-02 17:00")),
    # a longer string at midnight: only the Tiingo rule (any midnight) moves it
    "2020-01-02T00:00:00": (utc("2020-01-02"), utc("2020-01-02"), utc("2020-01-02") + LAST_NS),
    "2020-01-02T00:00:00+01:00": (utc("2020-01-01 23:00"),) * 3,
}


@pytest.mark.parametrize("value", list(END_CASES))
def test_end_bound_rules(value: str) -> None:
    store, panel, tiingo = END_CASES[value]
    assert end_bound_utc(value) == store
    assert end_bound_utc(value, midnight=True) == panel
    assert end_bound_utc(value, bare_date=False, midnight=True) == tiingo


def test_end_bound_of_timestamps() -> None:
    midnight, later = utc("2020-01-02"), utc("2020-01-02 15:00")
    assert end_bound_utc(midnight) == midnight and end_bound_utc(midnight, midnight=True) == midnight
    assert end_bound_utc(midnight, bare_date=False, midnight=True) == midnight + LAST_NS
    assert end_bound_utc(later, bare_date=False, midnight=True) == later
    with pytest.raises(ValueError):
        end_bound_utc("2020-01-02", bare_date=False)


def _hourly() -> pd.DataFrame:
    ts = pd.date_range("2020-01-01", "2020-01-04 23:00", freq="h", tz="UTC")
    px = np.linspace(10.0, 20.0, len(ts))
    return pd.DataFrame({"timestamp": ts, "open": px, "high": px + 1, "low": px - 1, "close": px,
                         "volume": np.ones(len(ts))})


def test_store_and_panel_callers(tmp_path: Path) -> None:
    frame = _hourly()
    store = MarketDataStore(tmp_path, f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    store.write("upload", "AAA", "1h", frame)
    panel = MarketPanel.from_long(frame.assign(symbol="AAA"))
    # a bare date covers its day, for both
    assert store.read("upload", "AAA", "1h", end="2020-01-02")["timestamp"].iloc[-1] == utc("2020-01-02 23:00")
    assert store.load_panel("upload", ["AAA"], "1h", end="2020-01-02").index[-1] == utc("2020-01-02 23:00")
    assert panel.select(end="2020-01-02").index[-1] == utc("2020-01-02 23:00")
    # a short string at 17:00: the store adds a day, the panel takes the instant
    assert store.read("upload", "AAA", "1h", end="1/2/20 5pm")["timestamp"].iloc[-1] == utc("2020-01-03 16:00")
    assert store.load_panel("upload", ["AAA"], "1h", end="1/2/20 5pm").index[-1] == utc("2020-01-03 16:00")
    assert panel.select(end="1/2/20 5pm").index[-1] == utc("2020-01-02 17:00")
    # timestamps and long strings are taken as they are by both
    for end in (utc("2020-01-02"), "2020-01-02T00:00:00"):
        assert store.read("upload", "AAA", "1h", end=end)["timestamp"].iloc[-1] == utc("2020-01-02")
        assert panel.select(end=end).index[-1] == utc("2020-01-02")
    # starts are plain UTC conversions
    assert panel.select(start="2020-01-02T09:00:00+09:00").index[0] == utc("2020-01-02")
    assert store.read("upload", "AAA", "1h", start="2020-01-03")["timestamp"].iloc[0] == utc("2020-01-03")
