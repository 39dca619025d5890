"""The server's logging: one stderr handler, text or JSON lines, debug for our own loggers only.

`configure_logging(debug, fmt)` (what ``gpu-backtest serve`` calls first):

- the root logger at INFO with one handler on stderr; ``GPU_SERVER_DEBUG`` puts only the
  ``gpu_backtest.*`` loggers at DEBUG — never numba's, Dask's or any other library's;
- libraries that talk too much are held at WARNING (numba, distributed, alembic, …);
- ``GPU_BACKTEST_LOG_FORMAT=json``: one JSON object a line (``ts``, ``level``, ``logger``,
  ``message`` and the record's fields: ``request_id``, ``event``, ``job`` …) for log shippers;
  ``text`` (the default): ``<time> <LEVEL> <logger>: <message>``, `` [request <id>]`` appended
  to lines logged while a request is handled;
- the same configuration reaches the local Dask cluster's worker processes (through
  ``DASK_DISTRIBUTED__LOGGING``, which distributed applies when a worker starts).

`request_id_var` holds the request id of the request being handled (set by
`web/accesslog.py`); every record logged in its context carries it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.config
import os
from contextvars import ContextVar
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# libraries whose INFO/DEBUG chatter is not ours to show (numba's compiler alone writes tens of MB at DEBUG)
QUIET = {"numba": "WARNING", "distributed": "WARNING", "alembic": "WARNING", "asyncio": "WARNING",
         "bokeh": "ERROR", "tornado": "ERROR", "fsspec": "WARNING", "s3fs": "WARNING", "botocore": "WARNING",
         "aiobotocore": "WARNING", "urllib3": "WARNING", "aiohttp.access": "WARNING", "numexpr": "WARNING"}
DASK_LOGGING_ENV = "DASK_DISTRIBUTED__LOGGING"

request_id_var: ContextVar[str | None] = ContextVar("gpu_backtest_request_id", default=None)

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to records logged while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            rid = request_id_var.get()
            if rid is not None:
                record.request_id = rid
        return True


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> [request <id>]``."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or TEXT_FORMAT, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        rid = getattr(record, "request_id", None)
        return f"{text} [request {rid}]" if rid else text


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, ISO 8601), level, logger, message, the record's extra
    fields, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def logging_config(debug: bool = False, fmt: str = "text") -> dict[str, Any]:
    """The `logging.config.dictConfig` document of the server (and of its local workers)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    formatter = "JsonFormatter" if fmt == "json" else "TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"main": {"()": f"{__name__}.{formatter}"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "main", "filters": ["request_id"]}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {"gpu_backtest": {"level": "DEBUG" if debug else "INFO"},
                    **{name: {"level": level} for name, level in QUIET.items()}},
    }


def configure_logging(debug: bool = False, fmt: str = "text") -> None:
    """Apply `logging_config` to this process, and hand it to the Dask worker processes it starts."""
    config = logging_config(debug, fmt)
    os.environ[DASK_LOGGING_ENV] = repr(config)  # read by distributed when a spawned worker imports it
    try:  # distributed sets its loggers' levels when first imported: let it, then override
        import distributed  # noqa: F401
    except ImportError:  # pragma: no cover - a core dependency
        pass
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
