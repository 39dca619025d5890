"""No cold start (issue 18, part 3): numba's disk cache and the background warm-up.

- core/jitcache.py: the cache directory's default and the user's choice; cached builds dropped
  when a source they include changes, kept otherwise; the compile lock.
- core/simulate/cpu.py: one build of the CPU kernel serves a sweep and its details (every layout).
- A real server (`gpu-backtest serve`, its local Dask cluster): the warm-up runs and logs its
  line; a job submitted while the warm-up cannot finish (the test holds the kernel's compile
  lock) waits and succeeds; each worker's numba cache directory is the server's (NUMBA_CACHE_DIR
  set) or ``<data dir>/numba-cache`` (unset).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_client import ServerProcess

from gpu_backtest.core import jitcache

JOB = {"strategy": "sma_crossover", "symbols": ["SYN000", "SYN001"], "params": {"fast": [5, 10], "slow": [20, 50]},
       "output": {"top_k": 3}}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 180.0, every: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns a truthy value (a bound, not an assertion on time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def test_cache_dir_defaults_under_the_data_dir_and_respects_the_user(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    got = jitcache.configure_numba_cache(str(tmp_path / "data"), env)
    assert got == str(tmp_path / "data" / "numba-cache") == env["NUMBA_CACHE_DIR"]
    assert Path(got).is_dir()
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "mine")}
    assert jitcache.configure_numba_cache(str(tmp_path / "data"), env) == str(tmp_path / "mine")
    assert env == {"NUMBA_CACHE_DIR": str(tmp_path / "mine")}


def test_stale_builds_are_dropped_when_an_included_source_changes(tmp_path: Path) -> None:
    """A kernel that uses a helper from another file: numba's cache watches only the kernel's
    file; drop_stale_builds watches both (run in a subprocess: a fresh dispatcher each time)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("SCALE = 3.0\n")
    (pkg / "kern.py").write_text(textwrap.dedent("""
        from pathlib import Path
        from numba import njit
        from gpu_backtest.core.jitcache import drop_stale_builds
        from .helper import SCALE

        @njit(cache=True)
        def scaled(x):
            return x * SCALE

        HERE = Path(__file__).parent
        DROPPED = drop_stale_builds([scaled], [HERE / "kern.py", HERE / "helper.py"], "kern")
    """))
    script = "import pkg.kern as k; print(k.DROPPED, k.scaled(2.0))"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(tmp_path)}

    def run() -> str:
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              check=True).stdout.split()

    assert run() == ["False", "6.0"]            # nothing cached yet: nothing to drop; compiled and written
    assert list((tmp_path / "cache").rglob("kern.scaled-*.nbi"))
    assert run() == ["False", "6.0"]            # same sources: the cached build is kept (and used)
    (pkg / "helper.py").write_text("SCALE = 5.0\n")
    # numba alone would load the build that baked in SCALE = 3.0 (kern.py did not change)
    assert run() == ["True", "10.0"]
    assert run() == ["False", "10.0"]


def test_one_cpu_kernel_build_serves_a_sweep_and_its_details() -> None:
    from gpu_backtest import run_backtest
    from gpu_backtest.core.simulate import cpu
    from gpu_backtest.core.synthetic import gbm_panel_frame

    # 2 symbols × 2 combinations, top 3: one symbol's details with two columns, the other's with one,
    # and a direction with short signals: arrays of every layout numba distinguishes
    for direction in ("long", "both"):
        spec = {"strategy": "sma_crossover", "params": {"fast": [5], "slow": [20, 30]},
                "execution": {"direction": direction}, "output": {"top_k": 3}}
        result = run_backtest(spec, gbm_panel_frame(2, 200, seed=5), backend="cpu")
        assert len(result.details) == 3
    assert cpu._simulate_all.signatures == [cpu.SIGNATURE]


def test_warmup_parts_run_in_process() -> None:
    from gpu_backtest.core.warmup import PARTS, run_warmup

    seen: list[str] = []
    out = run_warmup(["sweep"], on_part=lambda part, s: seen.append(part))
    assert seen == ["sweep"] and out["failed"] == {} and set(out["parts"]) == {"sweep"}
    assert set(PARTS) >= {"sweep", "cscv", "portfolio"}


def _worker_cache_dirs(srv: ServerProcess) -> list[str]:
    from distributed import Client

    from gpu_backtest.cluster.warmup import worker_numba_cache_dir

    scheduler = srv.client().gpu_status()["cluster"]["scheduler"]
    with Client(scheduler, timeout="20s") as client:
        return list(client.run(worker_numba_cache_dir).values())


def test_a_job_submitted_during_warmup_waits_for_the_kernel_and_succeeds(tmp_path: Path) -> None:
    from gpu_backtest.core.simulate import cpu

    # holding the CPU kernel's compile lock keeps every process sharing this cache from building or
    # loading it: the warm-up cannot finish and the job cannot compute until it is released
    lock = jitcache.compile_lock(cpu._simulate_all, "cpu")
    lock.__enter__()
    srv = ServerProcess(tmp_path / "data", env={"GPU_BACKTEST_WARMUP": "true"})
    try:
        srv.start()
        client = srv.client()
        job = client.submit(JOB)["job_id"]
        wait_for(lambda: client.status(job)["status"] == "running", "the job to start")
        time.sleep(1.0)  # give it the time it would need to finish, were it not waiting
        assert client.status(job)["status"] == "running"
        assert "warm-up done" not in srv.log_tail(400)
        lock.__exit__(None, None, None)
        lock = None
        doc = client.wait(job, timeout=180)
        assert doc["status"] == "succeeded"
        line = wait_for(lambda: next((ln for ln in srv.log_tail(400).splitlines() if "warm-up done in" in ln), None),
                        "the warm-up's log line")
        assert "helper process" in line and "failed" not in line
        # the server's NUMBA_CACHE_DIR (this session's, tests/conftest.py) reached its workers
        assert _worker_cache_dirs(srv) == [os.environ["NUMBA_CACHE_DIR"]]
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
        srv.stop()


def test_workers_default_to_the_data_dirs_cache_without_numba_cache_dir(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    srv = ServerProcess(tmp_path / "data", env={"GPU_BACKTEST_WARMUP": "false"}).start()
    try:
        assert _worker_cache_dirs(srv) == [str(tmp_path / "data" / "numba-cache")]
        assert "warm-up done" not in srv.log_tail(400)
    finally:
        srv.stop()


def test_warmup_command_compiles_into_the_cache_serve_uses(tmp_path: Path) -> None:
    from test_client import CLI

    env = {**os.environ, "GPU_BACKTEST_DATA_DIR": str(tmp_path / "data"), "GPU_BACKTEST_BACKEND": "cpu"}
    out = subprocess.run([CLI, "warmup"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"kernels compiled into {os.environ['NUMBA_CACHE_DIR']} in" in out.stdout
    assert "cscv" in out.stdout and "sweep" in out.stdout and "portfolio" in out.stdout


def test_first_use_locks_only_until_a_first_pass_succeeds(tmp_path: Path) -> None:
    """The lock is held around a process's first successful pass only; a failed pass does not count."""
    import fcntl

    from gpu_backtest.core.simulate import cpu

    first = jitcache.FirstUse(cpu._simulate_all, "first-use-test")
    lock_file = jitcache.cache_files(cpu._simulate_all)[0] / "first-use-test.compile.lock"

    def held_elsewhere() -> bool:
        with open(lock_file, "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return False

    with pytest.raises(ValueError), first:
        assert held_elsewhere()
        raise ValueError("a failed first pass")
    assert not first.done and not held_elsewhere()
    with first:
        assert held_elsewhere()
    assert first.done
    with first:
        assert not held_elsewhere()
