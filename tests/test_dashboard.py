"""The Dask dashboard (issue 13, finding 14): the local cluster the server starts serves it (and the
scheduler's unauthenticated HTTP endpoints) on loopback by default, and GET /gpu/status links it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gpu_backtest.core.config import Settings
from gpu_backtest.web import keys as K
from gpu_backtest.web.app import create_app


def test_the_default_address_is_loopback_and_configurable() -> None:
    assert Settings.from_env({}).dashboard_address == "127.0.0.1:8787"
    assert Settings.from_env({"GPU_BACKTEST_DASHBOARD_ADDRESS": ":8787"}).dashboard_address == ":8787"
    with pytest.raises(Exception, match="GPU_BACKTEST_DASHBOARD_ADDRESS"):
        Settings.from_env({"GPU_BACKTEST_DASHBOARD_ADDRESS": "everywhere"})


def _bound(handle: Any) -> list[str]:
    """The addresses the cluster's HTTP server (dashboard) listens on."""
    server = handle.cluster.scheduler.http_server
    return sorted({s.getsockname()[0] for s in server._sockets.values()})


@pytest.mark.asyncio
async def test_the_cluster_create_app_starts_serves_its_dashboard_on_loopback(tmp_path: Path,
                                                                              aiohttp_client: Any) -> None:
    settings = Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path), "GPU_BACKTEST_BACKEND": "cpu",
                                  "GPU_SERVER_HOST": "127.0.0.1"})  # the dashboard address left at its default
    client = await aiohttp_client(create_app(settings, cluster=True, cluster_processes=False))
    handle = client.app[K.CLUSTER]
    addresses = _bound(handle)
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
    status = await (await client.get("/gpu/status")).json()
    link = status["links"]["dashboard"]
    assert link == status["cluster"]["dashboard"]
    url = URL(link)  # where it listens (8787, or another port when 8787 is taken)
    assert (url.host, url.port, url.path) == ("127.0.0.1", handle.cluster.scheduler.http_server.port, "/status")
    async with aiohttp.ClientSession() as session, session.get(url.with_path("/health")) as resp:
        assert resp.status == 200  # it is served there
