"""One log line per job event: submitted, started, finished (duration and columns), failed (the reason),
cancelled, deleted — logger ``gpu_backtest.jobs``, with the fields ``event`` (``job.<name>``),
``job`` and the event's data (JSON log lines carry them as keys).

`with_job_log(listener)` wraps a `JobManager` ``on_event`` listener (the Prometheus metrics) so
that every event is logged first; lease losses and hand-backs are logged by the job manager
itself, with their reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gpu_backtest.jobs")
Listener = Callable[[str, dict[str, Any]], None]


def _reason(error: Any) -> str:
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"{code}: {message}" if code and message else str(message or code or error)
    return str(error) if error else "no reason recorded"


def log_job_event(name: str, data: dict[str, Any]) -> None:
    """Log one job event (see the module docstring); other events are left to their emitter."""
    job = data.get("job")
    fields = {"event": f"job.{name}", **{k: v for k, v in data.items() if k != "error"}}
    if isinstance(fields.get("duration_s"), float):
        fields["duration_s"] = round(fields["duration_s"], 3)
    if name == "submitted":
        log.info("job %s submitted", job, extra=fields)
    elif name == "started":
        log.info("job %s started: %s, attempt %s", job, data.get("strategy"), data.get("attempt"), extra=fields)
    elif name == "deleted":
        log.info("job %s deleted", job, extra=fields)
    elif name == "finished":
        status, seconds = data.get("status"), float(data.get("duration_s") or 0.0)
        if status == "succeeded":
            log.info("job %s finished in %.3f s: %s columns", job, seconds, data.get("columns"), extra=fields)
        elif status == "failed":
            reason = _reason(data.get("error"))
            log.warning("job %s failed after %.3f s: %s", job, seconds, reason,
                        extra={**fields, "event": "job.failed", "reason": reason})
        else:
            log.info("job %s %s after %.3f s", job, status, seconds, extra={**fields, "event": f"job.{status}"})


def with_job_log(listener: Listener | None = None) -> Listener:
    """A listener that logs the event, then passes it to ``listener`` (if any). Logging never
    breaks the job manager."""

    def on_event(name: str, data: dict[str, Any]) -> None:
        try:
            log_job_event(name, data)
        except Exception:  # a log line is never worth a job
            log.debug("logging job event %s failed", name, exc_info=True)
        if listener is not None:
            listener(name, data)

    return on_event
