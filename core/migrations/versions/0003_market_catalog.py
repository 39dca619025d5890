"""The market-data symbol catalog in the job database (schema version 3).

``market_catalog``: one row per stored series (source, frequency, symbol — the primary key,
in that order), its first and last bar (UTC ns), row count and last update (UTC ns). Servers
from before this revision created the same table themselves (`core/catalog.py`, CREATE IF
NOT EXISTS under a lock), so the table is created here only when it is missing; its rows are
kept either way.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gpu_backtest.core.migrations import forget_version, record_version

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
schema_version = 3


def upgrade() -> None:
    if "market_catalog" not in sa.inspect(op.get_bind()).get_table_names():
        op.create_table(
            "market_catalog",
            sa.Column("source", sa.String(32), nullable=False),
            sa.Column("frequency", sa.String(16), nullable=False),
            sa.Column("symbol", sa.String(32), nullable=False),
            sa.Column("first_ns", sa.BigInteger(), nullable=False),
            sa.Column("last_ns", sa.BigInteger(), nullable=False),
            sa.Column("rows", sa.BigInteger(), nullable=False),
            sa.Column("updated_ns", sa.BigInteger(), nullable=False),
            sa.PrimaryKeyConstraint("source", "frequency", "symbol", name=op.f("pk_market_catalog")),
        )
    record_version(schema_version, "market_catalog: the market-data symbol catalog")


def downgrade() -> None:
    op.drop_table("market_catalog")
    forget_version(schema_version)
