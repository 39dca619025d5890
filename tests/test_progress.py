"""The progress bars of `gpu-backtest run` and `gpu-backtest data fetch`: drawn on a terminal, silent on
anything else."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from gpu_backtest.entrypoints.cli import FetchProgress, ProgressBar, main


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_follows_the_stages() -> None:
    out = _Tty()
    bar = ProgressBar(out, mininterval=0.0)
    for fraction, stage in [(0.05, "calendar"), (0.5, "simulating"), (0.9, "details"), (1.0, "done")]:
        bar(fraction, stage)
    bar.close()
    text = out.getvalue()
    assert "simulating" in text and " 50%" in text and "details      90%" in text
    assert text.endswith("\r")  # cleared at the end (leave=False): the result table follows on a clean line


def test_silent_when_not_a_terminal() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    bar(0.5, "simulating")
    bar.close()
    assert out.getvalue() == "" and bar.bar is None


def test_run_prints_no_progress_into_a_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GPU_BACKTEST_DATA_DIR", str(tmp_path))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"strategy": "sma_crossover", "symbols": ["SYN001"], "start": "2019-01-01",
                                "params": {"fast": [5, 10], "slow": 30}}))
    assert main(["run", str(spec), "--backend", "cpu", "--json", "--compact"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["info"]["n_columns"] == 2


def test_fetch_bar_on_a_terminal_counts_the_symbols(tmp_path: Path) -> None:
    from gpu_backtest.core.config import Settings
    from gpu_backtest.core.dataservice import FETCH_BATCH, MarketDataService
    from gpu_backtest.plugins.manager import default_registry

    service = MarketDataService(Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path)}), default_registry())
    symbols = [f"SYN{i:03d}" for i in range(FETCH_BATCH * 2 + 3)]
    seen: list[tuple[int, int]] = []
    out = _Tty()
    bar = FetchProgress(out, mininterval=0.0)

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        bar(done, total)

    entries = service.fetch("synthetic", symbols, "2019-01-01", "2019-12-31", progress=progress)
    bar.close()
    n = len(symbols)
    assert [e.symbol for e in entries] == symbols and all(e.rows > 100 for e in entries)
    assert seen == [(0, n), (FETCH_BATCH, n), (2 * FETCH_BATCH, n), (n, n)]
    text = out.getvalue()
    assert "fetching" in text and f"{FETCH_BATCH}/{n}" in text and f"{2 * FETCH_BATCH}/{n}" in text
    assert text.endswith("\r")  # cleared at the end: the table of stored series follows on a clean line


def test_data_fetch_prints_no_progress_into_a_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GPU_BACKTEST_DATA_DIR", str(tmp_path))
    assert main(["data", "fetch", "SYN001", "SYN002", "--source", "synthetic", "--start", "2019-01-01",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and [e["symbol"] for e in json.loads(captured.out)] == ["SYN001", "SYN002"]
