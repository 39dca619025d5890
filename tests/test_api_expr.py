"""Expression strategies over HTTP: a job runs on the cluster's workers (which rebuild the strategy
from the plan's spec), a bad expression is a 422 naming the field, and random expressions over the
grammar never produce a 5xx (the checked client asserts every error answer's envelope)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import test_api
from expr_cases import CASES
from expr_gen import gen_doc
from test_api import CheckedClient, error_of, ok_json, run_job, wait_job

from gpu_backtest.core.expr import strategy_digest

pytestmark = [pytest.mark.asyncio]

# tests/test_api.py's fixtures: the real app, a Dask cluster, SQLite and PostgreSQL job databases
cluster = test_api.cluster
database = test_api.database
make_client = test_api.make_client
client = test_api.client
aiohttp_client_cls = test_api.aiohttp_client_cls


async def test_expression_job_runs_on_the_cluster(client: CheckedClient) -> None:
    doc, _ = CASES["sma_crossover"]
    spec = {"strategy": doc, "symbols": ["SYN001", "SYN002"], "params": {"fast": [5, 10], "slow": 50}}
    done = await run_job(client, spec)
    info = done["info"]
    assert info["strategy"] == "expr_sma" and info["n_columns"] == 4
    assert info["strategy_source"]["kind"] == "expression"
    assert info["strategy_source"]["digest"] == strategy_digest(doc)
    assert info["strategy_source"]["text"]["signals"] == doc["signals"]
    builtin = await run_job(client, {**spec, "strategy": "sma_crossover"})
    assert [r["metrics"] for r in done["top"]] == [r["metrics"] for r in builtin["top"]]
    full = await ok_json(await client.get(f"/backtest/{done['job_id']}?view=full"))
    assert full["spec"]["strategy"]["name"] == "expr_sma"
    listing = await ok_json(await client.get("/backtest"))
    assert any(j.get("strategy") == "expr_sma" for j in listing["jobs"]), listing


async def test_bad_expression_is_a_422_naming_the_field(client: CheckedClient) -> None:
    bad = {"signals": {"entry": "close > 1", "exit": "close.__class__ > 1"}}
    err = await error_of(await client.post("/backtest", json={"strategy": bad, "symbols": ["SYN001"]}), 422,
                         "invalid_spec")
    assert err["details"]["field"] == "strategy.signals.exit"
    assert err["details"]["reason"].startswith("column 1: attribute access")
    huge = {"signals": {"entry": "close > 1 and " * 8_000 + "close > 1", "exit": "close < 1"}}
    err = await error_of(await client.post("/backtest", json={"strategy": huge, "symbols": ["SYN001"]}), 422,
                         "invalid_spec")
    assert err["details"]["field"] == "strategy.signals.entry" and "characters long" in err["details"]["reason"]


async def test_random_expressions_never_5xx(client: CheckedClient) -> None:
    rng = random.Random(20261202)
    accepted = []
    for _ in range(12):
        spec: dict[str, Any] = {"strategy": gen_doc(rng), "symbols": ["SYN001"],
                                "params": {"fast": [3, 5], "slow": 30}}
        resp = await client.post("/backtest", json=spec)  # the checked client fails on any 5xx
        assert resp.status in (202, 422), await resp.text()
        if resp.status == 202:
            accepted.append((await resp.json())["job_id"])
    for jid in accepted[:3]:
        doc = await wait_job(client, jid)
        assert doc["status"] == "succeeded", doc["error"]
