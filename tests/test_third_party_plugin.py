"""A third-party strategy plugin, pip-installed from ``tests/example_plugin``, is discovered
through the ``gpu_backtest`` entry-point group and its strategy runs.

The install goes into a ``--target`` folder (nothing is installed into the environment);
each check runs in a subprocess with that folder on ``PYTHONPATH`` so that
``importlib.metadata`` sees the plugin's entry point.

Reusable helpers (for checks of the CLI, the web API, ``run_backtest``, …):

- `install_example_plugin(target)` — pip-install the example plugin into ``target``;
- the module fixture ``example_plugin_path`` — that folder, installed once per module;
- `example_plugin_env(target)` — an environment in which the plugin is importable;
- `run_with_example_plugin(target, argv)` — run a command in that environment;
- `run_python_with_example_plugin(target, code)` — run ``python -c code`` there.

For example, ``run_with_example_plugin(path, [sys.executable, "-m",
"gpu_backtest.entrypoints.cli", "strategies"])`` (or the ``gpu-backtest`` script next to
``sys.executable``) should list `EXAMPLE_STRATEGY`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

EXAMPLE_PLUGIN_SRC = Path(__file__).resolve().parent / "example_plugin"
EXAMPLE_DIST = "gpu-backtest-example-plugin"
EXAMPLE_PACKAGE = "gpu_backtest_example_plugin"
EXAMPLE_ENTRY_POINT = "example_plugin"  # the plugin's name, e.g. for GPU_BACKTEST_LOAD_PLUGINS
EXAMPLE_STRATEGY = "example_always_long"


def install_example_plugin(target: Path) -> Path:
    """pip-install ``tests/example_plugin`` into the folder ``target`` (``pip install --target``).

    The source is copied first so the build leaves nothing in the repository. Tries an
    offline build with the environment's own setuptools (``--no-build-isolation
    --no-index``); where that cannot build a wheel (setuptools < 70.1 without the ``wheel``
    package), falls back to pip's default isolated build, which takes setuptools from the
    configured package index. Returns ``target``.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    src = target.parent / f"{target.name}-src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(
        EXAMPLE_PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist")
    )
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    base = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    attempts = [
        [*base, "--no-build-isolation", "--no-index", str(src)],
        [*base, str(src)],
    ]
    failures = []
    for cmd in attempts:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode == 0:
            assert (target / EXAMPLE_PACKAGE).is_dir(), proc.stdout
            return target
        failures.append(f"$ {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    pytest.fail("could not pip-install the example plugin:\n\n" + "\n\n".join(failures))


def example_plugin_env(target: Path, **extra: str) -> dict[str, str]:
    """``os.environ`` with ``target`` first on PYTHONPATH, no plugin filter, plus ``extra``."""
    env = dict(os.environ)
    env.pop("GPU_BACKTEST_LOAD_PLUGINS", None)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(target) + (os.pathsep + old if old else "")
    env.update(extra)
    return env


def run_with_example_plugin(
    target: Path, argv: Sequence[str], timeout: float = 120, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with the example plugin importable; returns the completed process (text)."""
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env=example_plugin_env(target, **extra_env),
        cwd=str(Path(target).parent),
        timeout=timeout,
    )


def run_python_with_example_plugin(target: Path, code: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` (this interpreter) with the example plugin importable; fails the test on error."""
    proc = run_with_example_plugin(target, [sys.executable, "-c", code], **extra_env)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def example_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the example plugin pip-installed in it (once per module)."""
    return install_example_plugin(tmp_path_factory.mktemp("example_plugin") / "site")


LIST_AND_RUN = """
import json
import numpy as np
from gpu_backtest.plugins import manager
from gpu_backtest.core.strategy import SignalContext

names = list(manager.strategies())
out = {"names": names}
if "example_always_long" in names:
    strat = manager.get_strategy("example_always_long")
    bars = {k: np.full((5, 2), 100.0) for k in ("open", "high", "low", "close")}
    params = {"start_bar": np.array([strat.param("start_bar").check(v) for v in (0, 3)])}
    ctx = SignalContext(np, bars, params)
    sig = strat.signals(ctx)
    out.update(
        module=strat.signals.__module__,
        schema=strat.schema(),
        shape=list(sig.entries.shape),
        dtypes=[str(sig.entries.dtype), str(sig.exits.dtype)],
        entries=sig.entries.tolist(),
        any_exit=bool(sig.exits.any()),
    )
print(json.dumps(out))
"""


def list_and_run(target: Path, **extra_env: str) -> dict:
    proc = run_python_with_example_plugin(target, LIST_AND_RUN, **extra_env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_installed_files(example_plugin_path: Path) -> None:
    assert (example_plugin_path / EXAMPLE_PACKAGE / "__init__.py").is_file()
    dist_infos = list(example_plugin_path.glob("gpu_backtest_example_plugin-*.dist-info"))
    assert len(dist_infos) == 1
    entry_points = (dist_infos[0] / "entry_points.txt").read_text()
    assert "[gpu_backtest]" in entry_points and EXAMPLE_ENTRY_POINT in entry_points


def test_plugin_strategy_is_listed_and_runs(example_plugin_path: Path) -> None:
    out = list_and_run(example_plugin_path)
    assert EXAMPLE_STRATEGY in out["names"]
    assert {"buy_and_hold", "sma_crossover"} <= set(out["names"])  # built-ins still there
    assert out["names"][-1] == EXAMPLE_STRATEGY  # entry points come after the built-ins
    assert out["module"] == EXAMPLE_PACKAGE
    assert out["schema"]["params"][0]["name"] == "start_bar"
    # 2 symbols x 2 combos (start_bar 0 and 3), symbol-major columns
    assert out["shape"] == [5, 4] and out["dtypes"] == ["bool", "bool"]
    want = [[True, t >= 3, True, t >= 3] for t in range(5)]
    assert out["entries"] == want
    assert out["any_exit"] is False


def test_load_plugins_filter_selects_the_entry_point(example_plugin_path: Path) -> None:
    only = list_and_run(example_plugin_path, GPU_BACKTEST_LOAD_PLUGINS=EXAMPLE_ENTRY_POINT)
    assert only["names"] == [EXAMPLE_STRATEGY]
    without = list_and_run(example_plugin_path, GPU_BACKTEST_LOAD_PLUGINS="sma_crossover")
    assert without["names"] == ["sma_crossover"]


def test_not_listed_without_the_plugin(tmp_path: Path) -> None:
    out = list_and_run(tmp_path)  # an empty folder on PYTHONPATH
    assert EXAMPLE_STRATEGY not in out["names"]
    assert "sma_crossover" in out["names"]


def test_command_lists_and_runs_the_plugin_strategy(example_plugin_path: Path, tmp_path: Path) -> None:
    """`gpu-backtest strategies` lists it and `gpu-backtest run` / run_backtest run it end to end."""
    cli = str(Path(sys.executable).parent / "gpu-backtest")
    listed = run_with_example_plugin(example_plugin_path, [cli, "strategies", "--json"])
    assert listed.returncode == 0, listed.stderr
    assert EXAMPLE_STRATEGY in {s["name"] for s in json.loads(listed.stdout)}
    from gpu_backtest.core.synthetic import gbm_panel_frame

    data = tmp_path / "bars.parquet"
    gbm_panel_frame(2, 120, seed=5).to_parquet(data)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"strategy": EXAMPLE_STRATEGY}))
    ran = run_with_example_plugin(example_plugin_path, [cli, "run", str(spec), "--data", str(data), "--json"])
    assert ran.returncode == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert len(doc["results"]) == 2
    assert all(d["trades"] for d in doc["details"])  # always-long: a position on each symbol
