"""Fixtures shared by the job-store tests (tests/test_jobstore.py, tests/test_leases.py):
JobStores on one fresh database, SQLite and PostgreSQL (a fresh schema per test module; the
jobs table emptied before each test). A module that defines a fixture of the same name uses its own."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete

# Before any kernel module is imported: one numba disk cache for the whole session and every server
# and worker it starts (a server's default, <data dir>/numba-cache, would be a fresh temporary
# directory per test: every test server would compile its kernels again), and no background
# warm-up where it only costs CPU (tests/test_warmup.py turns it on).
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"gpu_backtest-tests-numba-{os.getuid()}"))
os.environ.setdefault("GPU_BACKTEST_WARMUP", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_schema import fresh_pg_schema

from gpu_backtest.core.jobstore import JobStore, jobs_table

StoreFactory = Callable[[], JobStore]


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[tuple[str, str]]:
    """(url, schema): a fresh schema on the test PostgreSQL server for this module."""
    with fresh_pg_schema("gbt_store") as pg:
        yield pg.base_url, pg.schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of JobStores on one fresh database (several stores stand for several processes)."""
    if request.param == "sqlite":
        url, connect_args = f"sqlite:///{tmp_path / 'jobs.sqlite'}", {}
    else:
        url, schema = request.getfixturevalue("pg_schema")
        connect_args = {"options": f"-csearch_path={schema}"}
    stores: list[JobStore] = []

    def factory() -> JobStore:
        store = JobStore(url, connect_args=connect_args)
        stores.append(store)
        return store

    first = factory()
    first.migrate()
    with first.engine.begin() as conn:  # PostgreSQL: the module's schema outlives one test
        conn.execute(delete(jobs_table))
    yield factory
    for s in stores:
        s.close()


@pytest.fixture
def store(make_store: StoreFactory) -> JobStore:
    return make_store()
