"""Settings: every environment variable gpu_backtest reads, its default and its validation.

`Settings.from_env()` is the one place the environment is read. An invalid value raises
`ConfigError` naming the variable, so the server and the command fail at start-up, not later.
The variables of the original seed keep the seed's names and defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}


def _bool(name: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}", {"variable": name})


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            v = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}", {"variable": name}) from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {v}", {"variable": name})
        return v

    return parse


def _fraction(name: str, raw: str) -> float:
    try:
        v = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}", {"variable": name}) from None
    if not 0.0 < v <= 1.0:
        raise ConfigError(f"{name} must be a fraction in (0, 1], got {v}", {"variable": name})
    return v


def _seconds(name: str, raw: str) -> float:
    try:
        v = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}", {"variable": name}) from None
    if not (v > 0 and v < 86_400 * 365):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}", {"variable": name})
    return v


def _days(name: str, raw: str) -> float:
    try:
        v = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of days, got {raw!r}", {"variable": name}) from None
    if not (v >= 0 and v < 100_000):
        raise ConfigError(f"{name} must be 0 (keep forever) or a positive number of days, got {raw!r}",
                          {"variable": name})
    return v


def parse_bytes(name: str, raw: str) -> int:
    """Parse ``512MiB``, ``2GB``, ``1048576`` into bytes; ConfigError naming ``name`` otherwise."""
    m = _SIZE_RE.fullmatch(raw)
    if not m:
        raise ConfigError(f"{name} must be a size such as 512MiB or 2GB, got {raw!r}", {"variable": name})
    unit = (m.group(2) or "").upper().rstrip("B")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}", {"variable": name})
    return value


def _str(name: str, raw: str) -> str:
    return raw


def _opt_str(name: str, raw: str) -> str | None:
    return raw or None


def _schedule(name: str, raw: str) -> tuple[float, ...]:
    """``5,15,60`` → (5.0, 15.0, 60.0): seconds between retries, each positive."""
    out = []
    for part in raw.split(","):
        if part.strip():
            out.append(_seconds(name, part))
    return tuple(out)


def _address(name: str, raw: str) -> str:
    """A ``host:port`` listening address (``127.0.0.1:8787``, ``:8787`` = every interface)."""
    v = raw.strip()
    _host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be host:port (e.g. 127.0.0.1:8787), got {raw!r}", {"variable": name})
    return v


def _public_url(name: str, raw: str) -> str | None:
    v = raw.strip().rstrip("/")
    if not v:
        return None
    if not re.match(r"^https?://[^/\s?#@]+(/[^\s?#]*)?$", v):
        raise ConfigError(f"{name} must be an http(s) base URL such as https://backtest.example.com, got {raw!r}",
                          {"variable": name})
    return v


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        v = raw.strip().lower()
        if v not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}", {"variable": name})
        return v

    return parse


def _origins(name: str, raw: str) -> tuple[str, ...]:
    """``https://a.example, http://localhost:3000`` → the origins (scheme://host[:port], no path); ``*``: any."""
    out = []
    for part in raw.split(","):
        origin = part.strip().rstrip("/")
        if not origin:
            continue
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
            raise ConfigError(f"{name}: {origin!r} is not an origin such as https://app.example.com",
                              {"variable": name})
        out.append(origin)
    return tuple(out)


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "gpu_backtest")


def _env(var: str, parse: Callable[[str, str], Any], default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": var, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Field metadata names each field's environment variable."""

    # --- the seed's variables (names and defaults kept) ---
    host: str = _env("GPU_SERVER_HOST", _str, "0.0.0.0", "address the server binds")
    port: int = _env("GPU_SERVER_PORT", _int(1, 65535), 5050, "port the server listens on")
    debug: bool = _env("GPU_SERVER_DEBUG", _bool, True,
                       "DEBUG lines of gpu_backtest's own loggers (never of libraries; never tracebacks to clients)")
    log_format: str = _env("GPU_BACKTEST_LOG_FORMAT", _choice("text", "json"), "text",
                           "server log lines on stderr: text, or json (one object a line, for log shippers)")
    database_url: str | None = _env(
        "DATABASE_URL", _opt_str, None, "SQLAlchemy URL; unset: SQLite file in the data directory"
    )
    gpu_device: int = _env("GPU_DEVICE", _int(0, 1024), 0, "CUDA device id")
    max_concurrent_jobs: int = _env("MAX_CONCURRENT_JOBS", _int(1, 10_000), 10, "jobs running at once")
    gpu_memory_limit: float = _env(
        "GPU_MEMORY_LIMIT", _fraction, 0.9, "fraction of device memory the engine plans against"
    )
    tiingo_api_key: str | None = _env("TIINGO_API_KEY", _opt_str, None, "Tiingo API token")
    api_key_required: bool = _env("API_KEY_REQUIRED", _bool, False, "require X-API-Key on every endpoint")
    api_key: str | None = _env("GPU_SERVER_API_KEY", _opt_str, None, "the API key (required if above)")
    # --- added by gpu_backtest ---
    data_dir: str = _env(
        "GPU_BACKTEST_DATA_DIR", _str, _default_data_dir(), "market data, job database and artifacts"
    )
    backend: str = _env("GPU_BACKTEST_BACKEND", _choice("auto", "cpu", "cuda"), "auto", "array backend")
    cpu_memory_limit: int = _env(
        "GPU_BACKTEST_CPU_MEMORY_LIMIT", parse_bytes, 256 * 1024**2, "memory budget for one CPU chunk of columns"
    )
    max_columns: int = _env(
        "GPU_BACKTEST_MAX_COLUMNS", _int(1), 5_000_000, "most columns (symbols × combinations) in one job"
    )
    max_grid: int = _env("GPU_BACKTEST_MAX_GRID", _int(1), 100_000, "most parameter combinations in one job")
    tiingo_api_url: str = _env("TIINGO_API_URL", _str, "https://api.tiingo.com", "Tiingo base URL")
    dask_scheduler_address: str | None = _env(
        "DASK_SCHEDULER_ADDRESS", _opt_str, None, "use this Dask scheduler instead of a local cluster"
    )
    max_upload_bytes: int = _env(
        "GPU_BACKTEST_MAX_UPLOAD_BYTES", parse_bytes, 100 * 1024**2, "largest accepted data upload"
    )
    market_root: str | None = _env(
        "GPU_BACKTEST_MARKET_ROOT", _opt_str, None,
        "market-data root: a directory shared by servers and workers, or s3://bucket/prefix; "
        "unset: <data dir>/market",
    )
    artifact_root: str | None = _env(
        "GPU_BACKTEST_ARTIFACT_ROOT", _opt_str, None,
        "where workers write job results (directory or s3://bucket/prefix); unset: <data dir>/artifacts",
    )
    partition_cells: int = _env(
        "GPU_BACKTEST_PARTITION_CELLS", _int(1), 50_000_000,
        "bar × column cells per partition task (sets how many symbols a task takes)",
    )
    fused_signals: bool = _env(
        "GPU_BACKTEST_FUSED_SIGNALS", _bool, True,
        "sweeps compute a strategy's signals inside the kernel where it has a fused form (false: always "
        "the array form; results are identical)",
    )
    auto_migrate: bool = _env(
        "GPU_BACKTEST_AUTO_MIGRATE", _bool, True,
        "apply the job database's schema migrations at start-up (false: refuse to start on an older schema)",
    )
    lease_s: float = _env(
        "GPU_BACKTEST_LEASE_S", _seconds, 30.0,
        "seconds a server's claim on a running job lasts without a heartbeat; then another server re-runs it",
    )
    heartbeat_s: float = _env(
        "GPU_BACKTEST_HEARTBEAT_S", _seconds, 10.0,
        "seconds between a server's lease renewals (and expired-lease checks); well under the lease",
    )
    max_attempts: int = _env(
        "GPU_BACKTEST_MAX_ATTEMPTS", _int(1, 100), 3,
        "runs of a job lost with their server (expired leases) before it fails with too_many_attempts",
    )
    shutdown_grace_s: float = _env(
        "GPU_BACKTEST_SHUTDOWN_GRACE_S", _seconds, 30.0,
        "on SIGTERM, seconds a server lets its running jobs finish before handing them back to the queue",
    )
    task_retries: int = _env(
        "GPU_BACKTEST_TASK_RETRIES", _int(0, 100), 3, "times a cluster task is retried after a worker is lost"
    )
    task_timeout_s: float = _env(
        "GPU_BACKTEST_TASK_TIMEOUT_S", _seconds, 900.0,
        "a job fails with task_timeout when none of its cluster tasks finishes for this long (a stuck worker)",
    )
    max_symbols: int = _env(
        "GPU_BACKTEST_MAX_SYMBOLS", _int(1), 50_000, "most symbols in one job (checked at submit)"
    )
    retention_days: float = _env(
        "GPU_BACKTEST_RETENTION_DAYS", _days, 30.0,
        "finished jobs and their results are deleted this many days after they end (0: keep them)",
    )
    io_threads: int = _env(
        "GPU_BACKTEST_IO_THREADS", _int(2, 1024), 16,
        "threads for the requests' database and file work (jobs compute on threads of their own)",
    )
    public_docs: bool = _env(
        "GPU_BACKTEST_PUBLIC_DOCS", _bool, False,
        "serve /docs (the API explorer), its files and /openapi.json without an API key",
    )
    console_secure_cookie: bool = _env(
        "GPU_BACKTEST_CONSOLE_SECURE_COOKIE", _bool, False,
        "mark the web console's session cookie Secure on plain-http requests too (behind a TLS-terminating "
        "proxy; https requests always get it)",
    )
    cors_origins: tuple[str, ...] = _env(
        "GPU_BACKTEST_CORS_ORIGINS", _origins, (),
        "comma-separated browser origins allowed by CORS (e.g. https://lab.example.com); empty: no CORS headers",
    )

    # --- edge security (issue 13) ---
    max_concurrent_uploads: int = _env(
        "GPU_BACKTEST_MAX_CONCURRENT_UPLOADS", _int(1, 1000), 2,
        "data uploads handled at once by one server; more are answered 429 with Retry-After",
    )
    body_timeout_s: float = _env(
        "GPU_BACKTEST_BODY_TIMEOUT_S", _seconds, 60.0,
        "seconds a client has to send a request body (POST /backtest, uploads); slower: 408 and the "
        "connection is closed",
    )
    public_url: str | None = _env(
        "GPU_BACKTEST_PUBLIC_URL", _public_url, None,
        "base URL clients reach this service at (https://host[:port][/prefix]): absolute links in callbacks "
        "and Location headers; unset: http://<GPU_SERVER_HOST or this machine's name>:<GPU_SERVER_PORT>",
    )
    callback_allow: str = _env(
        "GPU_BACKTEST_CALLBACK_ALLOW", _str, "",
        "comma list of CIDRs (10.0.0.0/8), addresses or host names a callback_url may reach although "
        "private, loopback or link-local; empty: only public addresses",
    )
    callback_retry_s: tuple[float, ...] = _env(
        "GPU_BACKTEST_CALLBACK_RETRY_S", _schedule, (5.0, 15.0, 60.0, 180.0, 600.0),
        "seconds before each retry of a failed callback (comma list; its length is the number of retries)",
    )
    callback_timeout_s: float = _env(
        "GPU_BACKTEST_CALLBACK_TIMEOUT_S", _seconds, 10.0, "seconds one callback attempt may take",
    )
    dashboard_address: str = _env(
        "GPU_BACKTEST_DASHBOARD_ADDRESS", _address, "127.0.0.1:8787",
        "where the local Dask cluster's dashboard listens (no authentication: keep it on loopback; "
        ":8787 = every interface)",
    )
    warmup: bool = _env(
        "GPU_BACKTEST_WARMUP", _bool, True,
        "at start, compile the kernels in the background (a helper process and each cluster worker) so the "
        "first job finds them compiled; false: compile on the first job",
    )

    @property
    def market_uri(self) -> str:
        """The market-data root (GPU_BACKTEST_MARKET_ROOT, else ``<data dir>/market``)."""
        return self.market_root or str(Path(self.data_dir).expanduser() / "market")

    @property
    def artifact_uri(self) -> str:
        """The artifact root (GPU_BACKTEST_ARTIFACT_ROOT, else ``<data dir>/artifacts``)."""
        return self.artifact_root or str(Path(self.data_dir).expanduser() / "artifacts")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every variable from ``environ`` (default ``os.environ``); keyword overrides win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = f.metadata["env"]
            if f.name in overrides:
                values[f.name] = overrides[f.name]
            elif var in env:
                values[f.name] = f.metadata["parse"](var, env[var])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-field checks."""
        if self.heartbeat_s >= self.lease_s:
            raise ConfigError(
                f"GPU_BACKTEST_HEARTBEAT_S ({self.heartbeat_s:g}) must be shorter than GPU_BACKTEST_LEASE_S "
                f"({self.lease_s:g}); a third of it or less is advised", {"variable": "GPU_BACKTEST_HEARTBEAT_S"})
        if self.api_key_required and not self.api_key:
            raise ConfigError(
                "API_KEY_REQUIRED is true but GPU_SERVER_API_KEY is not set", {"variable": "GPU_SERVER_API_KEY"}
            )
        from .netpolicy import parse_allow

        parse_allow(self.callback_allow, "GPU_BACKTEST_CALLBACK_ALLOW")
        from .storage import InvalidStorageURI, check_uri

        for var, uri in (("GPU_BACKTEST_MARKET_ROOT", self.market_root),
                         ("GPU_BACKTEST_ARTIFACT_ROOT", self.artifact_root)):
            if uri:
                try:
                    check_uri(uri)
                except InvalidStorageURI as exc:
                    raise ConfigError(f"{var}: {exc.message}", {"variable": var, **exc.details}) from None

    @staticmethod
    def documentation() -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting, for the README and ``--help``."""
        return [(f.metadata["env"], repr(f.default), f.metadata["doc"]) for f in fields(Settings)]
