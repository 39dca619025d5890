"""The README's set-up block and its curl example work as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_client import ServerProcess

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_setup_commands() -> None:
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    assert first_block[0].endswith("gpu-backtest serve")
    assert first_block[1].endswith("-m pytest")
    ci = (README.parent / ".ci" / "run").read_text()
    assert first_block[1] in ci  # CI runs the README's test command verbatim


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_example_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    block = re.search(r"tests/test_readme.py`\):\n\n```bash\n(.*?)```", text, re.S).group(1)
    srv = ServerProcess(tmp_path / "data").start()
    try:
        script = block.replace("localhost:5050", f"127.0.0.1:{srv.port}")
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        out = subprocess.run(["bash", "-eo", "pipefail", "-c", script], capture_output=True, text=True,
                             timeout=180, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert '"status": "succeeded"' in out.stdout
        assert "rank,column,symbol,fast,slow" in out.stdout
        csv_lines = [ln for ln in out.stdout.splitlines() if re.match(r"^\d+,\d+,SYN", ln)]
        assert len(csv_lines) == 3  # ?limit=3 pages the CSV too
    finally:
        srv.stop()


def test_every_setting_is_in_the_readme_table() -> None:
    """Each environment variable `Settings` reads has a row in the README's configuration table."""
    from gpu_backtest.core.config import Settings

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", text, re.M))
    missing = [var for var, _, _ in Settings.documentation() if var not in rows]
    assert not missing, f"settings missing from the README's table: {missing}"
