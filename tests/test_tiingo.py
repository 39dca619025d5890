"""The Tiingo data source against a local fake Tiingo server (tests/fake_tiingo.py); no real network.

Covers: daily bars (raw + adjusted, both date formats), IEX intraday with volume (and request
windows), metadata, ticker normalisation and validation, 404 / 401 / no key, 429 then success
(with and without Retry-After), persistent 5xx, timeouts, refused connections, 200 bodies that
are not a list, incremental `ensure()` into a real MarketDataStore, the concurrency limit, and
the sync API from inside a running event loop.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_tiingo import FakeTiingo, daily_frame, iex_bar, iex_bars

from gpu_backtest.core.errors import ConfigError, DataError
from gpu_backtest.core.marketdata import MarketDataStore
from gpu_backtest.plugins.datasources import tiingo
from gpu_backtest.plugins.datasources.base import FetchRange
from gpu_backtest.plugins.datasources.tiingo import (
    TiingoAuthError,
    TiingoError,
    TiingoNotFoundError,
    TiingoRateLimitError,
    TiingoResponseError,
    TiingoSource,
)

UTC = "UTC"


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


@pytest.fixture
def fake() -> Iterator[FakeTiingo]:
    with FakeTiingo() as server:
        yield server


def source(fake: FakeTiingo, **kw: object) -> TiingoSource:
    opts: dict = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0, **kw}
    token = opts.pop("token", fake.token)
    return TiingoSource(token, fake.url, **opts)


def expected(ticker: str, start: str, end: str) -> pd.DataFrame:
    df = daily_frame(ticker)
    df = df[(df["timestamp"] >= ts(start)) & (df["timestamp"] <= ts(end))]
    return df.reset_index(drop=True)


# -- daily ------------------------------------------------------------------------------------------
def test_daily_fetch_raw_and_adjusted_equal_what_was_served(fake: FakeTiingo) -> None:
    frame = source(fake).fetch("AAPL", ts("2015-01-02"), ts("2015-02-27"), "1d")
    want = expected("AAPL", "2015-01-02", "2015-02-27")
    assert list(frame.columns) == ["timestamp", "open", "high", "low", "close", "volume", "adj_open", "adj_high",
                                   "adj_low", "adj_close", "adj_volume", "dividend", "split"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    pd.testing.assert_frame_equal(frame, want)
    # the split on day 40 and the dividend on day 60 survive; adjusted differs from raw before them
    assert frame["split"].max() == 2.0 and (frame["adj_close"] < frame["close"]).all()
    for col in frame.columns[1:]:
        assert frame[col].dtype == np.float64
    (req,) = fake.requests
    assert req.path == "/tiingo/daily/AAPL/prices"
    assert req.query == {"startDate": "2015-01-02", "endDate": "2015-02-27", "resampleFreq": "daily"}
    assert req.headers["Authorization"] == "Token test-token"
    assert req.headers["Content-Type"] == "application/json"


def test_both_date_formats_parse_to_utc_midnight(fake: FakeTiingo) -> None:
    frame = source(fake).fetch("MSFT", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert list(frame["timestamp"]) == list(pd.bdate_range("2015-01-02", "2015-01-09", tz=UTC))


def test_full_history_without_start_and_end_bound_inclusive(fake: FakeTiingo) -> None:
    src = source(fake)
    frame = src.fetch("SPY", None, None, "1d")
    pd.testing.assert_frame_equal(frame, daily_frame("SPY"))
    assert fake.requests[-1].query["startDate"] == "1900-01-01" and "endDate" not in fake.requests[-1].query
    # an end with a time of day keeps the bar of that day; a start mid-day drops it
    frame = src.fetch("SPY", ts("2015-01-05 12:00"), ts("2015-01-07 12:00"), "1d")
    assert list(frame["timestamp"]) == [ts("2015-01-06"), ts("2015-01-07")]


def test_ticker_normalised_and_validated(fake: FakeTiingo) -> None:
    src = source(fake)
    got = src.fetch_many(["brk.a", "BRK-A"], ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert set(got) == {"brk.a", "BRK-A"}
    assert fake.paths() == ["/tiingo/daily/BRK-A/prices"]  # one request for the two spellings
    pd.testing.assert_frame_equal(got["brk.a"], expected("BRK-A", "2015-01-02", "2015-01-09"))
    for bad in ["../etc/passwd", "AAPL/prices", "A B", "", "X" * 40, "AAPL?x=1", "A%2F"]:
        with pytest.raises(DataError, match="invalid ticker"):
            src.fetch(bad, None, None, "1d")
    assert len(fake.requests) == 1


def test_unsupported_frequency(fake: FakeTiingo) -> None:
    with pytest.raises(DataError, match="not '1w'"):
        source(fake).fetch("AAPL", None, None, "1w")
    assert fake.requests == []


def test_start_after_end_asks_nothing(fake: FakeTiingo) -> None:
    frame = source(fake).fetch("AAPL", ts("2015-03-01"), ts("2015-02-01"), "1d")
    assert frame.empty and "adj_close" in frame.columns and fake.requests == []


# -- IEX intraday -----------------------------------------------------------------------------------
def test_iex_intraday_with_volume(fake: FakeTiingo) -> None:
    frame = source(fake).fetch("aapl", ts("2015-03-02"), ts("2015-03-03"), "5min")
    (req,) = fake.requests
    assert req.path == "/iex/AAPL/prices"
    assert req.query == {"startDate": "2015-03-02", "endDate": "2015-03-03", "resampleFreq": "5min",
                         "columns": "open,high,low,close,volume"}
    stamps = iex_bars("AAPL", "2015-03-02", "2015-03-03", 5)
    assert len(frame) == 2 * 78 and list(frame["timestamp"]) == stamps
    assert list(frame.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    for i in (0, 1, 77, 78, 155):
        bar = iex_bar("AAPL", stamps[i])
        assert frame.loc[i, ["open", "high", "low", "close", "volume"]].tolist() == [
            bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]]
    assert frame["volume"].notna().all()


def test_iex_hourly_name_and_request_windows(fake: FakeTiingo) -> None:
    src = source(fake)
    frame = src.fetch("SPY", ts("2015-03-02 15:00"), ts("2015-03-04"), "1h")
    assert fake.requests[0].query["resampleFreq"] == "1hour"
    assert frame["timestamp"].iloc[0] == ts("2015-03-02 15:30")  # 14:30 is before the start
    assert frame["timestamp"].iloc[-1] == ts("2015-03-04 20:30")  # a bare end date includes its day
    fake.requests.clear()
    frame = src.fetch("SPY", ts("2015-03-02"), ts("2015-03-20"), "1min")  # 7 calendar days per request
    assert [(r.query["startDate"], r.query["endDate"]) for r in fake.requests] == [
        ("2015-03-02", "2015-03-08"), ("2015-03-09", "2015-03-15"), ("2015-03-16", "2015-03-20")]
    assert len(frame) == 15 * 390 and frame["timestamp"].is_monotonic_increasing


def test_iex_unknown_ticker(fake: FakeTiingo) -> None:
    with pytest.raises(TiingoNotFoundError, match="unknown ticker MSFT"):
        source(fake).fetch("MSFT", ts("2015-03-02"), ts("2015-03-02"), "5min")


# -- metadata ---------------------------------------------------------------------------------------
def test_metadata(fake: FakeTiingo) -> None:
    meta = source(fake).metadata("brk.a")
    assert fake.paths() == ["/tiingo/daily/BRK-A"]
    assert meta.ticker == "BRK-A" and meta.name == "BRK-A Holdings Inc" and meta.exchange_code == "NASDAQ"
    assert meta.start_date == ts("2015-01-02") and meta.end_date == ts("2015-06-30")
    assert meta.to_dict() == {"ticker": "BRK-A", "name": "BRK-A Holdings Inc", "exchange_code": "NASDAQ",
                              "start_date": "2015-01-02", "end_date": "2015-06-30",
                              "description": "The fake company behind BRK-A."}
    with pytest.raises(TiingoNotFoundError, match="unknown ticker NOPE"):
        source(fake).metadata("NOPE")


# -- errors -----------------------------------------------------------------------------------------
def test_unknown_ticker_is_404_not_retried(fake: FakeTiingo) -> None:
    with pytest.raises(TiingoNotFoundError) as info:
        source(fake).fetch("ZZZZ", ts("2015-01-02"), ts("2015-01-09"), "1d")
    err = info.value
    assert isinstance(err, DataError) and err.status == 404 and err.source == "ZZZZ"
    assert "unknown ticker ZZZZ" in err.message and "not found" in err.message
    assert len(fake.requests) == 1


def test_bad_key_is_401(fake: FakeTiingo) -> None:
    with pytest.raises(TiingoAuthError, match="Tiingo rejected the API key") as info:
        source(fake, token="wrong").fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert isinstance(info.value, DataError)
    assert len(fake.requests) == 1
    assert fake.requests[0].headers["Authorization"] == "Token wrong"


def test_bad_key_stops_a_batch(fake: FakeTiingo) -> None:
    syms = [f"T{i:02d}" for i in range(20)]
    with pytest.raises(TiingoAuthError, match="rejected the API key"):
        source(fake, token="wrong", concurrency=2).fetch_many(syms, ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert len(fake.requests) < len(syms)


def test_no_key(fake: FakeTiingo) -> None:
    for src in (TiingoSource(None, fake.url), TiingoSource.from_env({"TIINGO_API_URL": fake.url})):
        assert src.schema()["configured"] is False
        with pytest.raises(DataError, match="TIINGO_API_KEY is not set"):
            src.fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
        with pytest.raises(DataError, match="TIINGO_API_KEY is not set"):
            src.metadata("AAPL")
    assert fake.requests == []


def test_429_then_success_retries(fake: FakeTiingo) -> None:
    fake.fail(429)
    frame = source(fake).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    pd.testing.assert_frame_equal(frame, expected("AAPL", "2015-01-02", "2015-01-09"))
    assert fake.paths() == ["/tiingo/daily/AAPL/prices"] * 2
    assert fake.requests[0].query == fake.requests[1].query


def test_429_honours_retry_after(fake: FakeTiingo) -> None:
    fake.fail(429, retry_after="1")
    t0 = time.monotonic()
    frame = source(fake).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert time.monotonic() - t0 >= 0.9
    assert len(frame) == 6 and len(fake.requests) == 2


def test_429_with_too_long_retry_after_fails_at_once(fake: FakeTiingo) -> None:
    fake.fail(429, retry_after="3600")
    with pytest.raises(TiingoRateLimitError, match="retry AAPL after 3600 s"):
        source(fake).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert len(fake.requests) == 1


def test_429_every_time_gives_up(fake: FakeTiingo) -> None:
    fake.fail(429, times=10)
    with pytest.raises(TiingoRateLimitError, match="after 3 attempts: HTTP 429"):
        source(fake, max_attempts=3).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert len(fake.requests) == 3


def test_5xx_retried_then_clear_error(fake: FakeTiingo) -> None:
    fake.fail(503)
    fake.fail(500)
    frame = source(fake).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert len(frame) == 6 and len(fake.requests) == 3
    fake.requests.clear()
    fake.fail(502, times=10)
    with pytest.raises(TiingoError, match="AAPL failed after 4 attempts: HTTP 502"):
        source(fake).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert len(fake.requests) == 4


def test_other_4xx_not_retried(fake: FakeTiingo) -> None:
    fake.fail(400, body='{"detail": "Error: startDate is malformed"}')
    with pytest.raises(TiingoError, match="HTTP 400 for AAPL: Error: startDate is malformed"):
        source(fake).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert len(fake.requests) == 1


def test_timeout_retried_then_error(fake: FakeTiingo) -> None:
    fake.delay = 0.5
    with pytest.raises(TiingoError, match="after 2 attempts: request timed out"):
        source(fake, timeout=0.1, max_attempts=2).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert len(fake.requests) == 2


def test_connection_refused_retried_then_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = TiingoSource("k", f"http://127.0.0.1:{port}", backoff_base=0.01, max_attempts=2)
    with pytest.raises(TiingoError, match="after 2 attempts: request failed"):
        src.fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")


@pytest.mark.parametrize(("body", "ctype", "match"), [
    ('{"detail": "Error: You do not have permission to access the IEX API"}', "application/json",
     "did not answer a price list for AAPL: Error: You do not have permission"),
    ('{"date": "2015-01-02"}', "application/json", r"did not answer a price list for AAPL \(got dict"),
    ("<html><body>Service temporarily down</body></html>", "text/html", "non-JSON for AAPL"),
    ('[{"open": 1}]', "application/json", "unexpected row for AAPL"),
    ('[{"date": "2015-01-02T00:00:00.000Z", "open": 1, "high": 2, "low": 0.5}]', "application/json",
     "lacks close"),
    ('[{"date": "yesterday", "open": 1, "high": 2, "low": 0.5, "close": 1}]', "application/json",
     "unreadable prices for AAPL"),
])
def test_200_with_unexpected_body_is_an_error(fake: FakeTiingo, body: str, ctype: str, match: str) -> None:
    fake.override("/tiingo/daily/AAPL/prices", body, content_type=ctype)
    with pytest.raises(TiingoResponseError, match=match):
        source(fake).fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert len(fake.requests) == 1


def test_several_failures_reported_together(fake: FakeTiingo) -> None:
    with pytest.raises(TiingoError, match="2 of 3 symbols failed") as info:
        source(fake).fetch_many(["AAPL", "NOPE1", "NOPE2"], ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert sorted(p["symbol"] for p in info.value.problems) == ["NOPE1", "NOPE2"]


# -- incremental caching ----------------------------------------------------------------------------
def test_ensure_is_incremental(fake: FakeTiingo, tmp_path) -> None:
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    src = source(fake)
    src.ensure(store, ["AAPL", "MSFT"], FetchRange(ts("2015-01-02"), ts("2015-01-31"), "1d"))
    assert sorted((r.path, r.query["startDate"], r.query["endDate"]) for r in fake.requests) == [
        ("/tiingo/daily/AAPL/prices", "2015-01-02", "2015-01-31"),
        ("/tiingo/daily/MSFT/prices", "2015-01-02", "2015-01-31")]
    entry = store.entry("tiingo", "AAPL", "1d")
    assert entry is not None and entry.last == ts("2015-01-30") and entry.rows == 21

    fake.requests.clear()
    src.ensure(store, ["AAPL", "MSFT"], FetchRange(ts("2015-01-02"), ts("2015-02-28"), "1d"))
    # only the dates after the last stored bar (Fri 2015-01-30) are asked for
    assert sorted((r.path, r.query["startDate"], r.query["endDate"]) for r in fake.requests) == [
        ("/tiingo/daily/AAPL/prices", "2015-01-31", "2015-02-28"),
        ("/tiingo/daily/MSFT/prices", "2015-01-31", "2015-02-28")]
    for sym in ("AAPL", "MSFT"):
        stored = store.read("tiingo", sym, "1d")
        pd.testing.assert_frame_equal(stored, expected(sym, "2015-01-02", "2015-02-28"))

    fake.requests.clear()
    src.ensure(store, ["AAPL"], FetchRange(ts("2015-01-02"), ts("2015-02-27"), "1d"))
    assert fake.requests == []  # everything is there

    # load_panel picks adjusted or raw from what was stored
    adj = store.load_panel("tiingo", ["AAPL", "MSFT"], "1d", adjusted=True)
    raw = store.load_panel("tiingo", ["AAPL", "MSFT"], "1d", adjusted=False)
    want = expected("AAPL", "2015-01-02", "2015-02-28")
    assert np.array_equal(adj.close[:, 0], want["adj_close"].to_numpy())
    assert np.array_equal(raw.close[:, 0], want["close"].to_numpy())


def test_ensure_unknown_ticker_raises_and_stores_nothing(fake: FakeTiingo, tmp_path) -> None:
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    with pytest.raises(TiingoNotFoundError):
        source(fake).ensure(store, ["NOPE"], FetchRange(ts("2015-01-02"), ts("2015-01-31"), "1d"))
    assert store.catalog("tiingo") == []


# -- concurrency ------------------------------------------------------------------------------------
def test_fetch_many_respects_the_concurrency_limit(fake: FakeTiingo) -> None:
    fake.delay = 0.05
    syms = [f"T{i:02d}" for i in range(24)]
    got = source(fake, concurrency=4).fetch_many(syms, ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert set(got) == set(syms) and all(len(f) == 6 for f in got.values())
    assert len(fake.requests) == 24
    assert fake.max_in_flight == 4  # concurrent, but never more than the limit


def test_default_concurrency_is_8(fake: FakeTiingo) -> None:
    fake.delay = 0.05
    src = source(fake)
    assert src.concurrency == 8
    src.fetch_many([f"T{i:02d}" for i in range(20)], ts("2015-01-02"), ts("2015-01-09"), "1d")
    assert fake.max_in_flight == 8


@pytest.mark.asyncio
async def test_async_api_and_sync_api_inside_a_running_loop(fake: FakeTiingo) -> None:
    src = source(fake)
    got = await src.afetch_many(["AAPL", "SPY"], ts("2015-01-02"), ts("2015-01-09"), "1d")
    pd.testing.assert_frame_equal(got["SPY"], expected("SPY", "2015-01-02", "2015-01-09"))
    frame = src.fetch("AAPL", ts("2015-01-02"), ts("2015-01-09"), "1d")  # runs in a worker thread
    pd.testing.assert_frame_equal(frame, got["AAPL"])
    assert (await src.ametadata("SPY")).ticker == "SPY"


# -- plugin registration ----------------------------------------------------------------------------
def test_hook_builds_the_source_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIINGO_API_KEY", "abc")
    monkeypatch.setenv("TIINGO_API_URL", "http://127.0.0.1:9/")
    (src,) = tiingo.register_data_sources()
    assert isinstance(src, TiingoSource) and src.name == "tiingo" and src.api_key == "abc"
    assert str(src.base_url) == "http://127.0.0.1:9"
    assert src.schema() == {"name": "tiingo", "description": src.description, "frequencies": list(src.frequencies),
                            "fetchable": True, "configured": True}
    monkeypatch.setenv("TIINGO_API_URL", "ftp://example.com")
    with pytest.raises(ConfigError, match="TIINGO_API_URL must be an http"):
        tiingo.register_data_sources()


# -- default range ----------------------------------------------------------------------------------
def test_default_range_depends_on_the_frequency() -> None:
    src = TiingoSource("key", "http://127.0.0.1:9")
    before = pd.Timestamp.now(tz=UTC).normalize()
    ranges = {f: src.default_range(f) for f in src.frequencies}
    after = pd.Timestamp.now(tz=UTC).normalize()
    assert set(ranges) == {"1d", "1min", "5min", "15min", "30min", "1h", "4h"}
    for freq, (start, end) in ranges.items():
        assert end in (before, after) and end == end.normalize() and str(end.tz) == "UTC", freq
        if freq == "1d":
            assert start == end - pd.DateOffset(years=10), freq
        else:
            assert start == end - pd.Timedelta(days=30), freq
            # a short window: at most 5 IEX requests per symbol, however fine the bars
            assert (end - start).days + 1 <= 5 * tiingo.IEX_WINDOW_DAYS[freq], freq
    assert src.default_range() == ranges["1d"] or after != before  # the daily range is the default


def test_default_range_for_passes_the_frequency_to_every_source() -> None:
    from gpu_backtest.plugins.datasources.base import DataSource, default_range_for
    from gpu_backtest.plugins.datasources.synthetic import DEFAULT_END, DEFAULT_START, SyntheticSource

    class Legacy(DataSource):  # written before default_range took the frequency
        def default_range(self):  # type: ignore[override]
            return ts("2001-01-01"), ts("2002-01-01")

    class Recorder(DataSource):
        def default_range(self, frequency: str = "1d"):  # type: ignore[override]
            return ts("2003-01-01"), ts(f"2003-01-{len(frequency):02d}")

    assert default_range_for(Legacy(), "5min") == (ts("2001-01-01"), ts("2002-01-01"))
    assert default_range_for(Recorder(), "5min") == (ts("2003-01-01"), ts("2003-01-04"))
    assert default_range_for(DataSource(), "1h") == (None, None)
    assert default_range_for(SyntheticSource(), "1d") == (DEFAULT_START, DEFAULT_END)
    src = TiingoSource("key", "http://127.0.0.1:9")
    assert default_range_for(src, "1min") == src.default_range("1min") != src.default_range("1d")
