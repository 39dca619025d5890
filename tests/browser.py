"""The headless browser of the page tests (tests/test_report.py, tests/test_ui.py): the system's
`chromium` (Debian's package; .ci/run installs it where missing) driven by Playwright for Python,
never a browser Playwright downloads. Tests that need it are skipped on a machine without it.

Screenshots go to `ARTIFACTS` (tests/artifacts/, gitignored; CI keeps it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LAUNCH_ARGS = ["--no-sandbox"]


def chromium_path() -> str | None:
    """The system chromium's executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(chromium_path() is None, reason="no chromium on this machine")
