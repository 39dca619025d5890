"""Runs tests/cudasim (the numba.cuda kernel under the CUDA simulator) in its own process.

numba reads NUMBA_ENABLE_CUDASIM at first import, and this process has already imported
numba without it, so the simulator tests run in a subprocess with the variable set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cuda_kernel_under_the_simulator(tmp_path):
    report = tmp_path / "cudasim.xml"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/cudasim", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    ran = int(suite.get("tests")) - int(suite.get("skipped"))
    assert ran > 0 and int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0, output[-6000:]
