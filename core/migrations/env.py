"""Alembic's environment for the job database (run by `core.migrations.migrate`, or by the
``alembic`` command with a config naming this directory).

`migrate` passes its open connection (already inside the locked transaction) as
``config.attributes["connection"]``; without one, an engine is made from the config's
``sqlalchemy.url``. Migrations run in that single transaction: all of them apply, or none.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from gpu_backtest.core.migrations import target_metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        render_as_batch=connection.dialect.name == "sqlite",  # type: ignore[attr-defined]
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata(),
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    conn = config.attributes.get("connection")
    if conn is not None:
        _run(conn)
    else:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        try:
            with engine.begin() as connection:
                _run(connection)
        finally:
            engine.dispose()
