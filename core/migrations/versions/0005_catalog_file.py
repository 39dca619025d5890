"""The file of each stored series' current version (schema version 5).

``market_catalog`` gains ``file``: the name of the Parquet file (under the series' directory)
that holds the bars the row describes. Series are written as new, immutable files and the row
is switched to the new one (`core.marketdata`), so a reader opening the file a row names sees
those bars whole. NULL: a series written before this revision, in ``bars.parquet``.

Additive only: servers of schema version 4 still running during the upgrade keep reading and
writing ``bars.parquet`` (they leave ``file`` NULL), but they refuse to start on it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gpu_backtest.core.migrations import forget_version, record_version

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
schema_version = 5


def upgrade() -> None:
    op.add_column("market_catalog", sa.Column("file", sa.String(80), nullable=True))
    record_version(schema_version, "market_catalog.file: the file of each series' current version")


def downgrade() -> None:
    with op.batch_alter_table("market_catalog") as batch:
        batch.drop_column("file")
    forget_version(schema_version)
