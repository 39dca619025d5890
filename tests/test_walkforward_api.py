"""Walk-forward through the API (a job on the Dask cluster: the fold stages run as cluster tasks;
info.walk_forward in the compact and full documents; 422s naming ``validation``) and the CLI
(a fold table; exit 2 naming the field); too few bars refused at submit where the catalog tells."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import test_api
from test_api import CheckedClient, error_of, ok_json, run_job, submit, wait_job
from test_cli import cli

from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.web import schemas as S

sys.path.insert(0, str(Path(__file__).resolve().parent))

# tests/test_api.py's fixtures: the real app, a Dask cluster, SQLite (and PostgreSQL) job databases
cluster = test_api.cluster
database = test_api.database
make_client = test_api.make_client
client = test_api.client
aiohttp_client_cls = test_api.aiohttp_client_cls

SPEC = {"strategy": "sma_crossover", "symbols": ["SYN001", "SYN002"], "start": "2015-01-01", "end": "2016-12-31",
        "params": {"fast": [5, 10], "slow": [20, 40]},
        "validation": {"train": "6m", "test": "3m", "anchored": False, "choose": "universe"}}


@pytest.mark.asyncio
async def test_walk_forward_job(client: CheckedClient) -> None:
    done = await run_job(client, SPEC)
    wf = done["info"]["walk_forward"]
    S.WalkForward.model_validate(wf)
    assert wf["n_folds"] >= 4 and wf["choose"] == "universe"
    assert wf["tasks"]["train"] == wf["tasks"]["test"] == wf["n_folds"] * done["info"]["partitions"]
    assert all("equity" not in s for s in wf["symbols"])  # compact: no curves
    for f in wf["folds"]:
        assert f["train_end"] < f["test_start"] <= f["test_end"]
        assert len({json.dumps(c["params"], sort_keys=True) for c in f["symbols"]}) == 1
    full = await ok_json(await client.get(f"/backtest/{done['job_id']}?view=full"))
    curves = full["summary"]["info"]["walk_forward"]["symbols"]
    assert [len(s["equity"]["value"]) for s in curves] == [wf["oos_bars"]] * 2
    assert curves[0]["equity"]["value"][-1] == pytest.approx(wf["symbols"][0]["metrics"]["final_equity"])


@pytest.mark.asyncio
async def test_walk_forward_errors(client: CheckedClient) -> None:
    err = await error_of(await client.post("/backtest", json={**SPEC, "validation": {"train": "6q", "test": 10}}),
                         422, "invalid_spec")
    assert err["details"]["field"] == "validation.train"
    err = await error_of(await client.post("/backtest", json={**SPEC, "strategy": "xs_momentum", "params": {}}), 422,
                         "invalid_spec")
    assert err["details"]["field"] == "validation"
    # too few bars, seen at submit from the catalog: the range holds less than train + test
    err = await error_of(await client.post("/backtest", json={**SPEC, "validation": {"train": "2y", "test": "1y"}}),
                         422, "invalid_spec")
    assert err["details"]["field"] == "validation" and "too few bars" in err["message"]
    err = await error_of(await client.post("/backtest", json={**SPEC, "validation": {"train": 700, "test": 100}}),
                         422, "invalid_spec")
    assert err["details"]["field"] == "validation" and "at most 731 bars" in err["message"]
    # what only the real bars can tell (2 years of business days: ~522 bars < 600) fails the job, naming the field
    few = await submit(client, {**SPEC, "validation": {"train": 500, "test": 100}})
    doc = await wait_job(client, few["job_id"])
    assert doc["status"] == "failed" and doc["error"]["code"] == "invalid_spec"
    assert doc["error"]["details"]["field"] == "validation"


def _write(tmp: Path, spec: dict[str, Any]) -> Path:
    p = tmp / "spec.json"
    p.write_text(json.dumps(spec))
    return p


def test_cli_fold_table_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "long.parquet"
    gbm_panel_frame(2, 260, seed=3).to_parquet(data)
    spec = {"strategy": "sma_crossover", "params": {"fast": [5, 10], "slow": 30},
            "validation": {"train": 100, "test": 50, "anchored": True}}
    r = cli("run", str(_write(tmp_path, spec)), "--data", str(data))
    assert r.returncode == 0, r.stderr
    assert "walk-forward: 4 folds (anchored, train 100, test 50" in r.stdout
    assert "OOS sharpe" in r.stdout and "mean walk-forward efficiency" in r.stdout
    r = cli("run", str(_write(tmp_path, {**spec, "validation": {"train": 100, "test": 50, "choose": "x"}})),
            "--data", str(data))
    assert r.returncode == 2 and "validation.choose" in r.stderr and "Traceback" not in r.stderr
    r = cli("run", str(_write(tmp_path, {**spec, "validation": {"train": 250, "test": 50}})), "--data", str(data))
    assert r.returncode == 2 and "validation: too few bars" in r.stderr
