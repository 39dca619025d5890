"""Saved strategies over HTTP (SQLite and PostgreSQL): POST / PUT / GET / DELETE /strategies,
jobs that run a saved strategy by name (or name@version) and keep the exact document and version
they ran after the strategy changes or is deleted, the errors (409, 404, 422 naming the field),
and saved strategies surviving a server restart."""

from __future__ import annotations

from typing import Any

import pytest
import test_api
from expr_cases import CASES
from test_api import CheckedClient, error_of, ok_json, run_job

from gpu_backtest.core.expr import strategy_digest

pytestmark = [pytest.mark.asyncio]

# tests/test_api.py's fixtures: the real app, a Dask cluster, SQLite and PostgreSQL job databases
cluster = test_api.cluster
database = test_api.database
make_client = test_api.make_client
client = test_api.client
aiohttp_client_cls = test_api.aiohttp_client_cls


def _doc(name: str) -> dict[str, Any]:
    doc, _ = CASES["sma_crossover"]
    return {**doc, "name": name, "description": "fast SMA over slow SMA"}


async def _clear(client: CheckedClient) -> None:
    for s in (await ok_json(await client.get("/strategies")))["strategies"]:
        if s["source"] == "saved":
            await ok_json(await client.delete(f"/strategies/{s['name']}"))


async def test_save_version_run_and_delete_keep_jobs_reproducible(client: CheckedClient) -> None:
    await _clear(client)
    resp = await client.post("/strategies", json=_doc("my_cross"))
    v1 = await ok_json(resp, 201)
    assert resp.headers["Location"] == "/strategies/my_cross?version=1"
    assert (v1["name"], v1["version"]) == ("my_cross", 1) and v1["digest"] == strategy_digest(v1["strategy"])
    listed = {s["name"]: s for s in (await ok_json(await client.get("/strategies")))["strategies"]}
    assert listed["my_cross"]["source"] == "saved" and listed["my_cross"]["versions"] == [1]
    assert [p["name"] for p in listed["my_cross"]["params"]] == ["fast", "slow"]
    assert listed["sma_crossover"]["source"] == "builtin" and listed["sma_crossover"]["version"] is None

    spec = {"strategy": "my_cross", "symbols": ["SYN001"], "params": {"fast": [5, 10], "slow": 50}}
    first = await run_job(client, spec)
    src = first["info"]["strategy_source"]
    assert (src["kind"], src["name"], src["version"]) == ("saved", "my_cross", 1)
    builtin = await run_job(client, {**spec, "strategy": "sma_crossover"})
    assert [r["metrics"] for r in first["top"]] == [r["metrics"] for r in builtin["top"]]

    # version 2 changes the exits; the first job still names (and holds) version 1's text
    changed = {**_doc("my_cross"), "signals": {**_doc("my_cross")["signals"], "exit": "close < sma(close, slow)"}}
    v2 = await ok_json(await client.put("/strategies/my_cross", json=changed))
    assert v2["version"] == 2 and v2["digest"] != v1["digest"]
    second = await run_job(client, spec)
    assert second["info"]["strategy_source"]["version"] == 2
    pinned = await run_job(client, {**spec, "strategy": "my_cross@1"})
    assert pinned["info"]["strategy_source"]["version"] == 1
    assert [r["metrics"] for r in pinned["top"]] == [r["metrics"] for r in first["top"]]
    got = await ok_json(await client.get("/strategies/my_cross?version=1"))
    assert got["strategy"] == v1["strategy"] and got["versions"] == [1, 2]

    deleted = await ok_json(await client.delete("/strategies/my_cross"))
    assert deleted == {"deleted": "my_cross", "versions": 2}
    full = await ok_json(await client.get(f"/backtest/{first['job_id']}?view=full"))
    assert full["spec"]["strategy"]["version"] == 1
    assert full["spec"]["strategy"]["signals"] == v1["strategy"]["signals"]
    col = await ok_json(await client.get(f"/backtest/{first['job_id']}/columns/1"))  # recomputed from the job's text
    assert col["metrics"]["final_equity"] == pytest.approx(
        next(r["metrics"]["final_equity"] for r in first["top"] if r["column"] == 1), rel=1e-12)
    await error_of(await client.get("/strategies/my_cross"), 404, "not_found")


async def test_errors_name_the_problem(client: CheckedClient) -> None:
    await _clear(client)
    await ok_json(await client.post("/strategies", json=_doc("taken")), 201)
    await error_of(await client.post("/strategies", json=_doc("taken")), 409, "strategy_exists")
    await error_of(await client.post("/strategies", json=_doc("sma_crossover")), 409, "strategy_exists")
    err = await error_of(await client.post("/strategies", json=_doc("Bad-Name")), 422, "invalid_spec")
    assert err["details"]["field"] == "name"
    err = await error_of(await client.post("/strategies", json={k: v for k, v in _doc("x").items() if k != "name"}),
                         422, "invalid_spec")
    assert err["details"]["field"] == "name"
    bad = {**_doc("broken"), "signals": {"entry": "close >", "exit": "close < 1"}}
    err = await error_of(await client.post("/strategies", json=bad), 422, "invalid_spec")
    assert err["details"]["field"] == "signals.entry" and "column" in err["details"]["reason"]
    await error_of(await client.put("/strategies/nosuch", json=_doc("nosuch")), 404, "not_found")
    err = await error_of(await client.put("/strategies/taken", json=_doc("other")), 422, "invalid_spec")
    assert err["details"]["field"] == "name"
    await error_of(await client.get("/strategies/taken?version=0"), 400, "bad_request")
    await error_of(await client.get("/strategies/taken?version=7"), 404, "not_found")
    await error_of(await client.delete("/strategies/nosuch"), 404, "not_found")
    await error_of(await client.delete("/strategies/sma_crossover"), 422, "invalid_spec")
    await error_of(await client.post("/strategies", data="not json", headers={"Content-Type": "text/plain"}),
                   415, "unsupported_media_type")
    err = await error_of(await client.post("/backtest", json={"strategy": "taken@9", "symbols": ["SYN001"]}),
                         422, "invalid_spec")
    assert err["details"]["field"] == "strategy"


async def test_saved_strategies_survive_a_restart(make_client: Any) -> None:
    first = await make_client()
    await _clear(first)
    await ok_json(await first.post("/strategies", json=_doc("durable")), 201)
    await ok_json(await first.put("/strategies/durable", json=_doc("durable")))
    await first.close()
    second = await make_client()
    got = await ok_json(await second.get("/strategies/durable"))
    assert got["version"] == 2 and got["versions"] == [1, 2]
    done = await run_job(second, {"strategy": "durable", "symbols": ["SYN002"]})
    assert done["info"]["strategy_source"]["name"] == "durable"
    await _clear(second)
