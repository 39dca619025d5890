"""The "ended" mark of each stored series (schema version 7).

``market_catalog`` gains ``ended_ns``: the UTC nanoseconds of the series' final bar when its
source marks the series as ended (a delisting: Tiingo's ticker end date, an upload's
``delisted`` flag), NULL otherwise. Portfolio mode closes positions there (exit reason
``delisted``); the data service puts the marks of a run's symbols into its plan
(`core.plan.DataSelection.ended`). See docs/datasources.md ("Ended series").

Additive only: servers of schema version 6 still running during the upgrade keep reading and
writing the catalog (the new column is nullable; they leave it NULL), but they refuse to start on it.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gpu_backtest.core.migrations import forget_version, record_version

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None
schema_version = 7


def upgrade() -> None:
    op.add_column("market_catalog", sa.Column("ended_ns", sa.BigInteger(), nullable=True))
    record_version(schema_version, "market_catalog.ended_ns: the final bar of a series its source marks as ended")


def downgrade() -> None:
    with op.batch_alter_table("market_catalog") as batch:
        batch.drop_column("ended_ns")
    forget_version(schema_version)
