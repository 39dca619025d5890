"""Job leases and the job history (schema version 2).

``jobs`` gains the lease of a running job: ``lease_generation`` (claims so far: the fencing
token), ``lease_expires_at`` and ``heartbeat_at``, and an index to find expired leases.
``job_attempts`` records every run: generation, owner, started, ended, outcome.

Additive only: servers of schema version 1 still running during the upgrade can read and
write their jobs (the new columns have defaults), but they refuse to start on it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gpu_backtest.core.dbtypes import UTCDateTime
from gpu_backtest.core.migrations import forget_version, record_version

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
schema_version = 2

OUTCOMES = ("running", "succeeded", "failed", "cancelled", "handed_back", "lease_expired")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease_generation", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.add_column("jobs", sa.Column("lease_expires_at", UTCDateTime(), nullable=True))
    op.add_column("jobs", sa.Column("heartbeat_at", UTCDateTime(), nullable=True))
    op.create_index(op.f("ix_jobs_status_lease_expires_at"), "jobs", ["status", "lease_expires_at"])
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_attempts")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_attempts_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.UniqueConstraint("job_id", "generation", name=op.f("uq_job_attempts_job_id_generation")),
        sa.CheckConstraint(f"outcome IN ({', '.join(repr(s) for s in OUTCOMES)})",
                           name=op.f("ck_job_attempts_outcome")),
    )
    record_version(schema_version, "job leases (owner, expiry, generation) and the job_attempts history")


def downgrade() -> None:
    op.drop_table("job_attempts")
    op.drop_index(op.f("ix_jobs_status_lease_expires_at"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_generation")
    forget_version(schema_version)
