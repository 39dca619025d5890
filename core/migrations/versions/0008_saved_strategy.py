"""Saved strategies (schema version 8).

``saved_strategy``: one row per version of a strategy saved through ``POST /strategies`` /
``PUT /strategies/{name}`` — ``name`` and ``version`` (the primary key), ``doc`` (the
expression strategy's canonical JSON: docs/strategies.md, "Expression strategies"),
``digest`` (sha256 of that JSON), ``description`` and ``created_at``. Deleting a strategy
deletes its rows; a job keeps the exact document and version it ran in its own spec.

Additive only: servers of schema version 7 still running during the upgrade never touch the
new table, but they refuse to start on it.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gpu_backtest.core.dbtypes import UTCDateTime
from gpu_backtest.core.migrations import forget_version, record_version

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None
schema_version = 8


def upgrade() -> None:
    op.create_table(
        "saved_strategy",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_saved_strategy"),
    )
    record_version(schema_version, "saved_strategy: named, versioned expression strategies")


def downgrade() -> None:
    op.drop_table("saved_strategy")
    forget_version(schema_version)
