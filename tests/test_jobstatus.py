"""Job statuses have one home (core/jobstatus.py): every layer that names them uses it."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import CheckConstraint

from gpu_backtest.core import jobstatus
from gpu_backtest.core.jobstatus import FINAL_STATUSES, STATUSES, is_final


def test_statuses_and_final_set() -> None:
    assert STATUSES == ("queued", "running", "succeeded", "failed", "cancelled")
    assert FINAL_STATUSES == ("succeeded", "failed", "cancelled")
    assert set(FINAL_STATUSES) < set(STATUSES)
    assert [s for s in STATUSES if is_final(s)] == list(FINAL_STATUSES)
    assert (jobstatus.QUEUED, jobstatus.RUNNING) == ("queued", "running")


def test_every_layer_uses_the_one_definition() -> None:
    from gpu_backtest.core import jobstore
    from gpu_backtest.web import client, handlers, metrics, openapi

    assert jobstore.STATUSES is STATUSES and jobstore.FINAL_STATUSES is FINAL_STATUSES
    assert handlers.STATUSES is STATUSES
    assert metrics.STATES is STATUSES
    assert client.FINAL_STATUSES is FINAL_STATUSES
    doc = openapi.openapi_document()
    for model in ("JobStatusDoc", "JobBrief", "JobDoc"):
        assert doc["components"]["schemas"][model]["properties"]["status"]["enum"] == list(STATUSES), model
    (check,) = [c for c in jobstore.jobs_table.constraints
                if isinstance(c, CheckConstraint) and "status IN" in str(c.sqltext)]
    assert str(check.sqltext) == "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')"


def test_client_stays_standard_library_only() -> None:
    code = ("import sys; import gpu_backtest.web.client; "
            "print(sorted(m for m in ('numpy', 'pandas', 'aiohttp', 'sqlalchemy', 'pluggy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out
