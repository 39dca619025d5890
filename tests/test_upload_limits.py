"""POST /data/upload and request bodies under abuse (issue 13, findings 5, 6 and 15): the real app on
loopback (no cluster), hand-written HTTP where aiohttp's client would not send the bytes.

- concurrent uploads are bounded (429 + Retry-After), slow bodies time out (408, connection closed),
  parts are limited in number, name and size, malformed multipart is a 400, a non-UTF-8
  Idempotency-Key a 400;
- a full disk is a 507 with nothing half-written: a real 2 MiB tmpfs when this process may mount one
  (root), else the kernel's /dev/full (every write: ENOSPC) opened where the temporary file would be;
- the import reads the CSV in blocks: its peak memory is a small multiple of the data (measured in a
  fresh process), and a tiny block size gives the same answers as one block.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from aiohttp import web

from gpu_backtest.core.config import Settings
from gpu_backtest.core.errors import DataError
from gpu_backtest.plugins.datasources import upload
from gpu_backtest.web.app import create_app
from gpu_backtest.web.uploads import UPLOAD_SLOTS

BOUNDARY = "b0undary"


def bars_csv(n: int, symbols: int = 1, seed: int = 3) -> bytes:
    """A valid long CSV (symbol column) of random bars."""
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    out.write("symbol,date,open,high,low,close,volume\n")
    days = pd.bdate_range("2001-01-02", periods=n).strftime("%Y-%m-%d")
    for s in range(symbols):
        c = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        o = c * np.exp(rng.normal(0, 0.01, n))
        h, lo = np.maximum(o, c) * 1.01, np.minimum(o, c) * 0.99
        pd.DataFrame({"s": f"S{s:03d}", "d": days, "o": o, "h": h, "l": lo, "c": c,
                      "v": rng.integers(1, 10**6, n)}).to_csv(out, header=False, index=False)
    return out.getvalue().encode()


def multipart(*parts: tuple[bytes, bytes]) -> bytes:
    sep = f"--{BOUNDARY}\r\n".encode()
    return b"".join(sep + head + b"\r\n\r\n" + content + b"\r\n" for head, content in parts) + \
        f"--{BOUNDARY}--\r\n".encode()


def file_part(content: bytes, name: bytes = b"file", filename: bytes = b"bars.csv") -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="' + name + b'"; filename="' + filename + b'"', content


def field(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="' + name + b'"', value


def request(body: bytes, *, path: bytes = b"/data/upload", ctype: bytes | None = None, extra: bytes = b"",
            length: int | None = None) -> bytes:
    ctype = ctype if ctype is not None else f"multipart/form-data; boundary={BOUNDARY}".encode()
    return (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
            + str(len(body) if length is None else length).encode() + b"\r\n" + extra + b"\r\n" + body)


async def exchange(port: int, data: bytes, timeout: float = 30.0,
                   closes: bool = False) -> tuple[int, dict[str, str], Any, bool]:
    """Send ``data`` (while reading: the server may answer before it has read it all); returns the
    status, headers, JSON body and (``closes``: waiting up to 10 s for it) whether the server closed
    the connection after answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        try:
            for i in range(0, len(data), 1 << 16):
                writer.write(data[i:i + (1 << 16)])
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server answered and closed first

    sender = asyncio.create_task(send())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
        closed = False
        if closes:
            try:
                closed = await asyncio.wait_for(reader.read(1), 10) == b""
            except (ConnectionError, OSError):  # (a TimeoutError: still open)
                closed = not isinstance(sys.exc_info()[1], TimeoutError)
        return status, headers, json.loads(body), closed
    finally:
        sender.cancel()
        writer.close()


def check_error(status: int, body: Any, want_status: int, code: str) -> dict[str, Any]:
    assert status == want_status, (status, body)
    assert set(body) == {"error", "request_id"} and body["error"]["code"] == code, body
    assert "Traceback" not in json.dumps(body)
    return body["error"]


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[Any]:
    """``await server(**env)`` → (port, app): the real app on 127.0.0.1 with those settings."""
    runners: list[web.AppRunner] = []

    async def start(**env: str) -> tuple[int, web.Application]:
        settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path / "data"), "GPU_BACKTEST_BACKEND": "cpu",
                                      "GPU_SERVER_HOST": "127.0.0.1", **env})
        app = create_app(settings, cluster=False)
        runner = web.AppRunner(app, lingering_time=1.0)  # aiohttp drains an unread body 1 s (not 10) before closing
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1], app  # type: ignore[union-attr]

    yield start
    for runner in runners:
        await runner.cleanup()


def stored(app: web.Application) -> list[str]:
    from gpu_backtest.web import keys as K

    return [e.symbol for e in app[K.DATA].store.catalog("upload")]


# --------------------------------------------------------------------------- finding 5: concurrency


@pytest.mark.asyncio
async def test_concurrent_uploads_are_bounded_with_429_and_retry_after(server: Any) -> None:
    port, app = await server(GPU_BACKTEST_MAX_CONCURRENT_UPLOADS="1")
    body = multipart(file_part(bars_csv(30)))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request(body)[:-100])  # an upload in progress: all but its last bytes
        await writer.drain()
        for _ in range(200):
            if app[UPLOAD_SLOTS].locked():
                break
            await asyncio.sleep(0.02)
        assert app[UPLOAD_SLOTS].locked()
        status, headers, doc, closed = await exchange(port, request(body), closes=True)
        err = check_error(status, doc, 429, "too_many_uploads")
        assert headers["retry-after"] == "5" and "GPU_BACKTEST_MAX_CONCURRENT_UPLOADS" in err["message"]
        assert closed
        writer.write(request(body)[-100:])  # the first one completes
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 201"), head
    finally:
        writer.close()
    assert not app[UPLOAD_SLOTS].locked()
    status, _, doc, _ = await exchange(port, request(body))
    assert status == 201, doc


# --------------------------------------------------------------------------- finding 6: slow bodies and parts


@pytest.mark.asyncio
@pytest.mark.parametrize("path", [b"/data/upload", b"/backtest"])
async def test_slow_body_times_out_with_408_and_the_connection_closes(server: Any, path: bytes) -> None:
    port, app = await server(GPU_BACKTEST_BODY_TIMEOUT_S="1")
    if path == b"/backtest":
        data = request(b'{"strategy": "sma_', path=path, ctype=b"application/json", length=200)
    else:
        data = request(multipart(file_part(bars_csv(30)))[:500], length=5000)
    status, _, doc, closed = await exchange(port, data, timeout=20, closes=True)  # the rest never comes
    err = check_error(status, doc, 408, "request_timeout")
    assert err["details"] == {"timeout_s": 1.0} and closed
    assert not app[UPLOAD_SLOTS].locked()


@pytest.mark.asyncio
async def test_parts_are_limited_in_number_name_and_size(server: Any) -> None:
    port, app = await server()
    good = file_part(bars_csv(10))
    cases: list[tuple[bytes, str]] = [
        (multipart(good, *[field(b"symbol", b"S000")] * 1, *[field(b"x%d" % i, b"1") for i in range(52_000)]),
         "unknown part 'x0'"),
        (multipart(good, *[(b'Content-Disposition: form-data; name="frequency"', b"1d")] * 9), "given twice"),
        (multipart(field(b"junk", b"j" * 200_000), good), "unknown part 'junk'"),
        (multipart(good, field(b"symbol", b"S" * 300)), "field symbol too long"),
        (multipart(good, field(b"fi\xffeld", b"1")), "its name is not UTF-8 text"),
        (multipart(good, (b"Content-Disposition: form-data; name=a\x01b", b"1")), "malformed multipart body"),
        (multipart((b"Content-Disposition: form-data", b"1"), good), "has no name"),
        (b"--" + BOUNDARY.encode() + b"\r\nno colon in this header line\r\n\r\n", "malformed multipart body"),
        (multipart(good, field(b"source", b"\xff\xfe")), "not UTF-8 text"),
    ]
    for body, message in cases:
        status, _, doc, _ = await exchange(port, request(body))
        err = check_error(status, doc, 400, "bad_request")
        assert message in err["message"], (message, err)
    status, _, doc, _ = await exchange(port, request(multipart(good), ctype=b"multipart/form-data"))
    assert "without a boundary" in check_error(status, doc, 400, "bad_request")["message"]
    status, _, doc, closed = await exchange(port, request(b"x" * 10, length=200 * 1024**2), closes=True)
    assert check_error(status, doc, 413, "payload_too_large") and closed  # refused before reading
    assert stored(app) == []
    status, _, doc, _ = await exchange(port, request(multipart(good, field(b"symbol", b"S000"))))
    assert status == 201 and stored(app) == ["S000"]


@pytest.mark.asyncio
async def test_non_utf8_idempotency_key_is_a_400(server: Any) -> None:
    port, _ = await server()
    for key in (b"k\xff\xfe", b"\xc3\x28", b"tab\tkey"):
        status, _, doc, _ = await exchange(port, request(b'{"strategy": "sma_crossover"}', path=b"/backtest",
                                                         ctype=b"application/json", extra=b"Idempotency-Key: " + key
                                                         + b"\r\n"))
        assert "Idempotency-Key" in check_error(status, doc, 400, "bad_request")["message"]


# --------------------------------------------------------------------------- finding 15: a full disk


@pytest.fixture
def tiny_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path | None]:
    """A small tmpfs (2 MiB, or the test's ``tmpfs_size`` mark); None when this process may not mount one."""
    mark = request.node.get_closest_marker("tmpfs_size")
    size = mark.args[0] if mark else "2m"
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                                              capture_output=True).returncode == 0
    yield mnt if ok else None
    if ok:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _dev_full_mkstemp(real: Any) -> Any:
    """mkstemp whose file descriptor is /dev/full: every write fails with ENOSPC (from the kernel)."""
    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, path = real(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), path
    return mkstemp


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.asyncio
async def test_full_disk_while_receiving_is_507_and_nothing_is_left(server: Any, tiny_fs: Path | None,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    port, app = await server()
    if tiny_fs is not None:
        monkeypatch.setattr(tempfile, "tempdir", str(tiny_fs))
    else:
        monkeypatch.setattr(tempfile, "mkstemp", _dev_full_mkstemp(tempfile.mkstemp))
    content = bars_csv(40_000)  # ~2.4 MB: more than the 2 MiB file system
    status, _, doc, _ = await exchange(port, request(multipart(file_part(content))))
    err = check_error(status, doc, 507, "insufficient_storage")
    assert "No space left on device" in err["message"] and err["details"]["reason"]
    if tiny_fs is not None:
        assert files_under(tiny_fs) == []  # the temporary file is gone
    assert stored(app) == [] and not app[UPLOAD_SLOTS].locked()


@pytest.mark.asyncio
@pytest.mark.tmpfs_size("8m")
async def test_full_disk_while_storing_is_507_and_the_store_is_unchanged(server: Any, tiny_fs: Path | None,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu_backtest.plugins.datasources.synthetic import DEMO_SYMBOLS
    from gpu_backtest.web import keys as K

    market = (tiny_fs or tmp_path) / "market"
    port, app = await server(GPU_BACKTEST_MARKET_ROOT=str(market))
    for _ in range(600):  # the demo data the server writes at start (~2 MB) is in place first
        if app[K.DATA].store.count("synthetic") == len(DEMO_SYMBOLS):
            break
        await asyncio.sleep(0.1)
    status, _, doc, _ = await exchange(port, request(multipart(file_part(bars_csv(300, seed=9)))))
    assert status == 201, doc
    market = market / "upload"
    before = {p: (market / p).read_bytes() for p in files_under(market)}
    assert len(before) == 1 and stored(app) == ["S000"]
    if tiny_fs is None:
        from gpu_backtest.core import storage

        monkeypatch.setattr(storage.tempfile, "mkstemp", _dev_full_mkstemp(tempfile.mkstemp))
    # 60 symbols of 4,000 random bars: ~10 MB of Parquet, more than the file system holds
    status, _, doc, _ = await exchange(port, request(multipart(file_part(bars_csv(4000, symbols=60)))))
    err = check_error(status, doc, 507, "insufficient_storage")
    assert "nothing was stored" in err["message"]
    assert {p: (market / p).read_bytes() for p in files_under(market)} == before  # S000 as it was, no debris
    assert stored(app) == ["S000"]


# --------------------------------------------------------------------------- finding 5: memory


MEASURE = textwrap.dedent("""
    import os, sys, tempfile
    from gpu_backtest.core.marketdata import MarketDataStore
    from gpu_backtest.plugins.datasources.upload import import_file

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024

    d = tempfile.mkdtemp()
    store = MarketDataStore(os.path.join(d, "market"), "sqlite:///" + os.path.join(d, "jobs.sqlite"))
    import_file(store, sys.argv[2], max_bytes=10**9, filename="warm.csv")  # every code path loaded once
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak
    base = hwm()
    entries = import_file(store, sys.argv[1], max_bytes=10**9, filename="big.csv")
    print(hwm() - base, sum(e.rows for e in entries))
""")


def test_import_memory_is_a_small_multiple_of_the_data(tmp_path: Path) -> None:
    big, warm = tmp_path / "big.csv", tmp_path / "warm.csv"
    big.write_bytes(bars_csv(3000, symbols=100))  # 300,000 rows, ~29 MB of text
    warm.write_bytes(bars_csv(50, symbols=2))
    out = subprocess.run([sys.executable, "-c", MEASURE, str(big), str(warm)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    peak, rows = map(int, out.stdout.split())
    numbers = rows * 7 * 8  # time, five prices/volumes and a symbol code: 8 bytes each
    print(f"{big.stat().st_size / 1e6:.1f} MB of CSV, {rows} rows: peak +{peak / 1e6:.0f} MB "
          f"({peak / numbers:.1f}x the numbers)")
    assert rows == 300_000
    # reading the whole file (every cell a Python string) took ~11x the numbers; by blocks ~5x (one
    # block of text, ~30 MB, is most of it here)
    assert peak < 7 * numbers, f"peak +{peak / 1e6:.0f} MB for {numbers / 1e6:.0f} MB of numbers"


@pytest.mark.parametrize("rows", [2, 3, 1000])
def test_block_size_does_not_change_the_answer(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    header = b"Date,Open,High,Low,Close,Volume\n"
    files = [
        bars_csv(40, symbols=3),
        header + b"".join(b"2020-01-%02d,10,11,9,%s,-1\n" % (1 + i % 28, b"x" if i % 3 else b"10") for i in range(90)),
        header + b"2020-01-02,10,11,9,10,1\n\n2020-01-02,10,11,9,10,1\n\n\n2020-01-03,1,1,1,1,1\n",
        bars_csv(30, symbols=2) + bars_csv(30, symbols=1),  # duplicates of S000, rows 61-90
    ]

    def answer(content: bytes) -> Any:
        try:
            return {k: v.to_dict("list") for k, v in upload.validate_file(content, filename="F.csv").items()}
        except DataError as exc:
            return exc.message, exc.problems

    whole = [answer(f) for f in files]
    monkeypatch.setattr(upload, "BLOCK_ROWS", rows)
    monkeypatch.setattr(upload, "_SCAN_BYTES", 7)
    assert [answer(f) for f in files] == whole
    assert isinstance(whole[1], tuple) and isinstance(whole[3], tuple) and "duplicate" in str(whole[3])
