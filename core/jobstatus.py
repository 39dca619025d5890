"""Job statuses: the one spelling of a backtest job's states.

A job is ``queued``, then ``running``, then one of the *final* statuses ``succeeded``,
``failed`` or ``cancelled`` (a queued job can also be cancelled directly; see
core/jobstore.py). The job store, its database check constraint, the web handlers, the
OpenAPI document, the Prometheus metrics and the Python client all take the names from here.

Standard library only: `web/client.py` imports it and must stay free of third-party packages.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ATTEMPT_OUTCOMES", "CANCELLED", "FAILED", "FINAL_STATUSES", "HANDED_BACK", "LEASE_EXPIRED", "QUEUED",
           "RUNNING", "STATUSES", "SUCCEEDED", "is_final"]

QUEUED: Final = "queued"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

STATUSES: Final[tuple[str, ...]] = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
"""Every status, in lifecycle order."""

FINAL_STATUSES: Final[tuple[str, ...]] = (SUCCEEDED, FAILED, CANCELLED)
"""The statuses a job never leaves."""

HANDED_BACK: Final = "handed_back"
LEASE_EXPIRED: Final = "lease_expired"
ATTEMPT_OUTCOMES: Final[tuple[str, ...]] = (RUNNING, SUCCEEDED, FAILED, CANCELLED, HANDED_BACK, LEASE_EXPIRED)
"""How one run of a job (a row of ``job_attempts``) stands or ended: ``running``; the job's
final status; ``handed_back`` (its server stopped cleanly and re-queued it); ``lease_expired``
(its server stopped renewing the lease — died, paused, cut off — and another took over)."""


def is_final(status: str) -> bool:
    """Whether ``status`` is one a job never leaves (succeeded, failed, cancelled)."""
    return status in FINAL_STATUSES
