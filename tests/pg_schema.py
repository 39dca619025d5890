"""A fresh schema on the test PostgreSQL server, for the tests that need a real PostgreSQL.

The server is ``TEST_DATABASE_URL`` (default: postgres@127.0.0.1:5432/test, as on CI). An
unreachable server FAILS the test with a clear message — these tests must run in CI — unless
``GPU_BACKTEST_SKIP_POSTGRES=1`` is set, which skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import CreateSchema, DropSchema

from gpu_backtest.core.jobstore import normalise_url

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class PgSchema:
    """``base_url`` (no search path), ``schema``, and ``url``: a DATABASE_URL using that schema."""

    base_url: str
    schema: str
    url: str


@contextmanager
def fresh_pg_schema(prefix: str = "gbt_test") -> Iterator[PgSchema]:
    """Create ``<prefix>_<random>`` on the test server, yield it, drop it (cascade) afterwards."""
    base = normalise_url(PG_URL)
    engine = create_engine(base, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if os.environ.get("GPU_BACKTEST_SKIP_POSTGRES") == "1":
            pytest.skip(f"PostgreSQL unreachable ({reason}); skipped because GPU_BACKTEST_SKIP_POSTGRES=1")
        pytest.fail(f"PostgreSQL at {engine.url.render_as_string(hide_password=True)} is unreachable: {reason}. "
                    "Start it, point TEST_DATABASE_URL at one, or set GPU_BACKTEST_SKIP_POSTGRES=1.", pytrace=False)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(CreateSchema(schema))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield PgSchema(base, schema, url.render_as_string(hide_password=False))
    finally:
        with engine.begin() as conn:
            conn.execute(DropSchema(schema, cascade=True))
        engine.dispose()
