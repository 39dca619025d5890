"""Ended series (delistings) from the data sources into the run plan (issue 14).

- an upload with ``delisted`` marks its series ended at their last bar in the catalog; the data
  service puts the marks within a run's bounds into `DataSelection.ended` (a mark after the run's
  end is left out); uploading again without the flag clears the mark; unmarked data gives ``()``;
- Tiingo (the fake speaking its documented JSON): a ticker whose metadata endDate is long past is
  marked at its last stored bar; a live ticker is not; a series fetched only up to an earlier
  date is not; metadata is asked only for series that stop short of the range asked for;
- the web: ``delisted=true`` on POST /data/upload, ``ended`` on GET /data/symbols, a bad flag is
  422 naming the field with nothing stored; the CLI's ``data import --delisted`` / ``data symbols``;
- migration 0007 keeps the catalog's rows (SQLite and PostgreSQL);
- end to end: a portfolio run on a delisted upload closes the position at its final bar
  (order reason and trade exit reason ``delisted``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_tiingo import FakeTiingo
from pg_schema import fresh_pg_schema

from gpu_backtest.core.catalog import Catalog, CatalogEntry
from gpu_backtest.core.config import Settings
from gpu_backtest.core.dataservice import MarketDataService, ended_within
from gpu_backtest.core.errors import SpecError
from gpu_backtest.core.jobstore import SCHEMA_VERSION, JobStore
from gpu_backtest.core.marketdata import MarketDataStore
from gpu_backtest.core.migrations import migrate
from gpu_backtest.core.plan import DataSelection
from gpu_backtest.core.spec import BacktestSpec
from gpu_backtest.plugins.datasources.base import FetchRange
from gpu_backtest.plugins.datasources.tiingo import ENDED_AFTER_DAYS, TiingoSource, ended_mark
from gpu_backtest.plugins.datasources.upload import parse_delisted
from gpu_backtest.plugins.manager import PluginRegistry, build_plugin_manager
from gpu_backtest.web.app import create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def bars(n: int, start: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"timestamp": pd.bdate_range(start, periods=n, tz="UTC"), "open": close * 1.001,
                         "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": rng.integers(1, 1000, n).astype(float)})


def csv_of(frame: pd.DataFrame, symbol: str | None = None) -> bytes:
    out = frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%d"))
    if symbol is not None:
        out.insert(0, "symbol", symbol)
    return out.to_csv(index=False).encode()


def service(tmp_path: Path, database: str | None = None) -> MarketDataService:
    env = {"GPU_BACKTEST_DATA_DIR": str(tmp_path)}
    if database:
        env["DATABASE_URL"] = database
    return MarketDataService(Settings.from_env(env), PluginRegistry(build_plugin_manager()))


def spec(**kw: object) -> BacktestSpec:
    return BacktestSpec.from_dict({"strategy": "buy_and_hold", "source": "upload", **kw})


# -- uploads -> catalog -> selection -------------------------------------------------------------------
def _upload_round_trip(svc: MarketDataService) -> None:
    gone = bars(40, "2020-01-01", seed=1)  # 2020-01-01 … 2020-02-25
    live = bars(60, "2020-01-01", seed=2)
    [entry] = svc.import_file(csv_of(gone), symbol="GONE", filename="gone.csv", delisted="true")
    svc.import_file(csv_of(live), symbol="LIVE", filename="live.csv")
    last = gone["timestamp"].iloc[-1]
    assert entry.ended == last and entry.to_dict()["ended"] == last.isoformat()
    assert svc.store.entry("upload", "GONE", "1d").ended == last
    assert svc.store.entry("upload", "LIVE", "1d").ended is None

    data, _ = svc.selection_for(spec(symbols=["LIVE", "GONE"], start="2020-01-01", end="2020-12-31"))
    assert data.ended == (("GONE", int(last.value)),)
    # a run that ends before the series does: no ending within it
    data, _ = svc.selection_for(spec(symbols=["LIVE", "GONE"], start="2020-01-01", end="2020-02-20"))
    assert data.ended == ()
    # the mark's own day is within a run that ends that day (a bare end date covers its day)
    data, _ = svc.selection_for(spec(symbols=["GONE"], end=str(last.date())))
    assert data.ended == (("GONE", int(last.value)),)

    # uploading again without the flag stores the series unmarked (the mark follows the upload)
    svc.import_file(csv_of(gone), symbol="GONE", filename="gone.csv")
    assert svc.store.entry("upload", "GONE", "1d").ended is None
    data, _ = svc.selection_for(spec(symbols=["LIVE", "GONE"], start="2020-01-01", end="2020-12-31"))
    assert data.ended == ()
    assert dataclasses.asdict(data) == dataclasses.asdict(dataclasses.replace(data, ended=()))

    # a long file with the flag: every series in it is marked at its own last bar
    both = csv_of(bars(10, "2021-01-01", seed=3), "AAA") + csv_of(bars(12, "2021-01-01", seed=4), "BBB")[
        len(b"symbol,timestamp,open,high,low,close,volume\n"):]
    entries = svc.import_file(both, filename="long.csv", delisted=True)
    assert [(e.symbol, e.ended == e.last) for e in entries] == [("AAA", True), ("BBB", True)]


def test_upload_flag_marks_the_series_and_the_plan_carries_it(tmp_path: Path) -> None:
    svc = service(tmp_path)
    try:
        _upload_round_trip(svc)
    finally:
        svc.store.close()


@pytest.mark.postgres
def test_upload_flag_on_postgresql(tmp_path: Path) -> None:
    with fresh_pg_schema("gbt_delist") as pg:
        svc = service(tmp_path, pg.url)
        try:
            _upload_round_trip(svc)
        finally:
            svc.store.close()


@pytest.mark.parametrize("value", ["maybe", "2", "tru", "yes please", 3])
def test_a_bad_flag_is_a_spec_error_naming_it(tmp_path: Path, value: object) -> None:
    svc = service(tmp_path)
    with pytest.raises(SpecError) as info:
        svc.import_file(csv_of(bars(5, "2020-01-01", seed=1)), symbol="X", filename="x.csv", delisted=value)
    assert info.value.path == "delisted" and info.value.status == 422
    assert svc.store.entry("upload", "X", "1d") is None
    svc.store.close()


def test_flag_spellings() -> None:
    assert [parse_delisted(v) for v in ("true", "TRUE", " 1 ", "yes", "on", True)] == [True] * 6
    assert [parse_delisted(v) for v in ("false", "0", "No", "off", "", None, False)] == [False] * 7


def test_store_marks_follow_the_version(tmp_path: Path) -> None:
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    frame = bars(30, "2020-03-02", seed=5)
    store.write("upload", "ZZZ", "1d", frame, ended=True)
    last = frame["timestamp"].iloc[-1]
    # history added before the series keeps the mark: it still ends at the marked bar
    assert store.merge("upload", "ZZZ", "1d", bars(5, "2020-01-01", seed=6)).ended == last
    # a bar after the mark: the merged series no longer ends there
    later = bars(1, str((last + pd.Timedelta(days=3)).date()), seed=7)
    assert store.merge("upload", "ZZZ", "1d", later).ended is None
    now_last = store.entry("upload", "ZZZ", "1d").last
    # a mark must be the series' last bar; a clear always applies
    assert store.mark_ended("upload", "1d", {"ZZZ": int(last.value)}) == []
    assert store.mark_ended("upload", "1d", {"ZZZ": int(now_last.value)}) == ["ZZZ"]
    assert store.entry("upload", "ZZZ", "1d").ended == now_last
    assert store.mark_ended("upload", "1d", {"ZZZ": None}) == ["ZZZ"]
    assert store.entry("upload", "ZZZ", "1d").ended is None
    store.close()


def test_ended_within_the_bounds() -> None:
    t = ts("2020-01-01")

    def entry(sym: str, ended: pd.Timestamp | None) -> tuple[str, CatalogEntry]:
        return sym, CatalogEntry("upload", sym, "1d", t, ended or t, 1, t, ended=ended)

    entries = [entry("A", ts("2020-06-30")), entry("B", None), entry("C", ts("2021-01-04")),
               entry("D", ts("2019-12-31"))]
    lo, hi = ts("2020-01-01").value, ts("2020-12-31 23:59:59.999999999").value
    assert ended_within(entries, lo, hi) == (("A", ts("2020-06-30").value),)
    assert ended_within(entries, None, None) == tuple((s, e.ended.value) for s, e in entries if e.ended is not None)
    assert ended_within([entry("B", None)], lo, hi) == ()


def test_unmarked_selection_keeps_its_plan_hash() -> None:
    plain = DataSelection("upload", "1d", True, ("A",), None, 1, 2)
    assert dataclasses.asdict(plain) == dataclasses.asdict(DataSelection("upload", "1d", True, ("A",), None, 1, 2,
                                                                         ended=()))


# -- Tiingo -------------------------------------------------------------------------------------------
@pytest.fixture
def fake() -> Iterator[FakeTiingo]:
    with FakeTiingo() as f:
        yield f


def tiingo(fake: FakeTiingo) -> TiingoSource:
    return TiingoSource(fake.token, fake.url, backoff_base=0.001, max_attempts=1)


def meta_paths(fake: FakeTiingo) -> list[str]:
    return sorted(p for p in fake.paths() if not p.endswith("/prices"))


def test_a_ticker_whose_end_date_is_long_past_is_marked(fake: FakeTiingo, tmp_path: Path) -> None:
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    src = tiingo(fake)
    fake.delist("T01", "2015-03-13")
    src.ensure(store, ["T01", "AAPL"], FetchRange(ts("2015-01-02"), ts("2015-06-30"), "1d"))
    t01, aapl = store.entry("tiingo", "T01", "1d"), store.entry("tiingo", "AAPL", "1d")
    assert t01.last == ts("2015-03-13") and t01.ended == ts("2015-03-13")
    assert aapl.last == ts("2015-06-30") and aapl.ended is None
    # only the series that stopped short of the range had its metadata read
    assert meta_paths(fake) == ["/tiingo/daily/T01"]

    # a marked series is not extended past its end: no request for its later prices
    fake.requests.clear()
    src.ensure(store, ["T01"], FetchRange(ts("2015-01-02"), None, "1d"))
    assert fake.paths() == [] and store.entry("tiingo", "T01", "1d").ended == ts("2015-03-13")


def test_a_live_ticker_is_not_marked(fake: FakeTiingo, tmp_path: Path) -> None:
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    today = pd.Timestamp.now(tz="UTC").normalize()
    fake.end_dates["MSFT"] = str((today - pd.Timedelta(days=1)).date())  # its latest price: yesterday
    src = tiingo(fake)
    src.ensure(store, ["MSFT", "SPY"], FetchRange(ts("2015-01-02"), None, "1d"))
    assert meta_paths(fake) == ["/tiingo/daily/MSFT", "/tiingo/daily/SPY"]
    assert store.entry("tiingo", "MSFT", "1d").ended is None
    # SPY's endDate is the fake's last day (2015-06-30), long before today: ended there
    assert store.entry("tiingo", "SPY", "1d").ended == ts("2015-06-30")


def test_a_series_short_of_the_end_date_or_past_it_is_not_marked(fake: FakeTiingo, tmp_path: Path) -> None:
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    src = tiingo(fake)
    fake.delist("T02", "2015-05-29")
    # fetched up to 2015-03-31 only, the range asked for ended there: no shortfall, no metadata
    src.ensure(store, ["T02"], FetchRange(ts("2015-01-02"), ts("2015-03-31"), "1d"))
    assert meta_paths(fake) == [] and store.entry("tiingo", "T02", "1d").ended is None
    # asked (directly) although the stored series does not reach endDate: not marked
    assert src.mark_ended(store, ["T02"], FetchRange(ts("2015-01-02"), ts("2015-12-31"), "1d")) == []
    assert store.entry("tiingo", "T02", "1d").ended is None
    # once a fetch reaches past endDate, it is
    src.ensure(store, ["T02"], FetchRange(ts("2015-01-02"), ts("2015-12-31"), "1d"))
    assert store.entry("tiingo", "T02", "1d").ended == ts("2015-05-29")


def test_ended_mark_rule() -> None:
    fetched = ts("2024-06-14 15:00")
    e = CatalogEntry("tiingo", "X", "1d", ts("2020-01-02"), ts("2024-03-28"), 100, fetched)
    assert ended_mark(e, ts("2024-03-28"), fetched) == ts("2024-03-28").value
    assert ended_mark(e, None, fetched) is None
    assert ended_mark(e, ts("2024-04-05"), fetched) is None  # stored series stops before endDate
    assert ended_mark(e, ts("2024-03-27"), fetched) is None  # bars after endDate contradict it
    recent = fetched.normalize() - pd.Timedelta(days=ENDED_AFTER_DAYS)
    e2 = dataclasses.replace(e, last=recent)
    assert ended_mark(e2, recent, fetched) is None  # within the grace: a live ticker
    e3 = dataclasses.replace(e, last=recent - pd.Timedelta(days=1))
    assert ended_mark(e3, recent - pd.Timedelta(days=1), fetched) == e3.last.value
    intraday = dataclasses.replace(e, last=ts("2024-03-28 19:55"))
    assert ended_mark(intraday, ts("2024-03-28"), fetched) == intraday.last.value


def test_a_failed_metadata_request_marks_nothing(fake: FakeTiingo, tmp_path: Path) -> None:
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    src = tiingo(fake)
    fake.delist("T03", "2015-03-13")
    src.ensure(store, ["T03"], FetchRange(ts("2015-01-02"), ts("2015-03-13"), "1d"))
    fake.fail(503, times=1)
    assert src.mark_ended(store, ["T03"], FetchRange(ts("2015-01-02"), ts("2015-06-30"), "1d")) == []
    assert store.entry("tiingo", "T03", "1d").ended is None


def test_tiingo_selection_carries_the_mark(fake: FakeTiingo, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIINGO_API_KEY", fake.token)
    monkeypatch.setenv("TIINGO_API_URL", fake.url)
    fake.delist("T04", "2015-04-17")
    svc = service(tmp_path)
    data, _ = svc.selection_for(BacktestSpec.from_dict({"strategy": "buy_and_hold", "source": "tiingo",
                                                        "symbols": ["AAPL", "T04"], "start": "2015-01-02",
                                                        "end": "2015-06-30"}))
    assert data.ended == (("T04", ts("2015-04-17").value),)
    svc.store.close()


# -- the web and the CLI -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_http_upload_flag_listing_and_a_bad_flag(tmp_path: Path, aiohttp_client) -> None:
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)})
    client = await aiohttp_client(create_app(settings, cluster=False))
    frame = bars(20, "2020-01-01", seed=8)

    def form(symbol: str, **fields: str) -> aiohttp.FormData:
        f = aiohttp.FormData(default_to_multipart=True)
        f.add_field("symbol", symbol)
        for k, v in fields.items():
            f.add_field(k, v)
        f.add_field("file", csv_of(frame), filename="bars.csv", content_type="text/csv")
        return f

    resp = await client.post("/data/upload", data=form("GONE", delisted="true"))
    assert resp.status == 201, await resp.text()
    last = frame["timestamp"].iloc[-1].isoformat()
    assert [(e["symbol"], e["ended"]) for e in (await resp.json())["stored"]] == [("GONE", last)]
    resp = await client.post("/data/upload", data=form("LIVE"))
    assert resp.status == 201
    resp = await client.get("/data/symbols", params={"source": "upload"})
    assert [(e["symbol"], e["ended"]) for e in (await resp.json())["symbols"]] == [("GONE", last), ("LIVE", None)]

    resp = await client.post("/data/upload", data=form("BAD", delisted="perhaps"))
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert err["code"] == "invalid_spec" and err["details"]["field"] == "delisted" and "perhaps" in err["message"]
    resp = await client.get("/data/symbols", params={"source": "upload"})
    assert [e["symbol"] for e in (await resp.json())["symbols"]] == ["GONE", "LIVE"]  # nothing stored


def test_cli_import_delisted_and_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from gpu_backtest.entrypoints import cli

    monkeypatch.setenv("GPU_BACKTEST_DATA_DIR", str(tmp_path))
    path = tmp_path / "OLD.csv"
    path.write_bytes(csv_of(bars(10, "2019-01-01", seed=9)))
    assert cli.main(["data", "import", str(path), "--delisted"]) == 0
    assert cli.main(["data", "symbols", "--source", "upload"]) == 0
    out = capsys.readouterr().out
    assert "OLD" in out and "ended 2019-01-14" in out


# -- migration 0007 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_migration_0007_keeps_the_catalog(kind: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'jobs.sqlite'}" if kind == "sqlite"
               else stack.enter_context(fresh_pg_schema("gbt_mig7")).url)
        store = JobStore(url)
        try:
            assert migrate(store._write_engine, target="0006") == 6
            with store._write_engine.begin() as conn:
                conn.execute(text("INSERT INTO market_catalog (source, frequency, symbol, first_ns, last_ns, rows, "
                                  "updated_ns, file) VALUES ('upload', '1d', 'AAA', 1, 2, 3, 4, NULL)"))
            assert store.migrate() == SCHEMA_VERSION >= 7
        finally:
            store.close()
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT symbol, last_ns, ended_ns FROM market_catalog")).one()
        finally:
            engine.dispose()
        assert tuple(row) == ("AAA", 2, None)
        cat = Catalog(url)
        try:
            assert cat.set_ended("upload", "1d", {"AAA": 2}) == ["AAA"]
            assert cat.get("upload", "AAA", "1d").ended == pd.Timestamp(2, tz="UTC")
        finally:
            cat.close()


# -- end to end: a portfolio run closes the delisted position -------------------------------------
def test_portfolio_run_closes_a_delisted_upload(tmp_path: Path) -> None:
    from gpu_backtest.api import run_backtest

    svc = service(tmp_path)
    gone = bars(60, "2020-01-01", seed=11)
    svc.import_file(csv_of(gone), symbol="GONE", filename="gone.csv", delisted=True)
    svc.import_file(csv_of(bars(120, "2020-01-01", seed=12)), symbol="LIVE", filename="live.csv")
    svc.store.close()
    last = gone["timestamp"].iloc[-1]
    res = run_backtest({"strategy": "equal_weight", "source": "upload", "symbols": ["GONE", "LIVE"],
                        "portfolio": {"rebalance": "1m"}, "output": {"top_k": 1}},
                       settings=svc.settings, backend="cpu")
    assert res.info["portfolio"]["delisted"] == [{"symbol": "GONE", "last_bar": last.isoformat()}]
    assert res.info["portfolio"]["stopped_early"] == []
    (detail,) = res.details
    exits = [o for o in detail["orders"] if o["symbol"] == "GONE" and o["reason"] == "delisted"]
    assert len(exits) == 1 and pd.Timestamp(exits[0]["time"]) == last
    trades = [t for t in detail["trades"] if t["symbol"] == "GONE"]
    assert trades and trades[-1]["exit_reason"] == "delisted"
