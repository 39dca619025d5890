"""The delivery record of a job's callback (schema version 6).

``jobs`` gains ``callback_status`` (pending, delivered, failed, interrupted; null without a
callback), ``callback_attempts``, ``callback_last_error`` and ``callback_delivered_at``: what
`core/callbacks.py` records after every attempt, so the delivery shows on the job (and a
server stopped mid-retry leaves the record, marked interrupted).

Additive only: servers of schema version 5 still running during the upgrade can read and
write their jobs (the new columns are nullable or have defaults), but they refuse to start on it.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gpu_backtest.core.dbtypes import UTCDateTime
from gpu_backtest.core.migrations import forget_version, record_version

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
schema_version = 6


def upgrade() -> None:
    op.add_column("jobs", sa.Column("callback_status", sa.String(16), nullable=True))
    op.add_column("jobs", sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.add_column("jobs", sa.Column("callback_last_error", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("callback_delivered_at", UTCDateTime(), nullable=True))
    record_version(schema_version, "callback delivery: status, attempts, last error, delivery time")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("callback_delivered_at")
        batch.drop_column("callback_last_error")
        batch.drop_column("callback_attempts")
        batch.drop_column("callback_status")
    forget_version(schema_version)
