"""The ``upload`` data source: strict validation of user CSV/Parquet files, all-or-nothing storage.

Bad files are table-driven: each must be rejected with a problem naming the row and/or column,
and the store must be unchanged: every file under its root byte for byte, and every catalog row.
Good files use fresh random bars (the seed is printed; a failure shows it under "Captured
stdout setup") and must read back from the store with exactly the values written.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pluggy
import pytest

from gpu_backtest.core.errors import DataError
from gpu_backtest.core.marketdata import MarketDataStore
from gpu_backtest.core.spec import FREQUENCIES
from gpu_backtest.plugins import hookspecs, manager
from gpu_backtest.plugins.datasources import upload
from gpu_backtest.plugins.datasources.base import FetchRange
from gpu_backtest.plugins.datasources.upload import (
    MAX_PROBLEMS,
    UploadSource,
    UploadTooLarge,
    import_file,
    validate_file,
)

HEADER = "Date,Open,High,Low,Close,Volume\n"
OK_ROWS = ["2020-01-02,10,11,9,10.5,100", "2020-01-03,10.5,12,10,11,200", "2020-01-06,11,11.5,10.2,10.8,150"]


def csv(*rows: str, header: str = HEADER) -> bytes:
    return (header + "".join(r + "\n" for r in rows)).encode()


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)


def random_bars(rng: np.random.Generator, n: int, start: str = "2015-01-01", freq: str = "D") -> pd.DataFrame:
    """Valid random OHLCV bars (UTC), low <= open, close <= high."""
    ts = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    volume = rng.integers(0, 10**7, n).astype(np.float64)
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": volume})


@pytest.fixture
def store(tmp_path: Path) -> MarketDataStore:
    """A store already holding valid series (SEED and an AAPL that a bad upload must not replace)."""
    s = MarketDataStore(tmp_path / "market", f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    seed = random_bars(np.random.default_rng(7), 50)
    s.write("upload", "SEED", "1d", seed)
    s.write("upload", "AAPL", "1d", random_bars(np.random.default_rng(8), 30, start="2010-01-01"))
    s.write("tiingo", "AAPL", "1d", seed)
    return s


def snapshot(store: MarketDataStore) -> tuple[dict[str, bytes], list]:
    """Every file under the store's root with its bytes, and every catalog row (in the job database)."""
    root = store.root
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return files, store.catalog()


def assert_stored(store: MarketDataStore, symbol: str, expected: pd.DataFrame, source: str = "upload") -> None:
    """The stored series equals ``expected`` (sorted by time) exactly: timestamps and every value."""
    got = store.read(source, symbol, "1d")
    want = expected.sort_values("timestamp").reset_index(drop=True)
    assert list(got["timestamp"]) == list(want["timestamp"].dt.tz_convert("UTC"))
    assert str(got["timestamp"].dtype) == "datetime64[ns, UTC]"
    for col in want.columns.drop("timestamp"):
        assert got[col].dtype == np.float64, col
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(dtype=np.float64), err_msg=col)
    entry = store.entry(source, symbol, "1d")
    assert entry is not None and entry.rows == len(want)
    assert entry.first == want["timestamp"].iloc[0] and entry.last == want["timestamp"].iloc[-1]


def parquet_bytes(df: pd.DataFrame, **kw) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, **kw)
    return buf.getvalue()


# -- bad files -------------------------------------------------------------------------------
# (id, file name, content, keyword arguments, expected problems: (row, column, text in the message))
BAD = [
    ("missing_column", "AAPL.csv", csv("2020-01-02,10,11,10.5,100", header="Date,Open,High,Close,Volume\n"), {},
     [(None, "low", "missing required column 'low'")]),
    ("missing_time_column", "AAPL.csv", csv("10,11,9,10.5", header="Open,High,Low,Close\n"), {},
     [(None, "timestamp", "missing required column 'timestamp'")]),
    ("text_in_price", "AAPL.csv", csv(OK_ROWS[0], "2020-01-03,10.5,12,10,abc,200"), {},
     [(2, "Close", "'abc' is not a number")]),
    ("duplicate_timestamp", "AAPL.csv", csv(*OK_ROWS, "2020-01-02,10,11,9,10.5,100"), {},
     [(4, "Date", "duplicate date/time 2020-01-02T00:00:00+00:00 for AAPL (first at row 1)")]),
    ("duplicate_after_utc_conversion", "AAPL.csv",
     csv("2020-01-02T10:00:00+01:00,10,11,9,10.5,1", "2020-01-02 09:00:00,10,11,9,10.5,1"), {},
     [(2, "Date", "duplicate date/time 2020-01-02T09:00:00+00:00")]),
    ("high_below_low", "AAPL.csv", csv(OK_ROWS[0], "2020-01-03,10.5,9,12,11,200"), {},
     [(2, "High", "high 9.0 is below low 12.0")]),
    ("high_below_open", "AAPL.csv", csv("2020-01-02,10,10.2,9,10.5,100"), {},
     [(1, "High", "high 10.2 is below max(open, close) 10.5")]),
    ("low_above_close", "AAPL.csv", csv("2020-01-02,10,11,9.8,9.5,100"), {},
     [(1, "Low", "low 9.8 is above min(open, close) 9.5")]),
    ("negative_volume", "AAPL.csv", csv(OK_ROWS[0], OK_ROWS[1], "2020-01-06,11,11.5,10.2,10.8,-5"), {},
     [(3, "Volume", "volume must be >= 0, got -5.0")]),
    ("empty_file", "AAPL.csv", b"", {}, [(None, None, "the file is empty")]),
    ("whitespace_only", "AAPL.csv", b"\xef\xbb\xbf \n\n", {}, [(None, None, "the file is empty")]),
    ("header_only", "AAPL.csv", HEADER.encode(), {}, [(None, None, "no data rows")]),
    ("header_and_blank_lines", "AAPL.csv", (HEADER + "\n\n").encode(), {}, [(None, None, "no data rows")]),
    ("non_utf8", "AAPL.csv", csv(OK_ROWS[0]) + "2020-01-03,10.5,12,10,11,2\xe900\n".encode("latin-1"), {},
     [(2, None, f"invalid byte 0xE9 at byte offset {len(csv(OK_ROWS[0])) + 26} (line 3)")]),
    ("symbol_traversal", "prices.csv", csv(*OK_ROWS), {"symbol": "../x"}, [(None, None, "invalid symbol '../x'")]),
    ("symbol_empty", "prices.csv", csv(*OK_ROWS), {"symbol": ""}, [(None, None, "invalid symbol ''")]),
    ("symbol_too_long", "prices.csv", csv(*OK_ROWS), {"symbol": "A" * 33}, [(None, None, "invalid symbol 'AAAA")]),
    ("symbol_from_bad_file_name", "my prices.csv", csv(*OK_ROWS), {},
     [(None, None, "invalid symbol 'my prices' (taken from the file name)")]),
    ("bad_timestamp", "AAPL.csv", csv(OK_ROWS[0], "2020-13-45,10.5,12,10,11,200"), {},
     [(2, "Date", "cannot read '2020-13-45' as a date/time")]),
    ("missing_timestamp", "AAPL.csv", csv(OK_ROWS[0], ",10.5,12,10,11,200"), {}, [(2, "Date", "missing date/time")]),
    ("zero_price", "AAPL.csv", csv("2020-01-02,0,11,9,10.5,100"), {}, [(1, "Open", "price must be > 0, got 0.0")]),
    ("negative_price", "AAPL.csv", csv("2020-01-02,10,11,-9,10.5,100"), {}, [(1, "Low", "price must be > 0")]),
    ("nan_price", "AAPL.csv", csv("2020-01-02,10,11,9,nan,100"), {}, [(1, "Close", "'nan' is not a number")]),
    ("inf_price", "AAPL.csv", csv("2020-01-02,10,inf,9,10.5,100"), {}, [(1, "High", "'inf' is not a finite number")]),
    ("empty_price", "AAPL.csv", csv("2020-01-02,10,11,9,,100"), {}, [(1, "Close", "missing value")]),
    ("ragged_row", "AAPL.csv", csv(OK_ROWS[0], "2020-01-03,10.5,12,10,11,200,7", "2020-01-06,11"), {},
     [(2, None, "expected 6 fields (as in the header), found 7"), (3, None, "found 2")]),
    ("two_close_columns", "AAPL.csv", csv("2020-01-02,10,11,9,10.5,10.5", header="Date,Open,High,Low,Close,c\n"),
     {}, [(None, "close", "columns 'Close', 'c' all mean 'close'")]),
    ("parquet_extension_not_parquet", "AAPL.parquet", csv(*OK_ROWS), {}, [(None, None, "not a Parquet file")]),
    ("utf16_file", "AAPL.csv", (HEADER + OK_ROWS[0]).encode("utf-16"), {}, [(None, None, "UTF-16")]),
    ("excel_file", "AAPL.csv", b"PK\x03\x04" + bytes(range(256)), {}, [(None, None, "Excel/zip")]),
    ("long_file_bad_symbol_value", "prices.csv",
     csv("2020-01-02,AAPL,10,11,9,10.5,1", "2020-01-02,MSFT,10,11,9,10.5,1", "2020-01-02,../x,10,11,9,10.5,1",
         "2020-01-03,MSFT,10,11,9,10.5,1", header="Date,Symbol,Open,High,Low,Close,Volume\n"), {},
     [(3, "Symbol", "invalid symbol '../x'")]),
    ("long_file_missing_symbol_value", "prices.csv",
     csv("2020-01-02,AAPL,10,11,9,10.5", "2020-01-02,,10,11,9,10.5", header="date,ticker,open,high,low,close\n"), {},
     [(2, "ticker", "missing symbol")]),
    ("long_file_symbol_mismatch", "prices.csv",
     csv("2020-01-02,AAPL,10,11,9,10.5", "2020-01-02,MSFT,10,11,9,10.5", header="date,symbol,open,high,low,close\n"),
     {"symbol": "AAPL"}, [(2, "symbol", "symbol 'MSFT' differs from the symbol given for this upload ('AAPL')")]),
    ("long_parquet_bad_symbol", "prices.parquet",
     parquet_bytes(pd.DataFrame({"timestamp": pd.to_datetime(["2020-01-02", "2020-01-02", "2020-01-03"]),
                                 "symbol": ["AAPL", "bad/sym", "AAPL"], "open": [1.0] * 3, "high": [1.0] * 3,
                                 "low": [1.0] * 3, "close": [1.0] * 3})), {},
     [(2, "symbol", "invalid symbol 'bad/sym'")]),
    ("parquet_null_and_text", "AAPL.parquet",
     parquet_bytes(pd.DataFrame({"Date": ["2020-01-02", "2020-01-03"], "Open": ["1", "x"], "High": [1.0, np.nan],
                                 "Low": [1.0, 1.0], "Close": [1.0, 1.0]})), {},
     [(2, "Open", "'x' is not a number"), (2, "High", "missing value")]),
    ("every_problem_reported", "AAPL.csv",
     csv("2020-01-02,abc,11,9,10.5,100", "2020-01-03,10,11,9,0,-1", "yesterday,10,11,9,10.5,100",
         "2020-01-02,10,11,9,10.5,100"), {},
     [(1, "Open", "'abc' is not a number"), (2, "Close", "price must be > 0"), (2, "Volume", ">= 0"),
      (3, "Date", "cannot read 'yesterday'"), (4, "Date", "duplicate")]),
]


@pytest.mark.parametrize(("filename", "content", "kwargs", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file_is_rejected_and_nothing_is_stored(store, tmp_path, filename, content, kwargs, expected) -> None:
    path = tmp_path / "in" / filename
    path.parent.mkdir()
    path.write_bytes(content)
    before = snapshot(store)
    assert len(before[0]) == 3 and len(before[1]) == 3

    with pytest.raises(DataError) as info:
        import_file(store, path, **kwargs)

    err = info.value
    assert not isinstance(err, UploadTooLarge)
    assert err.status == 422 and err.code == "invalid_data"
    assert err.source == filename and err.message.startswith(f"{filename}: ")
    assert err.details["problems"] == err.problems
    for p in err.problems:
        assert set(p) == {"row", "column", "message"}
    for row, column, text in expected:
        hits = [p for p in err.problems if p["row"] == row and p["column"] == column and text in p["message"]]
        assert hits, f"no problem ({row}, {column!r}, {text!r}) in {err.problems}"
    # the first problem is in the message, with its row and column
    first = err.problems[0]
    if first["row"] is not None:
        assert f"row {first['row']}" in err.message
    if first["column"] is not None:
        assert f"column {first['column']!r}" in err.message
    assert snapshot(store) == before
    assert {(e.source, e.symbol) for e in store.catalog()} == {("upload", "SEED"), ("upload", "AAPL"),
                                                                ("tiingo", "AAPL")}


@pytest.mark.parametrize("how", ["path", "bytes", "fileobj"])
def test_too_large_file_maps_to_413(store, tmp_path, how) -> None:
    content = csv(*OK_ROWS)
    path = tmp_path / "AAPL.csv"
    path.write_bytes(content)
    data = {"path": path, "bytes": content, "fileobj": io.BytesIO(content)}[how]
    before = snapshot(store)
    with pytest.raises(UploadTooLarge) as info:
        import_file(store, data, max_bytes=len(content) - 1, filename="AAPL.csv")
    err = info.value
    assert isinstance(err, DataError) and err.status == 413 and err.code == "upload_too_large"
    assert err.details["max_bytes"] == len(content) - 1
    assert "upload limit" in err.message and err.problems[0]["row"] is None
    assert snapshot(store) == before
    # exactly at the limit is fine
    assert validate_file(content, max_bytes=len(content), filename="AAPL.csv")["AAPL"].shape[0] == 3


def test_limit_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GPU_BACKTEST_MAX_UPLOAD_BYTES", "64B")
    assert upload.default_max_bytes() == 64
    with pytest.raises(UploadTooLarge, match="GPU_BACKTEST_MAX_UPLOAD_BYTES"):
        validate_file(csv(*OK_ROWS), filename="AAPL.csv")
    monkeypatch.delenv("GPU_BACKTEST_MAX_UPLOAD_BYTES")
    assert upload.default_max_bytes() == 100 * 1024**2


def test_problem_list_is_capped_with_a_count_of_the_rest() -> None:
    rows = [f"2020-{1 + i // 28:02d}-{1 + i % 28:02d},10,11,9,x,-1" for i in range(200)]  # 2 problems a row
    with pytest.raises(DataError) as info:
        validate_file(csv(*rows), filename="AAPL.csv")
    problems = info.value.problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert [p["row"] for p in problems[:4]] == [1, 1, 2, 2]  # sorted by row, every check interleaved
    assert problems[-1] == {"row": None, "column": None, "message": "300 more problem(s) not listed"}
    assert "400 problem(s)" in info.value.message


def test_invalid_utf8_bytes_are_listed_up_to_the_cap() -> None:
    with pytest.raises(DataError) as info:
        validate_file(HEADER.encode() + b"2020-01-02,1\xff,1,1,1,1\n" * 150, filename="AAPL.csv")
    problems = info.value.problems
    assert len(problems) == MAX_PROBLEMS + 1 and problems[0]["row"] == 1 and problems[99]["row"] == 100
    assert problems[-1]["message"] == "more problems follow (not counted)"
    assert info.value.message.startswith("AAPL.csv: 100+ problem(s)")


def test_rows_count_blank_lines_and_ignore_them() -> None:
    content = csv(OK_ROWS[0], "", OK_ROWS[1], "2020-01-07,1,1,1,x,1", "", "")
    with pytest.raises(DataError) as info:
        validate_file(content, filename="AAPL.csv")
    assert [(p["row"], p["column"]) for p in info.value.problems] == [(4, "Close")]  # line 5 of the file
    frames = validate_file(csv(OK_ROWS[0], "", OK_ROWS[1], ""), filename="AAPL.csv")
    assert len(frames["AAPL"]) == 2


# -- good files ------------------------------------------------------------------------------
def test_yahoo_csv_replaces_the_stored_series(store, tmp_path, rng) -> None:
    bars = random_bars(rng, 300)
    bars["adj_close"] = bars["close"] * rng.uniform(0.5, 1.0)
    yahoo = pd.DataFrame({"Date": bars["timestamp"].dt.strftime("%Y-%m-%d"), "Open": bars["open"],
                          "High": bars["high"], "Low": bars["low"], "Close": bars["close"],
                          "Adj Close": bars["adj_close"], "Volume": bars["volume"].astype(np.int64)})
    path = tmp_path / "AAPL.csv"
    yahoo.to_csv(path, index=False)
    assert store.entry("upload", "AAPL", "1d").rows == 30  # the fixture's older series

    entries = import_file(store, path)

    assert [(e.source, e.symbol, e.frequency, e.rows) for e in entries] == [("upload", "AAPL", "1d", 300)]
    assert_stored(store, "AAPL", bars)  # the old 30 bars (2010) are gone: replaced, not merged
    assert store.read("upload", "AAPL", "1d")["timestamp"].iloc[0] == pd.Timestamp("2015-01-01", tz="UTC")
    assert_stored(store, "AAPL", random_bars(np.random.default_rng(7), 50), source="tiingo")  # untouched


def test_lowercase_intraday_csv_with_symbol_argument(store, tmp_path, rng) -> None:
    bars = random_bars(rng, 200, start="2024-03-01 09:30", freq="5min")
    text = bars.assign(timestamp=bars["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(index=False)
    path = tmp_path / "upload-123.tmp"  # the web layer's temp file: symbol and name given separately
    path.write_text(text)
    entries = import_file(store, path, symbol="MSFT", frequency="5min", filename="msft_5min.csv")
    assert [(e.symbol, e.frequency, e.rows) for e in entries] == [("MSFT", "5min", 200)]
    got = store.read("upload", "MSFT", "5min")
    assert list(got["timestamp"]) == list(bars["timestamp"])  # naive times are UTC
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(got[col].to_numpy(), bars[col].to_numpy())


def test_long_parquet_with_several_symbols(store, tmp_path, rng) -> None:
    parts = {sym: random_bars(rng, int(rng.integers(20, 120)), start=f"2018-0{i + 1}-0{i + 1}")
             for i, sym in enumerate(["AAPL", "BRK.B", "ES=F", "EURUSD=X", "X_1-2"])}
    long = pd.concat([b.assign(ticker=s) for s, b in parts.items()], ignore_index=True)
    long = long.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    long["timestamp"] = long["timestamp"].dt.tz_localize(None)  # naive datetime64 column
    long = long.rename(columns={"timestamp": "Datetime", "open": "O", "volume": "Vol"})
    path = tmp_path / "universe.parquet"
    long.to_parquet(path, index=False)

    entries = import_file(store, path)

    assert [e.symbol for e in entries] == sorted(parts)
    for sym, bars in parts.items():
        assert_stored(store, sym, bars)


def test_timestamps_with_offsets_are_converted_to_utc(store, tmp_path, rng) -> None:
    bars = random_bars(rng, 6, start="2021-06-01 14:30", freq="h")
    local = ["2021-06-01T10:30:00-04:00", "2021-06-01 15:30:00+00:00", "2021-06-01T16:30:00Z",
             "2021-06-01T23:00:00+05:30", "2021-06-01T18:30:00+0000", "2021-06-01T19:30:00.000+00:00"]
    text = bars.assign(timestamp=local).to_csv(index=False)
    entries = import_file(store, text.encode(), filename="SPY.csv")
    assert entries[0].first == pd.Timestamp("2021-06-01 14:30", tz="UTC")
    assert_stored(store, "SPY", bars)


def test_unsorted_rows_are_sorted(store, tmp_path, rng) -> None:
    bars = random_bars(rng, 150)
    shuffled = bars.iloc[rng.permutation(len(bars))]
    text = shuffled.assign(timestamp=shuffled["timestamp"].dt.strftime("%Y-%m-%d")).to_csv(index=False)
    (tmp_path / "QQQ.csv").write_text(text)
    import_file(store, tmp_path / "QQQ.csv")
    assert_stored(store, "QQQ", bars)


def test_semicolon_bom_crlf_short_aliases_and_no_volume(rng) -> None:
    bars = random_bars(rng, 40)
    lines = ["\ufeffDATE;o;h;l;c"] + [
        f"{t:%Y-%m-%d};{o!r};{h!r};{lo!r};{c!r}"
        for t, o, h, lo, c in zip(bars["timestamp"], bars["open"], bars["high"], bars["low"], bars["close"],
                                  strict=True)]
    frames = validate_file("\r\n".join(lines).encode(), filename="DAX.csv")
    got = frames["DAX"]
    assert list(got.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert (got["volume"] == 0.0).all()  # volume is optional
    np.testing.assert_array_equal(got["close"].to_numpy(), bars["close"].to_numpy())


def test_tab_separated_date_and_time_columns_and_file_object(rng) -> None:
    bars = random_bars(rng, 30, start="2022-01-03 09:00", freq="30min")
    df = pd.DataFrame({"Date": bars["timestamp"].dt.strftime("%Y-%m-%d"),
                       "Time": bars["timestamp"].dt.strftime("%H:%M"), "Open": bars["open"], "High": bars["high"],
                       "Low": bars["low"], "Close": bars["close"], "Volume": bars["volume"]})
    fh = io.BytesIO(df.to_csv(index=False, sep="\t").encode())
    got = validate_file(fh, symbol="ES")["ES"]
    assert list(got["timestamp"]) == list(bars["timestamp"])
    np.testing.assert_array_equal(got["high"].to_numpy(), bars["high"].to_numpy())


def test_parquet_with_time_index_and_timezone(rng) -> None:
    bars = random_bars(rng, 25, start="2023-01-02 14:30", freq="D")
    df = bars.set_index(bars["timestamp"].dt.tz_convert("America/New_York").rename("Timestamp"))
    df = df.drop(columns="timestamp").rename(columns=str.title)
    got = validate_file(parquet_bytes(df), filename="IWM.parquet")["IWM"]
    assert list(got["timestamp"]) == list(bars["timestamp"])
    np.testing.assert_array_equal(got["open"].to_numpy(), bars["open"].to_numpy())


def test_parquet_detected_by_magic_bytes_and_quoted_csv() -> None:
    df = pd.DataFrame({"date": ["2020-01-02"], "open": [1.0], "high": [2.0], "low": [0.5], "close": [1.5]})
    assert list(validate_file(parquet_bytes(df), filename="X.bin")) == ["X"]
    quoted = b'"Date","Open","High","Low","Close","Volume"\n"2020-01-02"," 10 ","11","9","10.5","1e3"\n'
    got = validate_file(quoted, filename="Y.csv")["Y"]
    assert got[["open", "volume"]].iloc[0].tolist() == [10.0, 1000.0]


def test_long_file_with_matching_symbol_argument(store) -> None:
    content = csv("2020-01-02,AAPL,10,11,9,10.5", "2020-01-03,AAPL,10,11,9,10.5",
                  header="date,symbol,open,high,low,close\n")
    entries = import_file(store, content, symbol="AAPL", filename="whatever.csv")
    assert [(e.symbol, e.rows) for e in entries] == [("AAPL", 2)]


def test_failed_write_restores_the_symbols_already_written(store, monkeypatch, rng) -> None:
    old_aapl = store.read("upload", "AAPL", "1d")
    before = snapshot(store)
    long = pd.concat([random_bars(rng, 10).assign(symbol=s) for s in ("AAPL", "NEW", "ZZZ")], ignore_index=True)
    real_write = store._write_file
    calls = []

    def failing_write(source, symbol, frequency, df):
        calls.append(symbol)
        if symbol == "ZZZ":
            raise OSError("disk full")
        return real_write(source, symbol, frequency, df)

    monkeypatch.setattr(store, "_write_file", failing_write)
    with pytest.raises(OSError, match="disk full"):
        import_file(store, parquet_bytes(long), filename="u.parquet")
    monkeypatch.setattr(store, "_write_file", real_write)
    assert "ZZZ" in calls
    pd.testing.assert_frame_equal(store.read("upload", "AAPL", "1d"), old_aapl)
    assert store.entry("upload", "NEW", "1d") is None and store.entry("upload", "ZZZ", "1d") is None
    assert snapshot(store) == before  # files restored, backups removed, catalog untouched


def test_failed_catalog_update_restores_the_files(store, monkeypatch, rng) -> None:
    before = snapshot(store)
    long = pd.concat([random_bars(rng, 10).assign(symbol=s) for s in ("AAPL", "NEW")], ignore_index=True)

    def down(entries):
        raise OSError("database is gone")

    monkeypatch.setattr(store.catalog_db, "put_many", down)
    with pytest.raises(OSError, match="database is gone"):
        import_file(store, parquet_bytes(long), filename="u.parquet")
    assert snapshot(store) == before


def test_many_symbols_import_in_one_catalog_transaction(store, monkeypatch, rng) -> None:
    syms = [f"S{i:03d}" for i in range(120)]
    long = pd.concat([random_bars(rng, 15).assign(symbol=s) for s in syms], ignore_index=True)
    long = long.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    transactions = []
    real_put_many = store.catalog_db.put_many
    monkeypatch.setattr(store.catalog_db, "put_many", lambda e: (transactions.append(len(list(e))),
                                                                 real_put_many(e))[1])
    entries = import_file(store, parquet_bytes(long), filename="u.parquet")
    assert [e.symbol for e in entries] == syms and transactions == [120]
    assert store.count("upload") == 122
    for sym in (syms[0], syms[-1]):
        want = long[long["symbol"] == sym].drop(columns="symbol")
        assert_stored(store, sym, want)


def test_unsorted_long_file_duplicates_are_per_symbol(store) -> None:
    # the same date in two symbols is fine; twice in one symbol (rows 1 and 4) is not
    rows = ["2020-01-03,BBB,10,11,9,10.5", "2020-01-02,AAA,10,11,9,10.5", "2020-01-02,BBB,10,11,9,10.5",
            "2020-01-03,BBB,10,11,9,10.5", "2020-01-03,AAA,10,11,9,10.5", "2020-01-03,BBB,10,11,9,10.5"]
    with pytest.raises(DataError) as info:
        import_file(store, csv(*rows, header="date,symbol,open,high,low,close\n"), filename="u.csv")
    assert [(p["row"], p["message"]) for p in info.value.problems] == [
        (4, "duplicate date/time 2020-01-03T00:00:00+00:00 for BBB (first at row 1)"),
        (6, "duplicate date/time 2020-01-03T00:00:00+00:00 for BBB (first at row 1)")]
    frames = validate_file(csv(*rows[:3], rows[4], header="date,symbol,open,high,low,close\n"), filename="u.csv")
    assert list(frames) == ["AAA", "BBB"]
    assert [str(t.date()) for t in frames["BBB"]["timestamp"]] == ["2020-01-02", "2020-01-03"]


# -- the plugin ------------------------------------------------------------------------------
def test_registered_through_the_hook(store) -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(upload, name="upload")
    src = manager.data_sources(pm)["upload"]
    assert isinstance(src, UploadSource)
    assert src.schema() == {"name": "upload", "description": src.description, "frequencies": list(FREQUENCIES),
                            "fetchable": False, "collection": False}
    before = snapshot(store)
    src.ensure(store, ["AAPL", "NOPE"], FetchRange(None, None, "1d"))  # nothing to fetch
    assert snapshot(store) == before
    with pytest.raises(NotImplementedError):
        src.fetch("AAPL", None, None, "1d")
    assert src.default_symbols(store, "1d") == ["AAPL", "SEED"]
    entries = src.import_file(store, csv(*OK_ROWS), filename="XYZ.csv")
    assert entries[0].source == "upload" and src.default_symbols(store, "1d") == ["AAPL", "SEED", "XYZ"]


def test_invalid_source_or_frequency_is_rejected_before_reading(store) -> None:
    with pytest.raises(DataError, match="invalid frequency"):
        import_file(store, csv(*OK_ROWS), filename="A.csv", frequency="2d")
    with pytest.raises(DataError, match="invalid source"):
        import_file(store, csv(*OK_ROWS), filename="A.csv", source="../up")
