"""Saved strategies over HTTP (SQLite and PostgreSQL): POST / PUT / GET / DELETE /strategies,
jobs that run a saved strategy by name (or name@version) and keep the exact document and version
they ran after the strategy changes or is deleted, the errors (409, 404, 422 naming the field),
saved strategies surviving a server restart, and the inputs that once answered 500: saves racing
each other on one database, text that a database cannot store (NUL, lone surrogates)."""

from __future__ import annotations

import asyncio
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


async def test_concurrent_saves_are_201_or_409_never_500(client: CheckedClient) -> None:
    """Regression: saves that read the latest version and then insert, several at once. On SQLite
    (WAL) a plain BEGIN's read snapshot cannot take the write lock once another connection has
    written, so the INSERT failed at once with "database is locked" — a 500 whenever a save met
    another save or a job's write. Now: one 201 per new name, 409 ``strategy_exists`` for the
    others, and concurrent PUTs get consecutive versions (SQLite and PostgreSQL)."""
    await _clear(client)
    first = await asyncio.gather(*(client.post("/strategies", json=_doc("raced")) for _ in range(6)))
    assert sorted(r.status for r in first) == [201] + [409] * 5
    for r in first:
        if r.status == 409:
            await error_of(r, 409, "strategy_exists")
    puts = await asyncio.gather(*(client.put("/strategies/raced", json=_doc("raced")) for _ in range(6)))
    assert sorted([(await ok_json(r))["version"] for r in puts]) == [2, 3, 4, 5, 6, 7]
    names = [f"apart_{i}" for i in range(6)]
    apart = await asyncio.gather(*(client.post("/strategies", json=_doc(n)) for n in names))
    assert [r.status for r in apart] == [201] * 6
    got = await ok_json(await client.get("/strategies/raced"))
    assert got["versions"] == [1, 2, 3, 4, 5, 6, 7]
    await _clear(client)


async def test_text_a_database_cannot_store_is_422(client: CheckedClient) -> None:
    """Regression: a description with U+0000 (PostgreSQL refuses NUL in text and JSONB) or a lone
    surrogate (not UTF-8: SQLite and PostgreSQL) answered 500 on POST / PUT /strategies, and an
    inline expression strategy's name with NUL a 500 on POST /backtest (PostgreSQL). Now 422 naming
    the field, on every database."""
    await _clear(client)
    for text in ("fast\x00slow", "fast \ud800 slow"):
        err = await error_of(await client.post("/strategies", json={**_doc("odd"), "description": text}),
                             422, "invalid_spec")
        assert err["details"]["field"] == "description"
        doc = _doc("odd")
        doc["params"] = {**doc["params"], "fast": {**doc["params"]["fast"], "description": text}}
        err = await error_of(await client.post("/strategies", json=doc), 422, "invalid_spec")
        assert err["details"]["field"] == "params.fast.description"
        inline = {**_doc("x"), "name": f"odd{text}"}
        err = await error_of(await client.post("/backtest", json={"strategy": inline, "symbols": ["SYN001"]}),
                             422, "invalid_spec")
        assert err["details"]["field"] == "strategy.name"
    await ok_json(await client.post("/strategies", json=_doc("odd")), 201)
    err = await error_of(await client.put("/strategies/odd", json={**_doc("odd"), "description": "a\x00"}),
                         422, "invalid_spec")
    assert err["details"]["field"] == "description"
    # newlines, tabs and any other Unicode are text like any other
    fine = await ok_json(await client.put("/strategies/odd", json={**_doc("odd"), "description": "a\n\tb é 😀"}))
    assert fine["description"] == "a\n\tb é 😀" and fine["version"] == 2
    await _clear(client)


async def test_a_body_version_is_not_kept(client: CheckedClient) -> None:
    """The server numbers versions: a body's ``version`` (e.g. a GET's document sent back) is not
    stored in the document, whose version would then contradict the row's."""
    await _clear(client)
    v1 = await ok_json(await client.post("/strategies", json={**_doc("numbered"), "version": 7}), 201)
    assert v1["version"] == 1 and "version" not in v1["strategy"]
    v2 = await ok_json(await client.put("/strategies/numbered", json={**v1["strategy"], "version": 1}))
    assert v2["version"] == 2 and "version" not in v2["strategy"] and v2["digest"] == v1["digest"]
    await _clear(client)
