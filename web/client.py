"""A small synchronous Python client for the gpu_backtest HTTP API (standard library only).

It is what the main AlphaStrategyLab application imports to run backtests on this server;
it needs nothing beyond the Python standard library (``urllib.request``)::

    from gpu_backtest.web.client import ApiError, BacktestClient, JobFailed

    client = BacktestClient("http://gpu-box:5050", api_key="…", timeout=30)
    spec = {"strategy": "sma_crossover", "symbols": ["SYN000"], "source": "synthetic",
            "params": {"fast": {"start": 5, "stop": 50, "step": 5}, "slow": [100, 200]}}
    try:
        job = client.run(spec, on_progress=lambda j: print(j["stage"], j["progress"]))
    except ApiError as exc:        # 4xx from the server, e.g. 422 with exc.details["field"]
        print(exc.status, exc.code, exc.message, exc.details)
    except JobFailed as exc:       # the job ran and failed: the server's error
        print(exc.code, exc.message)
    else:
        print(job["top"][0])                                 # best column, with its metrics
        best = client.details(job["job_id"])[0]              # top-k equity curves and trades
        other = client.column(job["job_id"], 5)              # any column's, computed on demand
        page = client.results(job["job_id"], limit=100, sort="-sharpe")   # the full table, paged
        csv_text = client.results(job["job_id"], format="csv")
        parquet_bytes = client.results(job["job_id"], format="parquet")

    client.upload("AAPL.csv", symbol="AAPL")                 # CSV/Parquet OHLCV into the data store
    client.data_symbols(source="upload")

Behaviour:

- Every call has a timeout (``timeout`` seconds, per HTTP request).
- A request answered 503, or that fails to connect / is reset / times out, is retried up to
  ``retries`` times with exponential backoff (``backoff`` × 2^attempt seconds, or the
  server's ``Retry-After`` when it sends one, capped at 30 s). Other errors (4xx, 500) are
  not retried. `submit` always sends an ``Idempotency-Key`` (a random one unless you give
  yours), so a retried submission never creates a second job.
- Any error answer raises `ApiError(status, code, message, details)` from the server's JSON
  envelope ``{"error": {"code", "message", "details"}, "request_id"}``; a server that cannot
  be reached after the retries raises `TransportError`.
- `wait` long-polls the job (``GET /backtest/{id}?view=status&wait=S``: the server answers as
  soon as the job is final, or after S seconds) and returns its compact document (`get`): a
  ``succeeded`` or ``cancelled`` job is returned, a ``failed`` one raises `JobFailed` (an
  `ApiError` whose code/message/details are the job's error), and exceeding ``timeout``
  raises `WaitTimeout`.
- Job documents are compact: status, progress, timings, ``info`` and the ``top`` rows' metrics.
  Equity curves and trades: `details` (the top-k, as stored) and `column` (any column).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import mimetypes
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..core.jobstatus import FAILED, FINAL_STATUSES

__all__ = ["ApiError", "BacktestClient", "ClientError", "JobFailed", "TransportError", "WaitTimeout"]

USER_AGENT = "gpu-backtest-client/2"
MAX_RETRY_AFTER_S = 30.0
LONG_POLL_S = 30.0  # the longest ?wait= one request of `wait` asks for (the server allows 60)
MIN_POLL_GAP_S = 0.05  # `wait` never asks again sooner, should a server answer a long-poll early


class ClientError(Exception):
    """Base class of everything this client raises."""


class ApiError(ClientError):
    """The server answered with an error: HTTP ``status`` and the envelope's ``code``, ``message``, ``details``."""

    def __init__(self, status: int | None, code: str, message: str, details: Any = None,
                 request_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status is not None else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id


class JobFailed(ApiError):
    """`wait` saw the job end ``failed``; ``code``/``message``/``details`` are the job's error, ``job`` its document."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        err = job.get("error") or {}
        super().__init__(None, str(err.get("code") or "job_failed"),
                         str(err.get("message") or f"job {job.get('job_id')} failed"), err.get("details"))
        self.job = dict(job)
        self.job_id = job.get("job_id")


class TransportError(ClientError):
    """The server could not be reached (connection refused/reset, timeout) after every retry."""


class WaitTimeout(ClientError, TimeoutError):
    """`wait` gave up before the job reached a final state; ``job`` is the last document seen."""

    def __init__(self, job: Mapping[str, Any], timeout: float) -> None:
        super().__init__(f"job {job.get('job_id')} still {job.get('status')} after {timeout:g} s")
        self.job = dict(job)


class _Retryable(Exception):
    def __init__(self, reason: str, delay: float | None = None, error: Exception | None = None) -> None:
        super().__init__(reason)
        self.delay = delay
        self.error = error


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, when.timestamp() - time.time()))


def _api_error(status: int, body: bytes, headers: Any) -> ApiError:
    """An ApiError from an error answer: the JSON envelope when there is one, else the text."""
    rid = headers.get("X-Request-ID") if headers is not None else None
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        return ApiError(status, str(err.get("code") or "error"), str(err.get("message") or ""), err.get("details"),
                        doc.get("request_id") or rid)
    text = body.decode("utf-8", "replace").strip()[:500]
    return ApiError(status, "http_error", text or http.client.responses.get(status, "error"), None, rid)


class BacktestClient:
    """Client of one gpu_backtest server (``base_url`` like ``http://host:5050``); thread-safe, stateless."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 30, retries: int = 3,
                 backoff: float = 0.5) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError("timeout must be > 0, retries and backoff >= 0")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self._opener = urllib.request.build_opener()

    def __repr__(self) -> str:
        return f"BacktestClient({self.base_url!r})"

    # -- transport ---------------------------------------------------------------------------
    def _url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = self.base_url + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        return url

    def _once(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            try:
                data = exc.read()
            except (OSError, http.client.HTTPException):
                data = b""
            finally:
                exc.close()
            if exc.code == 503:
                raise _Retryable("503 from the server", _retry_after(exc.headers.get("Retry-After")),
                                 _api_error(503, data, exc.headers)) from None
            raise _api_error(exc.code, data, exc.headers) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (OSError, http.client.HTTPException)):  # refused, reset, DNS, socket timeout
                raise _Retryable(f"cannot reach {self.base_url}: {reason}", None, exc) from None
            raise TransportError(f"{method} {url}: {reason}") from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            # a timeout or reset while reading the answer (after the connection was made)
            raise _Retryable(f"{method} {url}: {type(exc).__name__}: {exc}", None, exc) from None

    def _request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                 json_body: Any = None, body: bytes | None = None, content_type: str | None = None,
                 headers: Mapping[str, str] | None = None) -> tuple[int, Any, bytes]:
        hdrs = {"User-Agent": USER_AGENT, "Accept": "application/json, */*"}
        if self.api_key:
            hdrs["X-API-Key"] = self.api_key
        if json_body is not None:
            body = json.dumps(json_body, allow_nan=False).encode("utf-8")
            content_type = "application/json"
        if content_type:
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        url = self._url(path, query)
        attempt = 0
        while True:
            try:
                return self._once(method, url, body, hdrs)
            except _Retryable as exc:
                if attempt >= self.retries:
                    if isinstance(exc.error, ApiError):
                        raise exc.error from None
                    raise TransportError(f"{exc} (after {attempt + 1} attempts)") from exc.error
                delay = exc.delay if exc.delay is not None else self.backoff * 2**attempt
                time.sleep(delay * (1.0 + 0.1 * random.random()))  # a little jitter against thundering herds
                attempt += 1

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        _, _, data = self._request(method, path, **kw)
        return json.loads(data.decode("utf-8")) if data else None

    # -- backtests ---------------------------------------------------------------------------
    def submit(self, spec: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /backtest: queue a backtest or sweep; returns ``{"job_id", "status", "links", …}``.

        Without ``idempotency_key`` a random one is sent, so retries cannot duplicate the job;
        pass your own to make resubmitting the same request (e.g. after a crash) return the same job.
        """
        key = idempotency_key or uuid.uuid4().hex
        return self._json("POST", "/backtest", json_body=dict(spec), headers={"Idempotency-Key": key})

    def _job_path(self, job_id: str, part: str = "") -> str:
        return f"/backtest/{urllib.parse.quote(job_id, safe='')}{part}"

    def get(self, job_id: str, view: str = "compact", top: int | None = None,
            wait: float | None = None) -> dict[str, Any]:
        """GET /backtest/{job_id}: the compact document — status, progress, stage, ``eta_s``,
        ``timings``, error, ``info`` and the ``top`` rows' metrics (``top``: how many, default 10).

        ``view="status"``: only job_id, status, progress, stage, eta_s, error, links; ``"full"``:
        also the spec and the whole stored summary (large). ``wait``: long-poll, the server answers
        once the job is final or after ``wait`` seconds (at most 60; keep it below ``timeout``)."""
        if view not in ("compact", "status", "full"):
            raise ValueError("view must be compact, status or full")
        query = {"view": None if view == "compact" else view, "top": top,
                 "wait": None if wait is None else f"{wait:.3f}"}
        return self._json("GET", self._job_path(job_id), query=query)

    def status(self, job_id: str) -> dict[str, Any]:
        """The compact document (`get`); ``get(job_id, view="status")`` is the lightest one."""
        return self.get(job_id)

    def details(self, job_id: str) -> list[dict[str, Any]]:
        """GET /backtest/{job_id}/details: the top-k columns (best first), each with ``column``,
        ``symbol``, ``params``, ``metrics``, ``equity`` {time, value} and ``trades``."""
        return self._json("GET", self._job_path(job_id, "/details"))["details"]

    def column(self, job_id: str, n: int) -> dict[str, Any]:
        """GET /backtest/{job_id}/columns/{n}: any column's metrics, equity curve and trades,
        computed on demand (``n``: the results table's ``column``; 404 when there is none)."""
        return self._json("GET", self._job_path(job_id, f"/columns/{int(n)}"))

    def report(self, job_id: str, column: int | None = None) -> str:
        """GET /backtest/{job_id}/report (or ``/columns/{column}/report``): the HTML report, one
        self-contained page (docs/report.md)."""
        part = "/report" if column is None else f"/columns/{int(column)}/report"
        _, _, data = self._request("GET", self._job_path(job_id, part), headers={"Accept": "text/html"})
        return data.decode("utf-8")

    def jobs(self, status: str | None = None, limit: int | None = None, offset: int | None = None) -> dict[str, Any]:
        """GET /backtest: ``{"jobs", "total", "limit", "offset"}``, newest first; each job brief
        (status, progress, timings, strategy, n_symbols, n_columns)."""
        return self._json("GET", "/backtest", query={"status": status, "limit": limit, "offset": offset})

    def wait(self, job_id: str, poll: float = 1.0, timeout: float | None = None,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Long-poll until the job is final and return its compact document (succeeded or cancelled).

        Each request asks the server to answer once the job is final (``?wait=``), so a short job is
        seen done at once and a long one costs a request every 30 s (every ``poll`` seconds when
        ``on_progress`` is given: ``on_progress(status_doc)`` is called whenever status, stage or
        progress changes).

        Raises `JobFailed` when it failed, `WaitTimeout` after ``timeout`` seconds (None: no limit).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[Any, ...] | None = None
        longest = min(LONG_POLL_S, max(0.05, self.timeout - 2.0 if self.timeout > 10 else self.timeout * 0.5))
        if on_progress is not None:
            longest = min(longest, max(0.05, poll))
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            span = longest if left is None else max(0.001, min(longest, left))
            t0 = time.monotonic()
            doc = self.get(job_id, view="status", wait=span)
            key = (doc.get("status"), doc.get("stage"), doc.get("progress"))
            if on_progress is not None and key != seen:
                on_progress(doc)
            seen = key
            if doc.get("status") in FINAL_STATUSES:
                job = self.get(job_id)
                if job.get("status") == FAILED:
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(doc, timeout or 0.0)
            early = MIN_POLL_GAP_S - (time.monotonic() - t0)
            if early > 0:  # the server did not hold the request: do not spin
                time.sleep(early if deadline is None else max(0.0, min(early, deadline - time.monotonic())))

    def run(self, spec: Mapping[str, Any], idempotency_key: str | None = None, poll: float = 1.0,
            timeout: float | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None
            ) -> dict[str, Any]:
        """`submit` then `wait`: the final compact job document (``info``, ``top`` rows)."""
        job = self.submit(spec, idempotency_key)
        return self.wait(job["job_id"], poll=poll, timeout=timeout, on_progress=on_progress)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """DELETE /backtest/{job_id}: a queued job never runs; a running one stops at its next chunk.
        A finished job raises `ApiError` 409 (``details["status"]`` is its status)."""
        return self._json("DELETE", self._job_path(job_id))

    def results(self, job_id: str, format: str = "json", limit: int | None = None, offset: int | None = None,
                sort: str | None = None) -> Any:
        """GET /backtest/{job_id}/results: the full per-column table of a succeeded job.

        ``format="json"``: ``{"total", "limit", "offset", "columns", "rows"}`` (one page; ``limit``
        default 100 on the server); ``"csv"``: the whole table as text; ``"parquet"``: the file's
        bytes. ``sort``: a column name, ``-name`` for descending.
        """
        if format not in ("json", "csv", "parquet"):
            raise ValueError("format must be json, csv or parquet")
        query = {"format": format, "limit": limit, "offset": offset, "sort": sort}
        _, _, data = self._request("GET", self._job_path(job_id, "/results"), query=query)
        if format == "json":
            return json.loads(data.decode("utf-8"))
        if format == "csv":
            return data.decode("utf-8")
        return data

    # -- catalogue, status, data -------------------------------------------------------------
    def strategies(self) -> list[dict[str, Any]]:
        """GET /strategies: each strategy's name, description and parameter schema."""
        return self._json("GET", "/strategies")["strategies"]

    def save_strategy(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """POST /strategies: save an expression strategy (with its ``name``) as version 1."""
        return self._json("POST", "/strategies", json_body=dict(doc))

    def update_strategy(self, name: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """PUT /strategies/{name}: save the next version of a saved strategy."""
        return self._json("PUT", f"/strategies/{urllib.parse.quote(name, safe='')}", json_body=dict(doc))

    def get_strategy(self, name: str, version: int | None = None) -> dict[str, Any]:
        """GET /strategies/{name}: a saved strategy's document (the latest version by default)."""
        query = {"version": version} if version is not None else None
        return self._json("GET", f"/strategies/{urllib.parse.quote(name, safe='')}", query=query)

    def delete_strategy(self, name: str) -> dict[str, Any]:
        """DELETE /strategies/{name}: every version of a saved strategy."""
        return self._json("DELETE", f"/strategies/{urllib.parse.quote(name, safe='')}")

    def gpu_status(self) -> dict[str, Any]:
        """GET /gpu/status: the device (or why there is none), the engine backend and the Dask cluster."""
        return self._json("GET", "/gpu/status")

    def health(self) -> dict[str, Any]:
        """GET /health."""
        return self._json("GET", "/health")

    def data_sources(self) -> list[dict[str, Any]]:
        """GET /data/sources: each source with its frequencies and number of stored series."""
        return self._json("GET", "/data/sources")["sources"]

    def data_symbols(self, source: str | None = None, frequency: str | None = None, prefix: str | None = None,
                     limit: int | None = None, offset: int | None = None) -> dict[str, Any]:
        """GET /data/symbols: ``{"symbols": [{source, symbol, …, ended}], "total", …}``."""
        return self._json("GET", "/data/symbols", query={"source": source, "frequency": frequency, "prefix": prefix,
                                                          "limit": limit, "offset": offset})

    def upload(self, path: str | os.PathLike[str], symbol: str | None = None, source: str = "upload",
               frequency: str = "1d", delisted: bool = False) -> dict[str, Any]:
        """POST /data/upload: store a CSV/Parquet OHLCV file; returns ``{"stored": [entries]}``.

        ``symbol`` defaults to the file's ``symbol`` column or its name's stem (server side);
        ``delisted``: the file's series have ended (marked ended at their last bar).
        """
        p = Path(path)
        data = p.read_bytes()
        boundary = "gbt-" + uuid.uuid4().hex
        fields = {"source": source, "frequency": frequency}
        if symbol is not None:
            fields["symbol"] = symbol
        if delisted:
            fields["delisted"] = "true"
        ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        if p.suffix.lower() in (".parquet", ".pq", ".parq"):
            ctype = "application/vnd.apache.parquet"
        parts: list[bytes] = []
        for name, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                         + value.encode("utf-8") + b"\r\n")
        filename = p.name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        return self._json("POST", "/data/upload", body=b"".join(parts),
                          content_type=f"multipart/form-data; boundary={boundary}")
