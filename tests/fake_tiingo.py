"""A local fake of the Tiingo REST API for tests (no real network).

`FakeTiingo` is a real aiohttp ``web.Application`` served on 127.0.0.1 with an OS-assigned port,
in a background thread with its own event loop, so that both sync and async clients can talk to
it. It speaks the documented JSON of:

- ``GET /tiingo/daily/<ticker>/prices?startDate&endDate&resampleFreq`` — a list of daily rows
  (``date``, ``open`` … ``volume``, ``adjOpen`` … ``adjVolume``, ``divCash``, ``splitFactor``);
  without ``startDate`` only the latest row, like Tiingo;
- ``GET /iex/<ticker>/prices?startDate&endDate&resampleFreq&columns`` — intraday bars
  (``date``, ``open``, ``high``, ``low``, ``close``; ``volume`` only when ``columns`` names it);
- ``GET /tiingo/daily/<ticker>`` — metadata (``ticker``, ``name``, ``exchangeCode``,
  ``startDate``, ``endDate``, ``description``).

Dates alternate between ``2015-01-02T00:00:00.000Z`` and ``2015-01-05T00:00:00+00:00``.
It checks ``Authorization: Token <token>`` (401 otherwise), answers 404 for unknown tickers,
can end a ticker's history early (`delist`: its prices stop at that date and its metadata's
``endDate`` says so), can give a ticker another metadata ``endDate`` (`end_dates`: e.g. today, a
live ticker), can be told to fail the next requests (`fail`) or to answer a fixed body (`override`), can
delay every answer (`delay`), records every request (`requests`) and tracks the most requests
in flight at once (`max_in_flight`).

Usage::

    with FakeTiingo() as fake:
        src = TiingoSource(fake.token, fake.url, backoff_base=0.01)
        frame = src.fetch("AAPL", start, end, "1d")
        assert fake.requests[-1].query["startDate"] == "2015-01-02"
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from aiohttp import web

DAILY_START = "2015-01-02"
DAILY_END = "2015-06-30"
DAILY_TICKERS = ("AAPL", "MSFT", "SPY", "BRK-A", *(f"T{i:02d}" for i in range(40)))
IEX_TICKERS = ("AAPL", "SPY")
IEX_RESAMPLE = {"1min": 1, "5min": 5, "15min": 15, "30min": 30, "1hour": 60, "4hour": 240}
SESSION_OPEN = pd.Timedelta(hours=14, minutes=30)  # 09:30 New York (EST) in UTC
SESSION_MINUTES = 390


def _seed(ticker: str) -> int:
    return zlib.crc32(ticker.encode())


def _date_text(ts: pd.Timestamp, i: int) -> str:
    """Tiingo writes both ``…T00:00:00.000Z`` and ``…T00:00:00+00:00``; alternate them."""
    if i % 2 == 0:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ts.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def daily_rows(ticker: str) -> list[dict[str, Any]]:
    """The fake's full daily history of ``ticker`` (business days DAILY_START … DAILY_END)."""
    days = pd.bdate_range(DAILY_START, DAILY_END, tz="UTC")
    base = 20.0 + _seed(ticker) % 300
    rows = []
    for i, day in enumerate(days):
        close = round(base + 0.25 * (i % 17) + 0.1 * i, 4)
        open_ = round(close - 0.3, 4)
        high = round(close + 0.7, 4)
        low = round(open_ - 0.5, 4)
        volume = 1_000_000 + 1_000 * i + _seed(ticker) % 997
        factor = 0.5 if i < 40 else 1.0  # a 2:1 split on day 40: earlier adjusted prices halve
        factor *= 0.98 if i < 60 else 1.0  # a dividend on day 60
        rows.append({
            "date": _date_text(day, i),
            "close": close, "high": high, "low": low, "open": open_, "volume": volume,
            "adjClose": round(close * factor, 6), "adjHigh": round(high * factor, 6),
            "adjLow": round(low * factor, 6), "adjOpen": round(open_ * factor, 6),
            "adjVolume": int(volume / factor),
            "divCash": 0.42 if i == 60 else 0.0, "splitFactor": 2.0 if i == 40 else 1.0,
        })
    return rows


def daily_frame(ticker: str) -> pd.DataFrame:
    """The fake's daily history as the canonical frame a correct client must produce."""
    rows = daily_rows(ticker)
    return pd.DataFrame({
        "timestamp": pd.bdate_range(DAILY_START, DAILY_END, tz="UTC").astype("datetime64[ns, UTC]"),
        **{col: [float(r[key]) for r in rows] for key, col in (
            ("open", "open"), ("high", "high"), ("low", "low"), ("close", "close"), ("volume", "volume"),
            ("adjOpen", "adj_open"), ("adjHigh", "adj_high"), ("adjLow", "adj_low"), ("adjClose", "adj_close"),
            ("adjVolume", "adj_volume"), ("divCash", "dividend"), ("splitFactor", "split"))},
    })


def iex_bar(ticker: str, ts: pd.Timestamp) -> dict[str, float]:
    """The fake's IEX bar of ``ticker`` starting at ``ts`` (deterministic)."""
    minute = int(ts.value // 60_000_000_000)
    close = 50.0 + _seed(ticker) % 50 + (minute % 37) * 0.05
    return {"open": round(close - 0.02, 4), "high": round(close + 0.05, 4), "low": round(close - 0.06, 4),
            "close": round(close, 4), "volume": float(100 + minute % 1000)}


def iex_bars(ticker: str, start: str, end: str, minutes: int) -> list[pd.Timestamp]:
    """Bar start times of the regular session on business days start … end at ``minutes`` spacing."""
    out = []
    for day in pd.bdate_range(start, end, tz="UTC"):
        out.extend(day + SESSION_OPEN + pd.Timedelta(minutes=m) for m in range(0, SESSION_MINUTES, minutes))
    return out


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Failure:
    """A scripted answer for the next matching request."""

    status: int
    retry_after: str | None = None
    body: str | None = None
    path_contains: str | None = None


@dataclass
class FakeTiingo:
    """The fake server; use as a context manager (or `start` / `stop`)."""

    token: str = "test-token"
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    overrides: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    delisted: dict[str, str] = field(default_factory=dict)  # ticker -> its last price date (YYYY-MM-DD)
    end_dates: dict[str, str] = field(default_factory=dict)  # ticker -> the metadata's endDate
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""

    # -- scripting ----------------------------------------------------------------------------
    def fail(self, status: int, times: int = 1, retry_after: str | None = None, body: str | None = None,
             path_contains: str | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` (and Retry-After / body)."""
        self.failures.extend(Failure(status, retry_after, body, path_contains) for _ in range(times))

    def delist(self, ticker: str, last_day: str) -> None:
        """End ``ticker``'s history at ``last_day`` (YYYY-MM-DD): no prices after it, metadata endDate it."""
        self.delisted[ticker] = last_day

    def override(self, path: str, body: str, status: int = 200, content_type: str = "application/json") -> None:
        """Always answer ``path`` with this body."""
        self.overrides[path] = (status, body, content_type)

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [r.path for r in self.requests]

    # -- the app ------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/tiingo/daily/{ticker}/prices", self._daily)
        app.router.add_get("/tiingo/daily/{ticker}", self._meta)
        app.router.add_get("/iex/{ticker}/prices", self._iex)
        app.middlewares.append(self._middleware)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Recorded(request.method, request.path, dict(request.query), dict(request.headers)))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if request.headers.get("Authorization") != f"Token {self.token}":
                return web.json_response({"detail": "Invalid token."}, status=401)
            for i, f in enumerate(self.failures):
                if f.path_contains is None or f.path_contains in request.path:
                    del self.failures[i]
                    headers = {"Retry-After": f.retry_after} if f.retry_after is not None else None
                    body = f.body if f.body is not None else json.dumps({"detail": f"scripted {f.status}"})
                    return web.Response(status=f.status, text=body, content_type="application/json",
                                        headers=headers)
            if request.path in self.overrides:
                status, body, ctype = self.overrides[request.path]
                return web.Response(status=status, text=body, content_type=ctype)
            return await handler(request)
        finally:
            self.in_flight -= 1

    @staticmethod
    def _not_found(ticker: str) -> web.Response:
        return web.json_response({"detail": f"Error: Ticker '{ticker}' not found"}, status=404)

    async def _daily(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"].upper()
        if ticker not in DAILY_TICKERS:
            return self._not_found(ticker)
        if request.query.get("resampleFreq", "daily") != "daily":
            return web.json_response({"detail": "Error: the fake serves resampleFreq=daily only"}, status=400)
        rows = daily_rows(ticker)
        if ticker in self.delisted:
            rows = [r for r in rows if r["date"][:10] <= self.delisted[ticker]]
        start, end = request.query.get("startDate"), request.query.get("endDate")
        if start is None:
            return web.json_response(rows[-1:])
        picked = [r for r in rows if start <= r["date"][:10] and (end is None or r["date"][:10] <= end)]
        return web.json_response(picked)

    async def _iex(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"].upper()
        if ticker not in IEX_TICKERS:
            return self._not_found(ticker)
        minutes = IEX_RESAMPLE.get(request.query.get("resampleFreq", "5min"))
        if minutes is None:
            return web.json_response({"detail": "Error: bad resampleFreq"}, status=400)
        start = request.query.get("startDate", DAILY_END)
        end = request.query.get("endDate", DAILY_END)
        columns = request.query.get("columns", "open,high,low,close").split(",")
        if ticker in self.delisted:
            end = min(end, self.delisted[ticker])
        out = []
        for i, ts in enumerate(iex_bars(ticker, start, end, minutes)):
            bar = iex_bar(ticker, ts)
            row: dict[str, Any] = {"date": _date_text(ts, i)}
            row.update({k: v for k, v in bar.items() if k in columns and k != "volume"})
            if "volume" in columns:
                row["volume"] = int(bar["volume"])
            out.append(row)
        return web.json_response(out)

    async def _meta(self, request: web.Request) -> web.Response:
        ticker = request.match_info["ticker"].upper()
        if ticker not in DAILY_TICKERS:
            return self._not_found(ticker)
        end = self.end_dates.get(ticker, self.delisted.get(ticker, DAILY_END))
        return web.json_response({"ticker": ticker.lower(), "name": f"{ticker} Holdings Inc",
                                  "exchangeCode": "NASDAQ", "startDate": DAILY_START, "endDate": end,
                                  "description": f"The fake company behind {ticker}."})

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeTiingo:
        """Serve on 127.0.0.1:<free port> in a background thread; sets `url`."""
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        error: list[BaseException] = []

        async def boot() -> None:
            self._runner = web.AppRunner(self.app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            host, port = self._runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(boot())
            except BaseException as exc:  # pragma: no cover - reported to the starting thread
                error.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-tiingo", daemon=True)
        self._thread.start()
        ready.wait(10)
        if error:
            raise error[0]
        return self

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FakeTiingo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
