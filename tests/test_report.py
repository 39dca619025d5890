"""The HTML report (core/report.py): the derived series, escaping, the HTTP routes, and the pages
in headless Chromium (the system's `chromium`, driven by Playwright; skipped where either is missing).

Screenshots go to tests/artifacts/ (gitignored; CI keeps it)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from browser import ARTIFACTS
from browser import chromium_path as _chromium

from gpu_backtest.api import run_backtest
from gpu_backtest.core.backend import select_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import Engine
from gpu_backtest.core.report import benchmark_curve, build_report, drawdown, monthly_returns, rolling_sharpe
from gpu_backtest.plugins.manager import default_registry
from gpu_backtest.web.app import create_app

SYMBOLS = ["SYN001", "SYN002", "SYN003"]
SWEEP = {"strategy": "sma_crossover", "symbols": SYMBOLS, "start": "2016-01-01",
         "params": {"fast": [5, 10, 15], "slow": [30, 40, 50, 60]}, "output": {"top_k": 3},
         "metrics": {"benchmark": "SYN010"}}
SINGLE = {"strategy": "sma_crossover", "symbols": ["SYN001"], "start": "2016-01-01",
          "params": {"fast": 10, "slow": 40}, "metrics": {"benchmark": "SYN010"}}
WALK_FORWARD = {**SWEEP, "symbols": ["SYN001", "SYN002"], "validation": {"method": "walk_forward", "train": "1y",
                                                                       "test": "6m"}}
PORTFOLIO = {"strategy": "xs_momentum", "symbols": [f"SYN{i:03d}" for i in range(1, 13)],  # a portfolio sweep
             "start": "2016-01-01", "params": {"lookback": [63, 126, 252], "top_n": [3, 5]}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report_data")


def _settings(path: Path) -> Settings:
    return Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(path), "GPU_BACKTEST_BACKEND": "cpu",
                              "GPU_SERVER_HOST": "127.0.0.1"})


def _page(spec: dict[str, Any], data_dir: Path) -> tuple[str, Any]:
    settings = _settings(data_dir)
    result = run_backtest(spec, settings=settings, backend="cpu")
    engine = Engine(settings, select_backend(settings, "cpu"), default_registry())
    bench = benchmark_curve(engine, result.spec.to_dict(), result.info, result.details[0])
    if "benchmark" in spec.get("metrics", {}):
        eq = result.details[0]["equity"]["value"]
        assert bench is not None and len(bench["returns"]) == len(eq) and bench["returns"][0] == 0.0
    page = build_report(result.info, result.rows(20), result.details, table=[result.table],
                        column_link=lambda n: f"columns/{n}/report", init_cash=100_000.0, benchmark=bench)
    return page, result


def _cards(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-metric="([^"]+)" data-value="([^"]*)"', page))


# --------------------------------------------------------------------------- the numbers


def test_drawdown_monthly_and_rolling_sharpe_follow_their_definitions() -> None:
    idx = pd.date_range("2020-01-01", periods=90, freq="D", tz="UTC")
    rng = np.random.default_rng(3)
    eq = pd.Series(100.0 * np.cumprod(1 + rng.normal(0.001, 0.01, len(idx))), index=idx)
    dd = drawdown(eq, 100.0)
    peak = np.maximum.accumulate(np.concatenate([[100.0], eq.to_numpy()]))[1:]
    assert np.allclose(dd.to_numpy(), eq.to_numpy() / peak - 1)
    mr = monthly_returns(eq, 100.0)
    jan = eq[eq.index.month == 1].iloc[-1]
    feb = eq[eq.index.month == 2].iloc[-1]
    assert mr.loc[2020, 1] == pytest.approx(jan / 100.0 - 1) and mr.loc[2020, 2] == pytest.approx(feb / jan - 1)
    assert mr.shape == (1, 12) and np.isnan(mr.loc[2020, 12])
    r = eq.pct_change().fillna(eq.iloc[0] / 100.0 - 1)
    rs = rolling_sharpe(r, 20, 252.0)
    tail = r.iloc[-20:]
    assert rs.iloc[-1] == pytest.approx(tail.mean() / tail.std(ddof=1) * np.sqrt(252.0))
    assert rs.iloc[:19].isna().all()


def test_user_text_is_escaped() -> None:
    evil = '<script>alert(1)</script>"'
    idx = [f"2020-01-{d:02d}T00:00:00+00:00" for d in range(1, 11)]
    detail = {"column": 0, "symbol": evil, "params": {"p": evil}, "metrics": {"sharpe": 1.5},
              "equity": {"time": idx, "value": [100.0 + i for i in range(10)]},
              "trades": [{"symbol": evil, "entry_time": idx[0], "exit_time": idx[3], "pnl": 1.0, "return": 0.01,
                          "exit_reason": evil}]}
    info = {"strategy": evil, "mode": "signals", "n_columns": 1, "rank_by": "sharpe"}
    page = build_report(info, [{"rank": 1, **detail}], [detail])
    body = page.split("</head>", 1)[1]
    assert "<script>alert" not in body and html.escape(evil) in body
    assert _cards(page) == {"sharpe": "1.5"}


# --------------------------------------------------------------------------- the routes


def _stdout_of(fn: Any, *args: Any) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert fn(*args) == 0
    return buf.getvalue()


@pytest.mark.asyncio
async def test_report_routes(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(_settings(tmp_path), cluster=False, shutdown_grace_s=1))
    job = await (await client.post("/backtest", json=SWEEP)).json()
    base = f"/backtest/{job['job_id']}"
    assert job["links"]["report"] == f"{base}/report"
    early = await client.get(f"{base}/report")
    for _ in range(5):
        doc = await (await client.get(base, params={"wait": "60"})).json()
        if doc["status"] not in ("queued", "running"):
            break
    assert doc["status"] == "succeeded", doc
    assert early.status in (200, 409)
    resp = await client.get(f"{base}/report")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    best = doc["top"][0]
    cards = _cards(page)
    assert cards and all(float(v) == best["metrics"][k] for k, v in cards.items() if v), cards
    assert 'data-chart="heat_0"' in page and 'data-chart="distribution"' in page
    assert '"name":"benchmark SYN010"' in page
    links = re.findall(r'href="(/backtest/[0-9a-f]+/columns/\d+/report)"', page)
    assert [int(u.split("/")[-2]) for u in links[:len(doc["top"])]] == [r["column"] for r in doc["top"]]
    col = await client.get(links[1])
    assert col.status == 200
    assert "column" in await col.text() and _cards(await col.text())
    assert (await client.get(f"/backtest/{'0' * 32}/report")).status == 404
    # the command line through the Python client: gpu-backtest report / jobs
    from gpu_backtest.entrypoints.cli import main

    url = str(client.make_url("/")).rstrip("/")
    out = tmp_path / "fetched.html"
    assert await asyncio.to_thread(main, ["report", job["job_id"], "--url", url, "-o", str(out)]) == 0
    fetched = out.read_text(encoding="utf-8")
    assert _cards(fetched) == cards and fetched.startswith("<!DOCTYPE html>")
    assert await asyncio.to_thread(main, ["report", job["job_id"], "--column", "3", "--url", url,
                                          "-o", str(tmp_path / "c3.html")]) == 0
    assert "column 3" in (tmp_path / "c3.html").read_text(encoding="utf-8")
    assert await asyncio.to_thread(main, ["report", "0" * 32, "--url", url, "-o", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()
    listed = await asyncio.to_thread(_stdout_of, main, ["jobs", "--url", url])
    assert job["job_id"] in listed and "succeeded" in listed and "1 of 1 job(s)" in listed
    if _chromium() is not None:  # served with its Content-Security-Policy: still drawn, no errors
        errors, drawn = await _served(str(client.make_url(f"{base}/report")))
        assert not errors and drawn and all(n > 0 for n in drawn.values()), (errors, drawn)
    assert (await client.get(f"{base}/columns/9999/report")).status == 404


def test_cli_writes_the_report(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from gpu_backtest.entrypoints.cli import main

    monkeypatch.setenv("GPU_BACKTEST_DATA_DIR", str(data_dir))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SWEEP))
    out = tmp_path / "out.html"
    assert main(["run", str(spec), "--backend", "cpu", "--report", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'data-chart="equity"' in page and 'data-chart="heat_1"' in page
    assert '"name":"benchmark SYN010"' in page  # read from the store as the run did


# --------------------------------------------------------------------------- in Chromium


async def _served(url: str) -> tuple[list[str], dict[str, int]]:
    async_api = pytest.importorskip("playwright.async_api")
    errors: list[str] = []
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            tab = await browser.new_page()
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            await tab.goto(url)
            await tab.wait_for_function(ALL_DRAWN, timeout=30_000)
            drawn = await tab.evaluate(COUNT_PATHS)
        finally:
            await browser.close()
    return errors, drawn


ALL_DRAWN = ("document.querySelectorAll('.chart .main-svg').length >= "
             "document.querySelectorAll('.chart').length")
COUNT_PATHS = """() => Object.fromEntries([...document.querySelectorAll('.chart')].map(c =>
    [c.dataset.chart, [...c.querySelectorAll('svg path')].filter(p => (p.getAttribute('d') || '')
      .length > 2).length + c.querySelectorAll('svg image').length]))"""


def _drawn(page_file: Path, shot: Path) -> tuple[list[str], dict[str, int], dict[str, str]]:
    """Open the page: (console errors, SVG paths/images per chart, the headline cards' texts)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(page_file.as_uri())
            tab.wait_for_function(ALL_DRAWN, timeout=30_000)
            drawn = tab.evaluate(COUNT_PATHS)
            cards = tab.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.card')].map(c =>
                [c.dataset.metric, c.dataset.value]))""")
            shot.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return errors, drawn, cards


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine")
@pytest.mark.parametrize("name", ["single", "sweep", "portfolio", "walk_forward"])
def test_report_in_chromium(name: str, data_dir: Path, tmp_path: Path) -> None:
    spec = {"single": SINGLE, "sweep": SWEEP, "portfolio": PORTFOLIO, "walk_forward": WALK_FORWARD}[name]
    page, result = _page(spec, data_dir)
    assert len(page.encode()) < 6 * 1024**2
    path = tmp_path / f"{name}.html"
    path.write_text(page, encoding="utf-8")
    errors, drawn, cards = _drawn(path, ARTIFACTS / f"report-{name}.png")
    assert not errors, errors
    assert drawn and all(n > 0 for n in drawn.values()), drawn
    want = {"single": {"equity", "monthly", "rolling_sharpe"}, "sweep": {"heat_0", "heat_1", "distribution"},
            "portfolio": {"equity", "holdings", "heat_0", "distribution"},
            "walk_forward": {"equity", "walk_forward"}}[name]
    assert want <= set(drawn), drawn
    best = result.rows(1)[0]["metrics"]  # the job's ranked row, as GET /backtest/{id} gives it
    assert cards and all(float(v) == best[k] for k, v in cards.items() if v), (cards, best)


def _three_param_table() -> tuple[pd.DataFrame, dict[str, Any]]:
    rng = np.random.default_rng(11)
    a, b, c, sym = np.meshgrid([5, 10, 15, 20], [30, 60, 90], [0.5, 1.0], ["SYN001", "SYN002"], indexing="ij")
    table = pd.DataFrame({"symbol": sym.ravel(), "fast": a.ravel(), "slow": b.ravel(), "k": c.ravel()})
    table["sharpe"] = rng.normal(0.5, 0.3, len(table))
    table["column"] = np.arange(len(table))
    best = table.sort_values("sharpe", ascending=False).iloc[0]
    row = {"rank": 1, "column": int(best["column"]), "symbol": best["symbol"],
           "params": {"fast": int(best["fast"]), "slow": int(best["slow"]), "k": float(best["k"])},
           "metrics": {"sharpe": float(best["sharpe"])}}
    return table, row


def test_three_parameters_get_a_slice_selector() -> None:
    from gpu_backtest.core.report import sweep_views

    table, row = _three_param_table()
    views = sweep_views([table.iloc[:20], table.iloc[20:]], "sharpe", ["fast", "slow", "k"], row)
    heat = views["heat"]
    assert (heat["x"], heat["y"], heat["slice"], heat["held"]) == ("fast", "slow", "k", {})
    median = heat["maps"][0]
    assert [s["value"] for s in median["slices"]] == ["0.5", "1"]
    assert median["slices"][median["active"]]["value"] == _label_of(row["params"]["k"])
    for s in median["slices"]:  # the median across symbols of each (slow, fast) cell at that k
        k = 0.5 if s["value"] == "0.5" else 1.0
        want = table[table["k"] == k].groupby(["slow", "fast"])["sharpe"].median().unstack("fast")
        assert np.allclose(np.array(s["z"], dtype=float), want.to_numpy())
    assert views["n"] == len(table) and sum(views["hist"]["counts"]) == len(table)
    info = {"strategy": "three", "mode": "signals", "n_columns": len(table), "rank_by": "sharpe"}
    page = build_report(info, [row], [], table=[table])
    assert '"updatemenus"' in page and "k = 0.5" in page


def _label_of(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine")
def test_slice_selector_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    table, row = _three_param_table()
    info = {"strategy": "three", "mode": "signals", "n_columns": len(table), "rank_by": "sharpe"}
    path = tmp_path / "three.html"
    path.write_text(build_report(info, [row], [], table=[table]), encoding="utf-8")
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.goto(path.as_uri())
            tab.wait_for_function(ALL_DRAWN, timeout=30_000)
            heat = tab.locator('[data-chart="heat_0"]')
            before = heat.evaluate("el => JSON.stringify(el.data[0].z)")
            heat.locator(".updatemenu-header-group").click()
            heat.locator(".updatemenu-dropdown-button").nth(0 if row["params"]["k"] == 1.0 else 1).click()
            after = heat.evaluate("el => JSON.stringify(el.data[0].z)")
        finally:
            browser.close()
    assert not errors, errors
    assert before != after


def test_overfitting_statistics_are_shown_when_present() -> None:
    info = {"strategy": "s", "mode": "signals", "n_columns": 1, "rank_by": "sharpe",
            "overfitting": {"pbo": 0.25, "deflated_sharpe": 0.91, "method": "<i>cscv</i>", "curves": [1, 2]}}
    page = build_report(info, [], [])
    section = page.split("Overfitting statistics", 1)[1]
    assert "25.00 %" not in section and "0.25" in section and "0.91" in section
    assert "&lt;i&gt;cscv&lt;/i&gt;" in section and "curves" not in section.split("</table>", 1)[0]
    assert "Overfitting statistics" not in build_report({**info, "overfitting": None}, [], [])
