"""Schema migrations (core/migrations/) on SQLite and PostgreSQL.

- The baseline revision builds exactly the schema the old `create_all` made (tests/legacy_schema.py),
  and a database made by that `create_all` is recognised, stamped and upgraded with every job
  intact; afterwards the database matches the models (Alembic's compare finds nothing).
- Several servers starting at once migrate once (the lock).
- A database newer than the code is refused with a clear message, by this code, by the old
  code's check, and by ``gpu-backtest serve``, which exits at once; the real older server
  (commit 23a425b, from git) makes the baseline schema and refuses the upgraded database.
- With GPU_BACKTEST_AUTO_MIGRATE=false an old schema is refused; ``gpu-backtest migrate`` upgrades it.

PostgreSQL: ``TEST_DATABASE_URL`` or postgres@127.0.0.1:5432/test, a fresh schema per database
(``?options=-csearch_path=<schema>``); unreachable fails unless ``GPU_BACKTEST_SKIP_POSTGRES=1``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, select, text

from gpu_backtest.core.errors import ConfigError
from gpu_backtest.core.jobstore import SCHEMA_VERSION, JobStore
from gpu_backtest.core.migrations import BASELINE, code_schema_version, head_revision, migrate, target_metadata

sys.path.insert(0, str(Path(__file__).resolve().parent))
import legacy_schema as legacy
from pg_schema import fresh_pg_schema

CLI = str(Path(sys.executable).parent / "gpu-backtest")
MakeUrl = Callable[[], str]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def make_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeUrl]:
    """A factory of fresh, empty databases of one kind (their URLs)."""
    with contextlib.ExitStack() as stack:
        n = [0]

        def make() -> str:
            n[0] += 1
            if request.param == "sqlite":
                return f"sqlite:///{tmp_path / f'jobs{n[0]}.sqlite'}"
            return stack.enter_context(fresh_pg_schema("gbt_mig")).url

        yield make


def _engine(url: str) -> Any:
    return create_engine(url)


def _schema(url: str) -> dict[str, Any]:
    """Tables → columns (name, type, nullability), indexes, unique/check constraints and primary keys."""
    engine = _engine(url)
    try:
        insp = inspect(engine)
        out: dict[str, Any] = {}
        for t in sorted(set(insp.get_table_names()) - {"alembic_version"}):
            out[t] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
                "pk": insp.get_pk_constraint(t),
                "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                  for i in insp.get_indexes(t)),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(t)),
                "checks": sorted((c["name"], " ".join(c["sqltext"].split())) for c in insp.get_check_constraints(t)),
                "fks": sorted((f["name"], tuple(f["constrained_columns"]), f["referred_table"])
                              for f in insp.get_foreign_keys(t)),
            }
        return out
    finally:
        engine.dispose()


def _model_diff(url: str) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the models (empty: they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, target_metadata())
    finally:
        engine.dispose()


def _fill_legacy(url: str) -> dict[str, dict[str, Any]]:
    engine = _engine(url)
    try:
        assert legacy.legacy_create_all(engine) == 1
        return legacy.fill_every_state(engine)
    finally:
        engine.dispose()


def _versions(url: str) -> tuple[list[str], list[int]]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            revs = []
            if "alembic_version" in inspect(conn).get_table_names():
                revs = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
            versions = [r[0] for r in conn.execute(text("SELECT version FROM schema_version ORDER BY version"))]
        return revs, versions
    finally:
        engine.dispose()


def _make_newer(url: str) -> None:
    """What a newer server's upgrade leaves: an unknown head revision and a higher schema version."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9001_future'"))
            conn.execute(text("INSERT INTO schema_version (version, applied_at, description) "
                              "VALUES (99, CURRENT_TIMESTAMP, 'from the future')"))
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the baseline


def test_code_and_head_agree() -> None:
    assert code_schema_version() == SCHEMA_VERSION
    assert head_revision() and BASELINE == "0001"


def test_baseline_revision_is_the_old_create_all_schema(make_url: MakeUrl) -> None:
    old, new = make_url(), make_url()
    _fill_legacy(old)
    store = JobStore(new)
    try:
        migrate(store._write_engine, target=BASELINE)
    finally:
        store.close()
    assert _schema(new) == _schema(old)
    assert _versions(new) == ([BASELINE], [1])


def test_old_database_is_stamped_upgraded_and_read_back_intact(make_url: MakeUrl) -> None:
    url = make_url()
    rows = _fill_legacy(url)
    with JobStore(url) as store:
        assert store.migrate() == SCHEMA_VERSION
        assert store.migrate() == SCHEMA_VERSION  # idempotent
        jobs = {j.id: store.get(j.id) for j in store.list(limit=100)[0]}
        briefs = {j.id: j for j in store.list(limit=100)[0]}
    assert _versions(url) == ([head_revision()], list(range(1, SCHEMA_VERSION + 1)))
    assert _model_diff(url) == []
    assert set(jobs) == set(rows)
    for job_id, row in rows.items():
        got = jobs[job_id].to_dict()
        for key, value in row.items():
            want = value.isoformat() if hasattr(value, "isoformat") else value
            assert got[key] == want, (row["status"], key, got[key], want)
        # the listing's columns were filled in from the old rows' specs (migration 0004)
        assert briefs[job_id].strategy == row["spec"]["strategy"], (briefs[job_id], row["spec"])


def test_new_database_matches_the_models(make_url: MakeUrl) -> None:
    url = make_url()
    with JobStore(url) as store:
        assert store.migrate() == SCHEMA_VERSION
    assert _model_diff(url) == []
    assert _versions(url) == ([head_revision()], list(range(1, SCHEMA_VERSION + 1)))


# --------------------------------------------------------------------------- the lock


def test_servers_starting_at_once_migrate_once(make_url: MakeUrl) -> None:
    url = make_url()
    stores = [JobStore(url) for _ in range(5)]
    barrier = threading.Barrier(len(stores))
    results: list[Any] = []

    def start(store: JobStore) -> None:
        barrier.wait()
        try:
            results.append(store.migrate())
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in stores:
        s.close()
    assert results == [SCHEMA_VERSION] * len(stores)
    assert _versions(url) == ([head_revision()], list(range(1, SCHEMA_VERSION + 1)))


# --------------------------------------------------------------------------- newer and older


def test_newer_database_is_refused_with_a_clear_message(make_url: MakeUrl, tmp_path: Path) -> None:
    url = make_url()
    with JobStore(url) as store:
        store.migrate()
    _make_newer(url)
    with JobStore(url) as store, pytest.raises(ConfigError) as info:
        store.migrate()
    msg = str(info.value)
    assert "newer than this server" in msg and "schema version 99" in msg and "9001_future" in msg, msg
    # the servers from before migrations check schema_version and refuse as well
    engine = _engine(url)
    try:
        with pytest.raises(legacy.LegacyNewerDatabase, match="schema version 99, newer than this code's 1"):
            legacy.legacy_create_all(engine)
    finally:
        engine.dispose()
    # and a real server exits at once with the message (before starting anything else)
    env = {**os.environ, "DATABASE_URL": url, "GPU_BACKTEST_DATA_DIR": str(tmp_path / "data"),
           "GPU_BACKTEST_BACKEND": "cpu", "GPU_SERVER_HOST": "127.0.0.1", "GPU_SERVER_PORT": "1"}
    out = subprocess.run([CLI, "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: the job database is newer than this server" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_auto_migrate_off_refuses_an_old_schema_and_the_migrate_command_upgrades(make_url: MakeUrl,
                                                                                  tmp_path: Path) -> None:
    url = make_url()
    rows = _fill_legacy(url)
    with JobStore(url) as store, pytest.raises(ConfigError, match="gpu-backtest migrate"):
        store.migrate(apply=False)
    assert _versions(url) == ([], [1])  # nothing was changed
    env = {**os.environ, "DATABASE_URL": url, "GPU_BACKTEST_DATA_DIR": str(tmp_path / "data")}
    check = subprocess.run([CLI, "migrate", "--check"], env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "behind" in check.stdout, (check.stdout, check.stderr)
    done = subprocess.run([CLI, "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"schema version {SCHEMA_VERSION}" in done.stdout, (done.stdout, done.stderr)
    with JobStore(url) as store:
        assert store.migrate(apply=False) == SCHEMA_VERSION
        assert {j.id for j in store.list(limit=100)[0]} == set(rows)


def test_unrecognised_tables_are_refused(make_url: MakeUrl) -> None:
    url = make_url()
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY)"))
    finally:
        engine.dispose()
    with JobStore(url) as store, pytest.raises(ConfigError, match="no migration history"):
        store.migrate()
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(text("1"))).scalar() == 1
            assert set(inspect(conn).get_table_names()) == {"jobs"}  # left as it was
    finally:
        engine.dispose()


def test_downgrade_to_the_baseline_and_upgrade_again(make_url: MakeUrl) -> None:
    from alembic import command

    from gpu_backtest.core.migrations import alembic_config

    url, reference = make_url(), make_url()
    rows = _fill_legacy(url)
    _fill_legacy(reference)
    with JobStore(url) as store:
        store.migrate()
        with store._write_engine.connect() as conn, conn.begin():
            command.downgrade(alembic_config(conn), BASELINE)
        assert _versions(url) == ([BASELINE], [1])
        assert _schema(url) == _schema(reference)  # the old create_all's schema again
        assert store.migrate() == SCHEMA_VERSION
        assert {j.id for j in store.list(limit=100)[0]} == set(rows)
    assert _model_diff(url) == []


# --------------------------------------------------------------------------- the real older server

OLDER_COMMIT = "23a425b"
"""The last commit before migrations and leases: the code deployed servers run before the upgrade."""


@pytest.fixture(scope="module")
def older_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The older server's package, from git, as ``<dir>/gpu_backtest`` (and ``gpu_backtest_old``, a
    second name to import its modules next to this code's)."""
    import io
    import shutil
    import tarfile

    repo = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or subprocess.run(
            ["git", "-C", str(repo), "cat-file", "-e", f"{OLDER_COMMIT}^{{commit}}"], capture_output=True).returncode:
        pytest.skip(f"commit {OLDER_COMMIT} (the older server) is not in this checkout")
    root = tmp_path_factory.mktemp("older")
    archive = subprocess.run(["git", "-C", str(repo), "archive", OLDER_COMMIT], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root / "gpu_backtest", filter="data")
        else:  # Python < 3.11.4
            tar.extractall(root / "gpu_backtest")  # our own repository's commit
    (root / "gpu_backtest_old").symlink_to(root / "gpu_backtest")
    return root


def test_the_older_code_makes_the_baseline_and_refuses_the_upgraded_database(make_url: MakeUrl, older_code: Path,
                                                                             tmp_path: Path) -> None:
    import importlib

    sys.path.insert(0, str(older_code))
    try:
        old_jobstore = importlib.import_module("gpu_backtest_old.core.jobstore")
    finally:
        sys.path.remove(str(older_code))
    made_by_old, frozen = make_url(), make_url()
    old = old_jobstore.JobStore(made_by_old)
    try:
        assert old.create_all() == 1  # the older server's own create_all
        job = old.create({"strategy": "sma_crossover"}, "h" * 64, "key", "http://hook.example/")
        old.claim_next("older-server")
    finally:
        old.close()
    _fill_legacy(frozen)
    assert _schema(made_by_old) == _schema(frozen)  # tests/legacy_schema.py is what that code makes
    with JobStore(made_by_old) as store:
        assert store.migrate() == SCHEMA_VERSION
        got = store.get(job.id)
        assert got is not None and got.status == "running" and got.owner == "older-server" and got.attempts == 1
        assert got.lease_expires_at is None  # a run from before leases: recovery treats it as expired
        assert store.recover()["requeued"] == 1
    env = {**os.environ, "PYTHONPATH": str(older_code), "DATABASE_URL": made_by_old,
           "GPU_BACKTEST_DATA_DIR": str(tmp_path / "data"), "GPU_BACKTEST_BACKEND": "cpu",
           "GPU_SERVER_HOST": "127.0.0.1", "GPU_SERVER_PORT": "1"}
    out = subprocess.run([sys.executable, "-c", "import sys; from gpu_backtest.entrypoints.cli import main; "
                          "import gpu_backtest; assert gpu_backtest.__file__.startswith(sys.argv[1]); "
                          "sys.argv[1:] = ['serve']; sys.exit(main())", str(older_code)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"error: the job database has schema version {SCHEMA_VERSION}, newer than this code's 1" in out.stderr, \
        out.stderr[-2000:]


def test_a_catalog_made_before_its_revision_is_kept_by_the_upgrade(make_url: MakeUrl) -> None:
    """Schema version 2 with ``market_catalog`` created by the catalog itself (as servers before
    revision 0003 did): the upgrade keeps the table and its rows, and the schema equals the models."""
    from gpu_backtest.core.catalog import Catalog

    url = make_url()
    store = JobStore(url)
    try:
        migrate(store._write_engine, target="0002")
        with store._write_engine.begin() as conn:
            conn.execute(text("CREATE TABLE market_catalog (source VARCHAR(32) NOT NULL, frequency VARCHAR(16) "
                              "NOT NULL, symbol VARCHAR(32) NOT NULL, first_ns BIGINT NOT NULL, last_ns BIGINT "
                              "NOT NULL, rows BIGINT NOT NULL, updated_ns BIGINT NOT NULL, CONSTRAINT "
                              "pk_market_catalog PRIMARY KEY (source, frequency, symbol))"))
            conn.execute(text("INSERT INTO market_catalog VALUES ('upload', '1d', 'AAA', 1, 2, 3, 4)"))
        assert store.migrate() == SCHEMA_VERSION
    finally:
        store.close()
    assert _versions(url) == ([head_revision()], list(range(1, SCHEMA_VERSION + 1)))
    assert _model_diff(url) == []
    cat = Catalog(url)
    try:
        entry = cat.get("upload", "AAA", "1d")
    finally:
        cat.close()
    assert entry is not None and (entry.symbol, entry.rows, int(entry.last.value)) == ("AAA", 3, 2)
