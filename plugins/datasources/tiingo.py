"""tiingo: end-of-day and IEX intraday bars from the Tiingo REST API (https://api.tiingo.com).

Endpoints (``{base}`` is ``TIINGO_API_URL``, default ``https://api.tiingo.com``):

- ``GET {base}/tiingo/daily/<ticker>/prices?startDate=…&endDate=…&resampleFreq=daily`` — daily
  bars, raw and split/dividend-adjusted (frequency ``1d``);
- ``GET {base}/iex/<ticker>/prices?startDate=…&endDate=…&resampleFreq=5min&columns=open,high,low,close,volume``
  — IEX intraday bars (frequencies ``1min``, ``5min``, ``15min``, ``30min``, ``1h``, ``4h``);
- ``GET {base}/tiingo/daily/<ticker>`` — ticker metadata (`TiingoSource.metadata`).

Every request carries ``Authorization: Token <TIINGO_API_KEY>`` and a timeout. 429, 5xx,
timeouts and connection errors are retried with exponential backoff (``Retry-After`` is
honoured); 401/403, 404 and malformed bodies fail at once with a `DataError` subclass that
names the ticker. `TiingoSource.fetch_many` fetches symbols concurrently (aiohttp, bounded by a
semaphore) and works from sync code and from inside a running event loop; `afetch_many` is the
coroutine for async callers. See docs/datasources.md (## tiingo).

**Ended tickers (delistings).** `TiingoSource.ensure` marks a stored series as *ended* when
Tiingo's ticker metadata says so: Tiingo's ``endDate`` is a ticker's latest price date, so for
a live ticker it is at most a few days old. After a fetch, each unmarked series that stops
more than `ENDED_AFTER_DAYS` calendar days before the end of the range asked for (a shortfall:
the only case a delisting can explain) has its metadata read; when ``endDate`` is more than
`ENDED_AFTER_DAYS` days before the fetch date, the series is marked ended at its last stored
bar on or before ``endDate`` — provided that bar is on ``endDate``'s day (the stored series
reaches the ticker's end; one fetched only up to an earlier date is not marked, nor one holding
bars after ``endDate``). See `ended_mark`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import pandas as pd
from yarl import URL

from ...core.config import Settings
from ...core.errors import ConfigError, DataError
from ...core.timeutil import end_bound_utc, to_utc, to_utc_or_none
from ..hookspecs import hookimpl
from .base import CANONICAL, DataSource, FetchRange

if TYPE_CHECKING:  # pragma: no cover
    from ...core.marketdata import CatalogEntry, MarketDataStore

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.tiingo.com"
TICKER_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
DAILY_FREQUENCIES = {"1d": "daily"}
IEX_FREQUENCIES = {"1min": "1min", "5min": "5min", "15min": "15min", "30min": "30min", "1h": "1hour",
                   "4h": "4hour"}
# calendar days per IEX request, so one answer stays well under Tiingo's per-request row cap
IEX_WINDOW_DAYS = {"1min": 7, "5min": 30, "15min": 90, "30min": 180, "1h": 365, "4h": 1500}
# a spec without start/end: the last DEFAULT_DAILY_YEARS of daily bars, or the last DEFAULT_IEX_DAYS
# calendar days of intraday bars (IEX: a few requests per symbol, however fine the bars; see default_range)
DEFAULT_DAILY_YEARS = 10
DEFAULT_IEX_DAYS = 30
# Tiingo's daily endpoint answers only the latest bar without startDate: "full history" starts here
EARLIEST = pd.Timestamp("1900-01-01", tz="UTC")
# Tiingo JSON field -> canonical column
DAILY_FIELDS = {"open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume",
                "adjOpen": "adj_open", "adjHigh": "adj_high", "adjLow": "adj_low", "adjClose": "adj_close",
                "adjVolume": "adj_volume", "divCash": "dividend", "splitFactor": "split"}
IEX_FIELDS = {"open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume"}
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# a ticker whose metadata endDate (its latest price date) is more than this many calendar days
# before the fetch date has ended (a delisting); longer than any market closure (the longest
# since 1933: 4 trading days in September 2001, a week with the weekends)
ENDED_AFTER_DAYS = 10


# -- errors ---------------------------------------------------------------------------------------
class TiingoError(DataError):
    """Tiingo could not deliver (after retries where retrying makes sense); ``source`` is the ticker."""

    code = "tiingo_error"
    status = 502


class TiingoAuthError(TiingoError):
    """No API key, or Tiingo rejected it (401/403)."""

    code = "tiingo_auth"


class TiingoNotFoundError(TiingoError):
    """Tiingo does not know the ticker (404)."""

    code = "not_found"
    status = 404


class TiingoRateLimitError(TiingoError):
    """Still rate-limited (429) after the last attempt, or Retry-After beyond what we wait."""

    code = "tiingo_rate_limited"
    status = 503


class TiingoResponseError(TiingoError):
    """A 200 whose body is not what the endpoint documents (not JSON, not a list, missing fields)."""

    code = "tiingo_bad_response"


# -- helpers --------------------------------------------------------------------------------------
def normalize_ticker(symbol: str) -> str:
    """Tiingo's spelling of ``symbol``: upper-case, dots to dashes (``brk.a`` → ``BRK-A``), validated."""
    if not isinstance(symbol, str):
        raise DataError(f"invalid ticker {symbol!r}: not a string", str(symbol))
    ticker = symbol.strip().upper().replace(".", "-")
    if not TICKER_RE.fullmatch(ticker) or "--" in ticker:
        raise DataError(f"invalid ticker {symbol!r}: letters, digits, '-', '.' and '_' only, at most 32", symbol)
    return ticker


def _day(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, (pd.Timestamp(when) - pd.Timestamp.now(tz="UTC")).total_seconds())


def _snippet(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "…"


def _empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns, UTC]")})
    for c in columns:
        out[c] = pd.Series([], dtype=np.float64)
    return out


def _frame_from_rows(rows: list[Any], fields: Mapping[str, str], ticker: str, required: Sequence[str]) -> pd.DataFrame:
    """Tiingo price rows → canonical frame (UTC timestamps, float64, sorted, unique)."""
    columns = list(dict.fromkeys(fields.values()))
    if not rows:
        return _empty_frame(columns)
    dates: list[Any] = []
    data: dict[str, list[float]] = {c: [] for c in columns}
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "date" not in row:
            raise TiingoResponseError(f"Tiingo answered an unexpected row for {ticker} (row {i}): "
                                      f"{_snippet(json.dumps(row, default=str))}", ticker)
        missing = [k for k in required if k not in row]
        if missing:
            raise TiingoResponseError(f"Tiingo row {i} for {ticker} lacks {', '.join(missing)}", ticker)
        dates.append(row["date"])
        for key, col in fields.items():
            v = row.get(key)
            if key in row:
                seen.add(col)
            data[col].append(np.nan if v is None else v)
    try:
        ts = pd.to_datetime(pd.Series(dates, dtype=object), utc=True, format="ISO8601")
        frame = pd.DataFrame({"timestamp": ts.astype("datetime64[ns, UTC]")})
        for col in columns:
            if col in CANONICAL or col in seen:
                frame[col] = pd.to_numeric(pd.Series(data[col], dtype=object), errors="raise").astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise TiingoResponseError(f"Tiingo answered unreadable prices for {ticker}: {exc}", ticker) from None
    frame = frame.drop_duplicates("timestamp", keep="last").sort_values("timestamp", kind="stable")
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class TickerMetadata:
    """What ``GET /tiingo/daily/<ticker>`` says about a ticker."""

    ticker: str
    name: str | None
    exchange_code: str | None
    start_date: pd.Timestamp | None
    end_date: pd.Timestamp | None
    description: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (dates as YYYY-MM-DD)."""
        return {"ticker": self.ticker, "name": self.name, "exchange_code": self.exchange_code,
                "start_date": _day(self.start_date) if self.start_date is not None else None,
                "end_date": _day(self.end_date) if self.end_date is not None else None,
                "description": self.description}


def ended_mark(entry: CatalogEntry, end_date: pd.Timestamp | None, fetched: pd.Timestamp) -> int | None:
    """The UTC ns at which the stored series ``entry`` ends according to Tiingo's metadata
    ``end_date`` (the ticker's latest price date) read at ``fetched``, or None (not ended).

    Ended: ``end_date`` is more than `ENDED_AFTER_DAYS` calendar days before ``fetched``'s date.
    The mark is the stored series' last bar, which must lie on ``end_date``'s day (UTC): a series
    stored only up to an earlier date does not hold the final bar, and one with bars after
    ``end_date`` contradicts it; neither is marked."""
    if end_date is None:
        return None
    day = to_utc(end_date).normalize()
    if day >= to_utc(fetched).normalize() - pd.Timedelta(days=ENDED_AFTER_DAYS):
        return None  # a live ticker (its latest price is recent)
    last = entry.last
    if not (day <= last < day + pd.Timedelta(days=1)):
        return None
    return int(last.value)


class _Run:
    """One batch of requests: a session, the in-flight limit, and the first fatal error."""

    def __init__(self, session: aiohttp.ClientSession, limit: int) -> None:
        self.session = session
        self.sem = asyncio.Semaphore(limit)
        self.fatal: TiingoAuthError | None = None


def _run_sync(factory: Any) -> Any:
    """Run the coroutine made by ``factory()`` to completion from sync code.

    No running loop: ``asyncio.run``. Inside a running loop (a sync call from async code): in a
    worker thread with its own loop, so the caller's loop is never re-entered.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiingo") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


# -- the source -----------------------------------------------------------------------------------
class TiingoSource(DataSource):
    """Tiingo end-of-day (raw + adjusted) and IEX intraday bars over aiohttp."""

    name = "tiingo"
    description = ("Tiingo REST API: US end-of-day bars (raw and split/dividend-adjusted, dividends, "
                   "splits) and IEX intraday bars. Needs TIINGO_API_KEY.")
    frequencies = ("1d", "1min", "5min", "15min", "30min", "1h", "4h")

    def __init__(self, api_key: str | None = None, base_url: str = DEFAULT_BASE_URL, *, concurrency: int = 8,
                 timeout: float = 30.0, connect_timeout: float = 10.0, max_attempts: int = 4,
                 backoff_base: float = 0.5, backoff_max: float = 30.0, max_retry_after: float = 60.0) -> None:
        """No I/O here. ``max_attempts`` counts the first try; backoff is ``backoff_base·2^k`` (capped)."""
        url = URL(str(base_url).rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"TIINGO_API_URL must be an http(s) URL, got {base_url!r}",
                              {"variable": "TIINGO_API_URL"})
        if concurrency < 1 or max_attempts < 1 or timeout <= 0:
            raise ValueError("concurrency and max_attempts must be >= 1, timeout > 0")
        self.api_key = api_key or None
        self.base_url = url
        self.concurrency = int(concurrency)
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=min(connect_timeout, timeout))
        self.max_attempts = int(max_attempts)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_retry_after = float(max_retry_after)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> TiingoSource:
        """A source configured from TIINGO_API_KEY / TIINGO_API_URL (read through `Settings`)."""
        env = os.environ if environ is None else environ
        own = {k: env[k] for k in ("TIINGO_API_KEY", "TIINGO_API_URL") if k in env}
        settings = Settings.from_env(own)
        return cls(settings.tiingo_api_key, settings.tiingo_api_url, **kwargs)

    # -- description ------------------------------------------------------------------------
    def schema(self) -> dict[str, Any]:
        """The base schema plus ``configured`` (an API key is set)."""
        return {**super().schema(), "configured": self.api_key is not None}

    def default_range(self, frequency: str = "1d") -> tuple[pd.Timestamp, pd.Timestamp]:
        """A spec without start/end, by frequency: ``1d`` the last 10 years up to today (00:00 UTC);
        intraday (IEX) the last 30 calendar days up to today.

        The intraday window is short on purpose: a fetch asks the IEX endpoint for at most
        `IEX_WINDOW_DAYS` per request (7 days of 1-minute bars), so 30 days take at most 5 requests
        per symbol, where 10 years of 1-minute bars would take over 500.
        """
        today = pd.Timestamp.now(tz="UTC").normalize()
        if frequency in DAILY_FREQUENCIES:
            return today - pd.DateOffset(years=DEFAULT_DAILY_YEARS), today
        return today - pd.Timedelta(days=DEFAULT_IEX_DAYS), today

    def unavailable(self) -> str | None:
        """Without TIINGO_API_KEY nothing can be fetched: a spec on tiingo is refused at submit."""
        if self.api_key:
            return None
        return "TIINGO_API_KEY is not set: get a token at https://www.tiingo.com (account → API) and export it"

    def available_range(self, frequency: str = "1d") -> tuple[pd.Timestamp | None, pd.Timestamp]:
        """Up to now: Tiingo has no bars from the future (whether it has a symbol, only a fetch tells)."""
        return None, pd.Timestamp.now(tz="UTC")

    @staticmethod
    def normalize_symbol(symbol: str) -> str:
        """Tiingo's spelling of a symbol (``brk.a`` → ``BRK-A``); DataError if it cannot be a ticker."""
        return normalize_ticker(symbol)

    # -- sync API ---------------------------------------------------------------------------
    def fetch(self, symbol: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
              frequency: str = "1d", adjusted: bool = True) -> pd.DataFrame:
        """Canonical bars of ``symbol`` in [start, end] (an end at midnight includes that day).

        Daily frames carry raw OHLCV plus adj_* / dividend / split whatever ``adjusted`` says (the
        store keeps both, `load_panel(adjusted=…)` picks); IEX frames carry raw OHLCV only.
        """
        return self.fetch_many([symbol], start, end, frequency, adjusted)[symbol]

    def fetch_many(self, symbols: Sequence[str], start: pd.Timestamp | None, end: pd.Timestamp | None,
                   frequency: str = "1d", adjusted: bool = True) -> dict[str, pd.DataFrame]:
        """Fetch ``symbols`` concurrently (at most ``concurrency`` requests in flight); keys as given."""
        return _run_sync(lambda: self.afetch_many(symbols, start, end, frequency, adjusted))

    def metadata(self, symbol: str) -> TickerMetadata:
        """Name, exchange, first/last price date and description of a ticker."""
        return _run_sync(lambda: self.ametadata(symbol))

    def ensure(self, store: MarketDataStore, symbols: Sequence[str], rng: FetchRange,
               adjusted: bool = True) -> None:
        """`DataSource.ensure`, then mark the series that Tiingo says have ended (see the module
        docstring, "Ended tickers"; `ended_mark`)."""
        super().ensure(store, symbols, rng, adjusted)
        self.mark_ended(store, symbols, rng)

    def mark_ended(self, store: MarketDataStore, symbols: Sequence[str], rng: FetchRange) -> list[str]:
        """Read the metadata of the stored, unmarked series of ``symbols`` that stop more than
        `ENDED_AFTER_DAYS` days before ``rng``'s end (today without one) and mark those that have
        ended (`ended_mark`); returns the symbols marked. A metadata request that fails is logged
        and marks nothing: the data itself was fetched."""
        fetched = pd.Timestamp.now(tz="UTC")
        asked_to = to_utc(rng.end) if rng.end is not None else fetched.normalize()
        gap = pd.Timedelta(days=ENDED_AFTER_DAYS)
        stored = store.entries(self.name, rng.frequency, symbols)
        short = {s: e for s, e in stored.items() if e.ended is None and e.last < asked_to - gap}
        if not short:
            return []
        metas = _run_sync(lambda: self._ametadata_many(list(short)))
        marks: dict[str, int | None] = {}
        for sym, entry in short.items():
            meta = metas.get(sym)
            if isinstance(meta, BaseException):
                log.warning("tiingo: could not read the metadata of %s to check for a delisting: %s", sym, meta)
                continue
            ns = ended_mark(entry, meta.end_date if meta is not None else None, fetched)
            if ns is not None:
                marks[sym] = ns
        return store.mark_ended(self.name, rng.frequency, marks) if marks else []

    # -- async API --------------------------------------------------------------------------
    async def afetch(self, symbol: str, start: pd.Timestamp | None, end: pd.Timestamp | None,
                     frequency: str = "1d", adjusted: bool = True) -> pd.DataFrame:
        """Coroutine form of `fetch`."""
        return (await self.afetch_many([symbol], start, end, frequency, adjusted))[symbol]

    async def afetch_many(self, symbols: Sequence[str], start: pd.Timestamp | None, end: pd.Timestamp | None,
                          frequency: str = "1d", adjusted: bool = True) -> dict[str, pd.DataFrame]:
        """Coroutine form of `fetch_many`.

        All symbols are attempted; a single failure is re-raised as is, several are reported in one
        DataError (``problems`` lists each ticker and message). An auth failure stops the batch.
        """
        if frequency not in DAILY_FREQUENCIES and frequency not in IEX_FREQUENCIES:
            raise DataError(f"tiingo serves {', '.join(self.frequencies)}, not {frequency!r}", frequency)
        tickers = {s: normalize_ticker(s) for s in symbols}
        self._require_key()
        lo = to_utc_or_none(start)
        hi = to_utc_or_none(end)
        unique = list(dict.fromkeys(tickers.values()))
        if lo is not None and hi is not None and lo > end_bound_utc(hi, bare_date=False, midnight=True):
            return {s: self._empty(frequency) for s in symbols}
        async with self._session() as session:
            run = _Run(session, self.concurrency)
            results = await asyncio.gather(*(self._fetch_one(run, t, lo, hi, frequency) for t in unique),
                                           return_exceptions=True)
        by_ticker = dict(zip(unique, results, strict=True))
        errors = [(t, r) for t, r in by_ticker.items() if isinstance(r, BaseException)]
        for _, r in errors:
            if not isinstance(r, Exception):
                raise r
        if run.fatal is not None:
            raise run.fatal
        if len(errors) == 1:
            raise errors[0][1]
        if errors:
            problems = [{"symbol": t, "message": getattr(e, "message", str(e))} for t, e in errors]
            raise TiingoError(f"tiingo: {len(errors)} of {len(unique)} symbols failed: "
                              + "; ".join(f"{p['symbol']}: {p['message']}" for p in problems[:5])
                              + (" …" if len(problems) > 5 else ""), ",".join(t for t, _ in errors), problems)
        return {s: by_ticker[t].copy() for s, t in tickers.items()}

    async def ametadata(self, symbol: str) -> TickerMetadata:
        """Coroutine form of `metadata`."""
        ticker = normalize_ticker(symbol)
        self._require_key()
        async with self._session() as session:
            return await self._meta_one(_Run(session, 1), ticker)

    async def _ametadata_many(self, symbols: Sequence[str]) -> dict[str, TickerMetadata | BaseException]:
        """The metadata of ``symbols`` (at most ``concurrency`` requests in flight), each one's
        answer or the exception its request raised, by symbol as given."""
        tickers = {s: normalize_ticker(s) for s in symbols}
        self._require_key()
        async with self._session() as session:
            run = _Run(session, self.concurrency)
            answers = await asyncio.gather(*(self._meta_one(run, t) for t in tickers.values()),
                                           return_exceptions=True)
        return dict(zip(tickers, answers, strict=True))

    async def _meta_one(self, run: _Run, ticker: str) -> TickerMetadata:
        body = await self._get_json(run, self.base_url / "tiingo" / "daily" / ticker, {}, ticker)
        if not isinstance(body, dict) or "ticker" not in body:
            raise TiingoResponseError(f"Tiingo metadata for {ticker} is not an object with a ticker: "
                                      f"{_snippet(json.dumps(body, default=str))}", ticker)

        def date(key: str) -> pd.Timestamp | None:
            v = body.get(key)
            try:
                return to_utc(v).normalize() if v else None
            except (ValueError, TypeError):
                return None

        def text(key: str) -> str | None:
            v = body.get(key)
            return str(v).strip() if v not in (None, "") else None

        return TickerMetadata(ticker=str(body["ticker"]).upper(), name=text("name"),
                              exchange_code=text("exchangeCode"), start_date=date("startDate"),
                              end_date=date("endDate"), description=text("description"))

    # -- internals --------------------------------------------------------------------------
    def _require_key(self) -> None:
        if not self.api_key:
            raise TiingoAuthError("TIINGO_API_KEY is not set: get a token at https://www.tiingo.com "
                                  "(account → API) and export TIINGO_API_KEY", "tiingo")

    def _session(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Token {self.api_key}", "Content-Type": "application/json",
                   "Accept": "application/json"}
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        return aiohttp.ClientSession(headers=headers, timeout=self.timeout, connector=connector)

    @staticmethod
    def _empty(frequency: str) -> pd.DataFrame:
        fields = DAILY_FIELDS if frequency in DAILY_FREQUENCIES else IEX_FIELDS
        return _empty_frame(list(fields.values()))

    async def _fetch_one(self, run: _Run, ticker: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None,
                         frequency: str) -> pd.DataFrame:
        if frequency in DAILY_FREQUENCIES:
            url = self.base_url / "tiingo" / "daily" / ticker / "prices"
            query = {"startDate": _day(lo if lo is not None else EARLIEST),
                     "resampleFreq": DAILY_FREQUENCIES[frequency]}
            if hi is not None:
                query["endDate"] = _day(hi)
            rows = await self._get_rows(run, url, query, ticker)
            frame = _frame_from_rows(rows, DAILY_FIELDS, ticker, ("open", "high", "low", "close"))
        else:
            url = self.base_url / "iex" / ticker / "prices"
            base = {"resampleFreq": IEX_FREQUENCIES[frequency], "columns": "open,high,low,close,volume"}
            windows: list[dict[str, str]] = []
            if lo is None:  # Tiingo's default window (its most recent bars)
                windows.append({**base, **({"endDate": _day(hi)} if hi is not None else {})})
            else:
                last = (hi if hi is not None else pd.Timestamp.now(tz="UTC")).normalize()
                day, step = lo.normalize(), pd.Timedelta(days=IEX_WINDOW_DAYS[frequency])
                while day <= last:
                    stop = min(day + step - pd.Timedelta(days=1), last)
                    windows.append({**base, "startDate": _day(day), "endDate": _day(stop)})
                    day = stop + pd.Timedelta(days=1)
            rows = []
            for query in windows:
                rows.extend(await self._get_rows(run, url, query, ticker))
            frame = _frame_from_rows(rows, IEX_FIELDS, ticker, ("open", "high", "low", "close"))
        if lo is not None:
            frame = frame[frame["timestamp"] >= lo]
        if hi is not None:
            frame = frame[frame["timestamp"] <= end_bound_utc(hi, bare_date=False, midnight=True)]
        return frame.reset_index(drop=True)

    async def _get_rows(self, run: _Run, url: URL, query: dict[str, str], ticker: str) -> list[Any]:
        body = await self._get_json(run, url, query, ticker)
        if not isinstance(body, list):
            detail = body.get("detail") if isinstance(body, dict) else None
            shown = _snippet(json.dumps(body, default=str))
            what = f": {detail}" if detail else f" (got {type(body).__name__}: {shown})"
            raise TiingoResponseError(f"Tiingo did not answer a price list for {ticker}{what}", ticker)
        return body

    async def _get_json(self, run: _Run, url: URL, query: dict[str, str], ticker: str) -> Any:
        """GET with retries; the decoded JSON body of a 200, else a TiingoError naming ``ticker``."""
        target = url.with_query(query) if query else url
        last_problem = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            wait: float | None = None
            try:
                async with run.sem:
                    if run.fatal is not None:  # the key was rejected meanwhile: ask no more
                        raise run.fatal
                    async with run.session.get(target, allow_redirects=False) as resp:
                        text = await resp.text(errors="replace")
                        status = resp.status
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError) as exc:
                kind = "timed out" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__}: {exc})"
                last_problem = f"request {kind}"
            else:
                if status == 200:
                    try:
                        return json.loads(text)
                    except ValueError:
                        raise TiingoResponseError(f"Tiingo answered non-JSON for {ticker} (HTTP 200): "
                                                  f"{_snippet(text)}", ticker) from None
                detail = self._detail(text)
                if status in (401, 403):
                    run.fatal = TiingoAuthError(f"Tiingo rejected the API key (HTTP {status}){detail}", ticker)
                    raise run.fatal
                if status == 404:
                    raise TiingoNotFoundError(f"unknown ticker {ticker}: Tiingo has no such symbol "
                                              f"(HTTP 404){detail}", ticker)
                if status not in RETRY_STATUS:
                    raise TiingoError(f"Tiingo answered HTTP {status} for {ticker}{detail}", ticker)
                last_problem = f"HTTP {status}{detail}"
                if retry_after is not None:
                    if retry_after > self.max_retry_after:
                        raise TiingoRateLimitError(
                            f"Tiingo asks to retry {ticker} after {retry_after:.0f} s (HTTP {status}), longer than "
                            f"the {self.max_retry_after:.0f} s we wait; try again later", ticker)
                    wait = retry_after
            if attempt == self.max_attempts:
                break
            if wait is None:
                wait = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)) * (1 + 0.25 * random.random())
            await asyncio.sleep(wait)
        cls = TiingoRateLimitError if last_problem.startswith("HTTP 429") else TiingoError
        raise cls(f"Tiingo request for {ticker} failed after {self.max_attempts} attempts: {last_problem}", ticker)

    @staticmethod
    def _detail(text: str) -> str:
        try:
            body = json.loads(text)
        except ValueError:
            return f": {_snippet(text, 120)}" if text.strip() else ""
        if isinstance(body, dict) and body.get("detail"):
            return f": {_snippet(str(body['detail']), 200)}"
        return ""


@hookimpl
def register_data_sources() -> list[DataSource]:
    """The tiingo source, configured from the environment (no network here)."""
    return [TiingoSource.from_env()]
