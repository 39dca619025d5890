"""Data honesty and validation at the door (issue 13, findings 8–11).

8. Nothing is invented: the synthetic source serves only SYN000…SYN999 over 2000-01-03 … 2019-12-31;
   what the catalog and the source can tell is refused at submit as a 422 naming the field; a
   symbol Tiingo cannot supply fails the job naming it; a result's ``info.data`` says what was used.
9. Source names belong to their plugins; an upload to a new name creates a collection that is
   listed, queryable and usable in specs.
10. A series is replaced by a new, immutable version file and a catalog switch: concurrent readers
    see the old or the new bars whole, and a planned run reads the version it was planned on.
11. Names are matched whole: a trailing newline is refused everywhere a name enters.

Real components throughout: an aiohttp server on loopback, SQLite, the local store, the fake
Tiingo server (tests/fake_tiingo.py), the ``gpu-backtest`` command.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_tiingo import FakeTiingo

from gpu_backtest import run_backtest
from gpu_backtest.core.config import Settings
from gpu_backtest.core.dataservice import MarketDataService
from gpu_backtest.core.errors import DataError, SpecError
from gpu_backtest.core.loaders import StoreLoader
from gpu_backtest.core.marketdata import MarketDataStore, check_source, read_symbol_arrays
from gpu_backtest.core.panel import check_symbol
from gpu_backtest.core.spec import BacktestSpec
from gpu_backtest.plugins.datasources.synthetic import SyntheticSource
from gpu_backtest.plugins.datasources.tiingo import TICKER_RE, normalize_ticker
from gpu_backtest.plugins.manager import PluginRegistry, build_plugin_manager
from gpu_backtest.web import keys as K
from gpu_backtest.web.app import create_app

CLI = str(Path(sys.executable).parent / "gpu-backtest")
SINGLE = {"strategy": "sma_crossover", "symbols": ["SYN001"], "params": {"fast": 10, "slow": 50}}
FINAL = {"succeeded", "failed", "cancelled"}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def bars(n: int, start: str = "2020-01-01", seed: int = 0, level: float = 100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = level * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"timestamp": pd.bdate_range(start, periods=n, tz="UTC"), "open": close,
                         "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": rng.integers(1, 1000, n).astype(float)})


def csv_of(frame: pd.DataFrame) -> bytes:
    return frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%d")).to_csv(index=False).encode()


def form(content: bytes, filename: str = "bars.csv", **fields: str) -> aiohttp.FormData:
    f = aiohttp.FormData(default_to_multipart=True)
    for k, v in fields.items():
        f.add_field(k, v)
    f.add_field("file", content, filename=filename, content_type="text/csv")
    return f


def service(tmp_path: Path, pm: Any = None) -> MarketDataService:
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)})
    return MarketDataService(settings, PluginRegistry(pm or build_plugin_manager()))


@pytest_asyncio.fixture
async def client(aiohttp_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("TIINGO_API_KEY", raising=False)
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path / "data"),
                                  "GPU_BACKTEST_MAX_CONCURRENT_UPLOADS": "10"})  # ten uploads race below
    return await aiohttp_client(create_app(settings, cluster=False))


async def error(resp: aiohttp.ClientResponse, status: int = 422) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert "Traceback" not in text
    return (await resp.json())["error"]


async def wait_job(client: Any, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = await (await client.get(f"/backtest/{job_id}")).json()
        if doc["status"] in FINAL:
            return doc
        assert time.monotonic() < deadline, doc
        await asyncio.sleep(0.05)


# -- finding 8: refused at submit, naming the field ---------------------------------------------
@pytest.mark.asyncio
async def test_what_the_catalog_and_the_source_can_tell_is_a_422_at_submit(client: Any) -> None:
    stored = await (await client.post("/data/upload", data=form(csv_of(bars(60)), symbol="MINE"))).json()
    assert [e["symbol"] for e in stored["stored"]] == ["MINE"]
    cases = [
        ({**SINGLE, "symbols": ["ACME"]}, "symbols[0]", "ACME"),
        ({**SINGLE, "symbols": ["SYN001", "SYN0001"]}, "symbols[1]", "SYN0001"),
        ({**SINGLE, "metrics": {"benchmark": "NOPE"}}, "metrics.benchmark", "NOPE"),
        ({**SINGLE, "start": "2030-01-01"}, "start", "2019-12-31"),
        ({**SINGLE, "start": "1990-01-01", "end": "1995-06-30"}, "end", "2000-01-03"),
        ({**SINGLE, "source": "nope"}, "source", "nope"),
        ({**SINGLE, "frequency": "1h"}, "frequency", "1d"),
        ({**SINGLE, "source": "tiingo", "symbols": ["AAPL"]}, "source", "TIINGO_API_KEY"),
        ({**SINGLE, "start": "2300-01-01"}, "start", "2300"),
        ({**SINGLE, "end": "1600-01-01"}, "end", "1600"),
        ({**SINGLE, "start": "2015-01-01", "end": "2015-12-31T00:00:00Z"}, None, None),  # naive vs aware: fine
        ({**SINGLE, "source": "upload", "symbols": ["MINE", "THEIRS"]}, "symbols[1]", "THEIRS"),
        ({**SINGLE, "source": "upload", "symbols": ["MINE"], "start": "2024-01-01"}, "start", "2020"),
        ({**SINGLE, "source": "upload", "symbols": ["MINE"], "metrics": {"benchmark": "SPY"}},
         "metrics.benchmark", "SPY"),
    ]
    for spec, field, text in cases:
        resp = await client.post("/backtest", json=spec)
        if field is None:
            assert resp.status == 202, await resp.text()
            await wait_job(client, (await resp.json())["job_id"])
            continue
        err = await error(resp)
        assert err["code"] == "invalid_spec" and err["details"]["field"] == field, (spec, err)
        assert text in err["message"], (spec, err)
    listed = await (await client.get("/backtest")).json()
    assert listed["total"] == 1  # only the valid spec was stored
    # no typo was stored for good
    svc = client.server.app[K.DATA]
    assert {e.symbol for e in svc.symbols("synthetic")} <= {f"SYN{i:03d}" for i in range(1000)}
    assert svc.store.entry("synthetic", "ACME", "1d") is None


def test_check_spec_is_cheap_one_catalog_query_and_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = service(tmp_path)
    svc.store.write_many("upload", "1d", {f"S{i:03d}": bars(30, seed=i) for i in range(50)})
    queries: list[int] = []
    real = svc.store.catalog_db.get_many
    monkeypatch.setattr(svc.store.catalog_db, "get_many", lambda *a: (queries.append(1), real(*a))[1])
    opened: list[str] = []
    import gpu_backtest.core.storage as storage

    real_read = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda uri: (opened.append(str(uri)), real_read(uri))[1])  # a spy
    svc.check_spec(BacktestSpec.from_dict({**SINGLE, "source": "upload", "symbols": [f"S{i:03d}" for i in range(50)]}))
    svc.check_spec(BacktestSpec.from_dict({**SINGLE, "symbols": [f"SYN{i:03d}" for i in range(300)]}))
    assert len(queries) == 1 and opened == []


def test_synthetic_never_invents(tmp_path: Path) -> None:
    src = SyntheticSource()
    with pytest.raises(DataError, match="ACME"):
        src.fetch("ACME", None, None, "1d")
    late = src.fetch("SYN005", pd.Timestamp("2019-06-01", tz="UTC"), pd.Timestamp("2030-12-31", tz="UTC"), "1d")
    assert late["timestamp"].iloc[-1] == pd.Timestamp("2019-12-31", tz="UTC") and late["close"].gt(0).all()
    svc = service(tmp_path)
    with pytest.raises(DataError, match="ACME"):
        svc.fetch("synthetic", ["SYN001", "ACME"])
    assert svc.store.count("synthetic") == 0  # nothing fetched when one symbol is unknown
    [entry] = svc.fetch("synthetic", ["SYN001"], end="2030-01-01")
    assert (entry.first, entry.last) == (pd.Timestamp("2000-01-03", tz="UTC"), pd.Timestamp("2019-12-31", tz="UTC"))
    with pytest.raises(SpecError) as info:
        run_backtest({**SINGLE, "symbols": ["ACME"]}, settings=svc.settings, backend="cpu")
    assert info.value.path == "symbols[0]"


def test_a_symbol_tiingo_cannot_supply_fails_the_job_naming_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeTiingo() as fake:
        monkeypatch.setenv("TIINGO_API_KEY", fake.token)
        monkeypatch.setenv("TIINGO_API_URL", fake.url)
        svc = service(tmp_path)
        spec = {**SINGLE, "params": {"fast": 3, "slow": 10}, "source": "tiingo", "symbols": ["AAPL", "NOSUCH"],
                "start": "2015-01-02", "end": "2015-03-31"}
        svc.check_spec(BacktestSpec.from_dict(spec))  # whether Tiingo has it only a fetch can tell
        with pytest.raises(DataError, match="NOSUCH") as info:
            run_backtest(spec, settings=svc.settings, backend="cpu", pm=build_plugin_manager())
        assert info.value.status == 404 and "AAPL" not in info.value.message
        assert svc.store.entry("tiingo", "NOSUCH", "1d") is None


def test_result_info_says_which_data_was_used(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.import_file(csv_of(bars(60, "2020-01-01", seed=1)), symbol="NEW", filename="new.csv")
    svc.import_file(csv_of(bars(40, "2015-01-01", seed=2)), symbol="OLD", filename="old.csv")
    res = run_backtest({"strategy": "buy_and_hold", "source": "upload", "symbols": ["NEW", "OLD"],
                        "start": "2020-01-01", "end": "2020-12-31"}, settings=svc.settings, backend="cpu")
    data = res.info["data"]
    assert data == {"source": "upload", "frequency": "1d", "adjusted": True,
                    "first_bar": "2020-01-01T00:00:00+00:00", "last_bar": bars(60)["timestamp"].iloc[-1].isoformat(),
                    "symbols_without_data": ["OLD"]}
    assert res.info["n_bars"] == 60  # existing keys kept
    frame = bars(30, seed=3).set_index("timestamp")
    mem = run_backtest({"strategy": "buy_and_hold", "symbols": ["A"]}, {"A": frame}, backend="cpu")
    assert mem.info["data"]["source"] is None and mem.info["data"]["symbols_without_data"] == []


# -- finding 9: sources belong to their plugins; upload collections ------------------------------
@pytest.mark.asyncio
async def test_uploads_cannot_write_into_a_plugins_source(client: Any) -> None:
    svc = client.server.app[K.DATA]
    svc.fetch("synthetic", ["SYN003"])
    before = svc.store.entry("synthetic", "SYN003", "1d")
    for source in ("synthetic", "tiingo"):
        err = await error(await client.post("/data/upload", data=form(csv_of(bars(20)), symbol="SYN003",
                                                                      source=source)))
        assert err["details"]["field"] == "source" and source in err["message"], err
    for bad in ("My-Data", "1abc", "x" * 33):
        err = await error(await client.post("/data/upload", data=form(csv_of(bars(20)), symbol="A", source=bad)))
        assert err["details"]["field"] == "source", err
    assert svc.store.entry("synthetic", "SYN003", "1d") == before  # the demo series is untouched
    assert svc.store.count("tiingo") == 0


@pytest.mark.asyncio
async def test_an_upload_to_a_new_name_is_a_collection_listed_queryable_and_usable(client: Any) -> None:
    resp = await client.post("/data/upload", data=form(csv_of(bars(80, seed=4)), symbol="ALPHA", source="mydata"))
    assert resp.status == 201, await resp.text()
    sources = {s["name"]: s for s in (await (await client.get("/data/sources")).json())["sources"]}
    assert sources["mydata"]["collection"] is True and sources["mydata"]["stored_series"] == 1
    assert sources["upload"]["collection"] is False and "collection" not in sources["synthetic"]
    listed = await (await client.get("/data/symbols", params={"source": "mydata"})).json()
    assert [e["symbol"] for e in listed["symbols"]] == ["ALPHA"] and listed["total"] == 1
    resp = await client.post("/backtest", json={"strategy": "buy_and_hold", "source": "mydata", "symbols": ["ALPHA"]})
    assert resp.status == 202, await resp.text()
    doc = await wait_job(client, (await resp.json())["job_id"])
    assert doc["status"] == "succeeded", doc["error"]
    err = await error(await client.post("/backtest", json={**SINGLE, "source": "mydata", "symbols": ["BETA"]}))
    assert err["details"]["field"] == "symbols[0]"
    err = await error(await client.get("/data/symbols", params={"source": "otherdata"}), 404)
    assert "mydata" in err["message"]  # the known sources, collections included


def test_cli_import_into_a_collection_then_read_it_back(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_bytes(csv_of(bars(50, seed=5)))
    env = {**os.environ, "GPU_BACKTEST_DATA_DIR": str(tmp_path / "store")}
    env.pop("TIINGO_API_KEY", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300)

    r = cli("data", "import", str(path), "--symbol", "ZED", "--source", "mydata")
    assert r.returncode == 0, r.stderr
    r = cli("data", "symbols", "--source", "mydata")
    assert r.returncode == 0 and "ZED" in r.stdout, (r.stdout, r.stderr)
    r = cli("data", "import", str(path), "--symbol", "SYN003", "--source", "synthetic")
    assert r.returncode == 2 and "source" in r.stderr and "synthetic" in r.stderr
    r = cli("data", "import", str(path), "--symbol", "SYN001\n")
    assert r.returncode == 2 and "invalid symbol" in r.stderr


# -- finding 10: readers see the old or the new bars, whole --------------------------------------
def test_concurrent_rewrites_and_reads_of_one_series(tmp_path: Path) -> None:
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}", grace_s=3600)
    versions = {n: bars(n, seed=n, level=float(n)) for n in range(40, 240, 20)}  # 10 versions, each its own length
    store.write("upload", "ONE", "1d", versions[40])
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def writer(k: int) -> None:
        try:
            for i in range(6):
                n = list(versions)[(k + i) % len(versions)]
                store.write("upload", "ONE", "1d", versions[n])
        except Exception as exc:  # pragma: no cover - reported below
            problems.append(f"writer: {exc!r}")

    def reader() -> None:
        while not stop.is_set():
            try:
                entry = store.entry("upload", "ONE", "1d")
                ts, cols = read_symbol_arrays(store.root_uri, "upload", "1d", "ONE", None, None, True, entry.file)
                n = len(ts)
                if n != entry.rows or n not in versions:
                    problems.append(f"catalog says {entry.rows} rows, file has {n}")
                elif not np.array_equal(cols["close"], versions[n]["close"].to_numpy()):
                    problems.append(f"the {n}-row bars are not those written")
                frame = store.read("upload", "ONE", "1d")
                if len(frame) not in versions or not np.array_equal(frame["close"], versions[len(frame)]["close"]):
                    problems.append(f"read() gave {len(frame)} rows not written together")
                reads[0] += 1
            except Exception as exc:
                problems.append(f"reader: {exc!r}")

    readers = [threading.Thread(target=reader) for _ in range(4)]
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(10)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=120)
    stop.set()
    for t in readers:
        t.join(timeout=60)
    assert problems == [] and reads[0] > 0, problems[:5]
    entry = store.entry("upload", "ONE", "1d")
    assert len(store.read("upload", "ONE", "1d")) == entry.rows  # the row describes the file it names


@pytest.mark.asyncio
async def test_concurrent_http_uploads_of_one_symbol(client: Any) -> None:
    frames = [bars(30 + 10 * i, seed=i, level=50.0 + i) for i in range(10)]
    answers = await asyncio.gather(*(client.post("/data/upload", data=form(csv_of(f), symbol="HOT")) for f in frames))
    assert [a.status for a in answers] == [201] * 10, [await a.text() for a in answers]
    store = client.server.app[K.DATA].store
    entry = store.entry("upload", "HOT", "1d")
    stored = store.read("upload", "HOT", "1d")
    assert len(stored) == entry.rows
    assert any(len(f) == len(stored) and np.allclose(stored["close"], f["close"]) for f in frames)


def test_a_planned_run_reads_its_version_through_a_reupload(tmp_path: Path) -> None:
    svc = service(tmp_path)
    old, new = bars(50, seed=1, level=10.0), bars(70, seed=2, level=900.0)
    svc.store.write("upload", "PIN", "1d", old)
    selection, _ = svc.selection_for(BacktestSpec.from_dict({**SINGLE, "source": "upload", "symbols": ["PIN"]}))
    svc.store.write("upload", "PIN", "1d", new)  # a re-upload after the plan was made
    [(_, cols)] = StoreLoader(selection).series(["PIN"])
    np.testing.assert_array_equal(cols["close"], old["close"].to_numpy())
    assert len(svc.store.read("upload", "PIN", "1d")) == 70  # new readers get the new bars


def test_superseded_versions_are_removed_after_the_grace_period(tmp_path: Path) -> None:
    kept = MarketDataStore(tmp_path / "a", f"sqlite:///{tmp_path / 'a.sqlite'}")  # one day
    gone = MarketDataStore(tmp_path / "b", f"sqlite:///{tmp_path / 'b.sqlite'}", grace_s=0)
    for store in (kept, gone):
        for seed in range(3):
            store.write("upload", "V", "1d", bars(20 + seed, seed=seed))
            time.sleep(0.02)  # distinct modification times
    files = {name: sorted(p.name for p in (s.root / "upload" / "1d" / "symbol=V").iterdir())
             for name, s in (("kept", kept), ("gone", gone))}
    assert len(files["kept"]) == 3
    assert files["gone"] == [gone.entry("upload", "V", "1d").file]
    gone.delete("upload", "V", "1d")
    assert list((gone.root / "upload" / "1d" / "symbol=V").iterdir()) == []


def test_series_stored_before_versions_are_still_read(tmp_path: Path) -> None:
    from gpu_backtest.core.catalog import CatalogEntry

    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    legacy = store.root / "upload" / "1d" / "symbol=OLD" / "bars.parquet"
    legacy.parent.mkdir(parents=True)
    frame = bars(25)
    frame.to_parquet(legacy, index=False)
    store.catalog_db.put(CatalogEntry("upload", "OLD", "1d", frame.timestamp.iloc[0], frame.timestamp.iloc[-1],
                                      25, pd.Timestamp.now(tz="UTC")))  # a row of schema version 4: no file
    assert store.load_panel("upload", ["OLD"]).n_bars == 25
    store.write("upload", "OLD", "1d", bars(30, seed=1))
    assert store.entry("upload", "OLD", "1d").file != "bars.parquet" and len(store.read("upload", "OLD", "1d")) == 30


# -- finding 11: names are matched whole ----------------------------------------------------------
def test_a_trailing_newline_is_refused_wherever_a_name_enters(tmp_path: Path) -> None:
    for check, name in ((check_symbol, "SYN001\n"), (check_source, "upload\n")):
        with pytest.raises(DataError):
            check(name)
    assert TICKER_RE.fullmatch("AAPL\n") is None and normalize_ticker(" aapl\n") == "AAPL"  # (stripped first)
    with pytest.raises(SpecError) as info:
        BacktestSpec.from_dict({**SINGLE, "symbols": ["SYN001\n"]})
    assert info.value.path == "symbols[0]"
    svc = service(tmp_path)
    with pytest.raises(DataError):
        svc.import_file(csv_of(bars(10)), symbol="SYNNL\n", filename="x.csv")
    with pytest.raises(SpecError):
        svc.import_file(csv_of(bars(10)), symbol="OK", source="mydata\n", filename="x.csv")
    from gpu_backtest.core.storage import InvalidStorageURI, check_uri

    with pytest.raises(InvalidStorageURI):
        check_uri("s3://bucket\n/prefix")
    assert svc.store.count() == 0 and not list((tmp_path / "market").rglob("*\n*"))
