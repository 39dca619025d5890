"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gpu_backtest.core.migrations import record_version

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}
schema_version = None  # the next integer: also bump jobstore.SCHEMA_VERSION


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
    record_version(schema_version, ${repr(message)})


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
