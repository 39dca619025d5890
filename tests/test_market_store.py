"""The market-data store on an S3-compatible bucket (a moto server, tests/s3_server.py) and its catalog
in the job database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpu_backtest.core.catalog import Catalog, CatalogEntry
from gpu_backtest.core.config import Settings
from gpu_backtest.core.dataservice import MarketDataService
from gpu_backtest.core.errors import DataError
from gpu_backtest.core.marketdata import MarketDataStore, read_symbol_arrays
from gpu_backtest.plugins.manager import default_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_schema import fresh_pg_schema
from s3_server import S3Server, s3_endpoint, s3_server  # noqa: F401 - pytest fixtures

CLI = str(Path(sys.executable).parent / "gpu-backtest")


def bars(n: int, start: str = "2020-01-01", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame({"timestamp": pd.bdate_range(start, periods=n, tz="UTC"), "open": close,
                         "high": close * 1.01, "low": close * 0.99, "close": close,
                         "volume": rng.integers(1, 1000, n).astype(float)})


def versioned(*dirs: str) -> list[str]:
    """The pattern of the keys of one version file in each of ``dirs``, for `matches`."""
    return [rf"market/{d}/bars-[0-9a-f]{{32}}\.parquet" for d in dirs]


def matches(keys: list[str], patterns: list[str]) -> bool:
    return len(keys) == len(patterns) and all(re.fullmatch(p, k) for p, k in zip(patterns, keys, strict=True))


def long_csv(symbols: dict[str, pd.DataFrame]) -> bytes:
    frames = [b.assign(symbol=s, timestamp=b["timestamp"].dt.strftime("%Y-%m-%d")) for s, b in symbols.items()]
    return pd.concat(frames, ignore_index=True).to_csv(index=False).encode()


# -- the store on S3 -----------------------------------------------------------------------------
def test_upload_to_a_bucket_then_read_it_back(s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path / "data"),
                                  "GPU_BACKTEST_MARKET_ROOT": s3_server.uri})
    svc = MarketDataService(settings, default_registry())
    parts = {"AAPL": bars(40, seed=1), "BRK.B": bars(30, "2020-02-03", seed=2), "ES=F": bars(25, seed=3)}
    entries = svc.import_file(long_csv(parts), filename="universe.csv")
    assert [(e.symbol, e.rows) for e in entries] == [("AAPL", 40), ("BRK.B", 30), ("ES=F", 25)]
    assert matches(s3_server.keys(), versioned(*(f"upload/1d/symbol={s}" for s in ("AAPL", "BRK.B", "ES=F"))))
    assert not (tmp_path / "data" / "market").exists()  # nothing local but the job database
    assert (tmp_path / "data" / "jobs.sqlite").exists()

    store = svc.store
    assert store.root_uri == s3_server.uri and not store.is_local
    file = store.entry("upload", "AAPL", "1d").file
    assert store.location("upload", "AAPL", "1d") == f"{s3_server.uri}/upload/1d/symbol=AAPL/{file}"
    panel = store.load_panel("upload", ["AAPL", "BRK.B", "ES=F"], "1d")
    assert panel.close.shape[1] == 3
    np.testing.assert_array_equal(panel.close[:40, 0], parts["AAPL"]["close"].to_numpy())
    brk = store.entry("upload", "BRK.B", "1d").file
    ts, cols = read_symbol_arrays(s3_server.uri, "upload", "1d", "BRK.B", None, None, True, brk)
    assert np.array_equal(ts, parts["BRK.B"]["timestamp"].astype("datetime64[ns, UTC]").array.asi8)
    np.testing.assert_array_equal(cols["high"], parts["BRK.B"]["high"].to_numpy())
    lo, hi = int(ts[5]), int(ts[9])
    ts_cut, cols_cut = read_symbol_arrays(s3_server.uri, "upload", "1d", "BRK.B", lo, hi, False, brk)
    assert len(ts_cut) == 5 and np.array_equal(cols_cut["close"], cols["close"][5:10])
    pd.testing.assert_frame_equal(store.read("upload", "ES=F", "1d"), parts["ES=F"], check_dtype=False)
    with pytest.raises(DataError, match="no 1d data from upload for: NOPE"):
        read_symbol_arrays(s3_server.uri, "upload", "1d", "NOPE", None, None, True)
    with pytest.raises(DataError, match="NOPE"):
        store.load_panel("upload", ["AAPL", "NOPE"], "1d")

    # a bad file changes nothing in the bucket
    before = s3_server.keys(), store.catalog()
    with pytest.raises(DataError):
        svc.import_file(b"date,symbol,open,high,low,close\n2020-01-02,AAPL,1,0.5,1,1\n", filename="bad.csv")
    assert (s3_server.keys(), store.catalog()) == before
    # replacing and deleting
    store.write("upload", "AAPL", "1d", bars(10, seed=9))
    assert store.entry("upload", "AAPL", "1d").rows == 10
    store.delete("upload", "AAPL", "1d")
    assert store.entry("upload", "AAPL", "1d") is None
    assert not [k for k in s3_server.keys() if k.startswith("market/upload/1d/symbol=AAPL/")]


def test_reimport_to_a_bucket_restores_on_failure(s3_server: S3Server, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    store = MarketDataStore(s3_server.uri, f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    store.write_many("upload", "1d", {"AAA": bars(20, seed=1), "BBB": bars(20, seed=2)})
    old = {s: store.read("upload", s, "1d") for s in ("AAA", "BBB")}
    keys = s3_server.keys()
    real = store._write_file

    def failing(source, symbol, frequency, table):
        if symbol == "CCC":
            raise OSError("network down")
        return real(source, symbol, frequency, table)

    monkeypatch.setattr(store, "_write_file", failing)
    with pytest.raises(OSError, match="network down"):
        store.write_many("upload", "1d", {"AAA": bars(5, seed=3), "BBB": bars(5, seed=4), "CCC": bars(5)})
    assert s3_server.keys() == keys  # the new versions removed, CCC never created
    for s, frame in old.items():
        pd.testing.assert_frame_equal(store.read("upload", s, "1d"), frame)
        assert store.entry("upload", s, "1d").rows == 20


def test_cli_import_into_a_bucket(s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "u.csv"
    path.write_bytes(long_csv({"AAA": bars(12, seed=1), "BBB": bars(12, seed=2)}))
    env = {**os.environ, "GPU_BACKTEST_DATA_DIR": str(tmp_path / "data"), "GPU_BACKTEST_MARKET_ROOT": s3_server.uri}
    r = subprocess.run([CLI, "data", "import", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert matches(s3_server.keys(), versioned("upload/1d/symbol=AAA", "upload/1d/symbol=BBB"))
    r = subprocess.run([CLI, "data", "symbols", "--source", "upload"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert "AAA" in r.stdout and "BBB" in r.stdout
    env["GPU_BACKTEST_MARKET_ROOT"] = "s3://user:pw@bucket/x"
    r = subprocess.run([CLI, "data", "symbols"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "credentials do not belong in a URI" in r.stderr and "pw" not in r.stderr


@pytest.mark.asyncio
async def test_http_upload_into_a_bucket(s3_server: S3Server, tmp_path: Path, aiohttp_client) -> None:  # noqa: F811
    import aiohttp

    from gpu_backtest.web.app import create_app

    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path / "data"),
                                  "GPU_BACKTEST_MARKET_ROOT": s3_server.uri})
    client = await aiohttp_client(create_app(settings, cluster=False))
    form = aiohttp.FormData()
    form.add_field("file", long_csv({"XYZ": bars(15, seed=5)}), filename="long.csv", content_type="text/csv")
    resp = await client.post("/data/upload", data=form)
    assert resp.status == 201, await resp.text()
    assert [e["symbol"] for e in (await resp.json())["stored"]] == ["XYZ"]
    assert matches(s3_server.keys(), versioned("upload/1d/symbol=XYZ"))
    resp = await client.get("/data/symbols", params={"source": "upload"})
    assert [e["symbol"] for e in (await resp.json())["symbols"]] == ["XYZ"]


# -- the catalog ---------------------------------------------------------------------------------
def _catalog_round_trip(url: str) -> None:
    cat = Catalog(url)
    Catalog(url)  # creating again is a no-op
    now = pd.Timestamp("2026-01-02 03:04:05.123456789", tz="UTC")
    entries = [CatalogEntry("upload", f"S{i:04d}", "1d", pd.Timestamp("2010-01-04", tz="UTC"),
                            pd.Timestamp("2019-12-31", tz="UTC"), 2520 + i, now) for i in range(1200)]
    cat.put_many(entries)
    cat.put_many(entries[:10])  # upsert
    cat.put(CatalogEntry("tiingo", "AAPL", "1d", now, now, 1, now))
    assert cat.count() == 1201 and cat.count("upload") == 1200 and cat.count("upload", "5min") == 0
    assert cat.get("upload", "S0007", "1d") == entries[7]
    assert cat.get("upload", "S0007", "5min") is None
    assert [e.symbol for e in cat.list("upload", "1d", limit=3, offset=1)] == ["S0001", "S0002", "S0003"]
    assert [e.symbol for e in cat.list(prefix="S011")] == [f"S011{i}" for i in range(10)]
    assert cat.count(prefix="S011") == 10
    assert [e.source for e in cat.list()][:1] == ["tiingo"]
    got = cat.get_many("upload", "1d", [f"S{i:04d}" for i in range(0, 1200, 2)] + ["NOPE"])
    assert len(got) == 600 and got["S1198"].rows == 2520 + 1198
    cat.put(CatalogEntry("upload", "S0000", "1d", now, now, 99, now))
    assert cat.get("upload", "S0000", "1d").rows == 99
    cat.delete("upload", "S0000", "1d")
    cat.delete_many("upload", "1d", ["S0001", "S0002"])
    assert cat.count("upload") == 1197
    cat.close()


def test_catalog_on_sqlite(tmp_path: Path) -> None:
    _catalog_round_trip(f"sqlite:///{tmp_path / 'jobs.sqlite'}")


@pytest.mark.postgres
def test_catalog_and_store_on_postgresql(tmp_path: Path) -> None:
    with fresh_pg_schema("gbt_catalog") as pg:
        _catalog_round_trip(pg.url)
    with fresh_pg_schema("gbt_catalog") as pg:
        settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path), "DATABASE_URL": pg.url})
        svc = MarketDataService(settings, default_registry())
        svc.import_file(long_csv({"AAA": bars(5), "BBB": bars(6)}), filename="u.csv")
        assert [(e.symbol, e.rows) for e in svc.symbols("upload")] == [("AAA", 5), ("BBB", 6)]
        assert not (tmp_path / "jobs.sqlite").exists()  # the catalog is in PostgreSQL
        svc.store.close()


def test_catalog_lives_in_the_job_database(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    from gpu_backtest.core.jobstore import JobStore, default_url

    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)})
    svc = MarketDataService(settings, default_registry())
    svc.fetch("synthetic", ["SYN100"], end="2011-12-31")
    with JobStore.from_settings(settings) as jobs:
        jobs.create_all()  # the job store and the catalog share the database, each with its own tables
    engine = create_engine(default_url(settings))
    assert {"market_catalog", "jobs", "schema_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    assert not list((tmp_path / "market").rglob("*.sqlite"))  # no SQLite file under the market root
    svc.store.close()


def test_old_catalog_file_is_not_needed(tmp_path: Path) -> None:
    # the catalog names each series' current file: a store with another catalog does not see it
    store = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'a.sqlite'}")
    store.write("upload", "AAA", "1d", bars(8))
    assert store.load_panel("upload", ["AAA"]).n_bars == 8
    other = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert other.entry("upload", "AAA", "1d") is None
    with pytest.raises(DataError, match="AAA"):
        other.load_panel("upload", ["AAA"])


def test_parquet_bytes_from_a_bucket_are_plain_parquet(s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    store = MarketDataStore(s3_server.uri, f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    store.write("upload", "AAA", "1d", bars(7))
    key = f"market/upload/1d/symbol=AAA/{store.entry('upload', 'AAA', '1d').file}"
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)
    table = pq.read_table(io.BytesIO(body["Body"].read()))
    assert table.column_names == ["timestamp", "open", "high", "low", "close", "volume"]
    assert table.schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
