"""What a job listing shows without reading a job's spec or summary (schema version 4).

``jobs`` gains ``strategy``, ``n_symbols`` and ``n_columns`` — written at submit, from the
validated spec — so that ``GET /backtest`` reads a few short columns per job instead of each
job's spec (which may name thousands of symbols) and summary. Rows of older servers are
filled in from their spec here, once; the columns stay nullable (a row an older server writes
during a rolling upgrade leaves them empty, and the listing shows null).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from gpu_backtest.core.migrations import forget_version, record_version

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
schema_version = 4


def _listing(spec: Any) -> tuple[str | None, int | None]:
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            return None, None
    if not isinstance(spec, dict):
        return None, None
    strategy = spec.get("strategy") if isinstance(spec.get("strategy"), str) else None
    symbols = spec.get("symbols")
    return (strategy[:64] if strategy else None), (len(symbols) if isinstance(symbols, list) else None)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("strategy", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("n_symbols", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("n_columns", sa.BigInteger(), nullable=True))
    bind = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("spec", sa.Text),
                    sa.column("strategy", sa.String), sa.column("n_symbols", sa.Integer))
    rows = bind.execute(sa.select(jobs.c.id, sa.cast(jobs.c.spec, sa.Text))).all()
    for job_id, spec in rows:
        strategy, n_symbols = _listing(spec)
        if strategy is not None or n_symbols is not None:
            bind.execute(sa.update(jobs).where(jobs.c.id == job_id).values(strategy=strategy, n_symbols=n_symbols))
    record_version(schema_version, "jobs.strategy, n_symbols, n_columns: the job listing's columns")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("n_columns")
        batch.drop_column("n_symbols")
        batch.drop_column("strategy")
    forget_version(schema_version)
