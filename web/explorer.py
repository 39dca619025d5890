"""The API explorer's handlers: ``/openapi.json``, ``/docs`` (Swagger UI) and ``/docs/{file}``.

Swagger UI's files come from the ``swagger-ui-bundle`` package (read once, kept in memory);
nothing is loaded from another site. With ``GPU_BACKTEST_PUBLIC_DOCS`` these paths need no
API key (web/middlewares.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..core.errors import NotFoundError
from . import keys as K
from .openapi import DOCS_ASSETS, docs_initializer, docs_page, swagger_ui_dir

_ASSET_CACHE: dict[str, bytes] = {}
ASSET_MAX_AGE_S = 86_400


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI 3.1 document."""
    return web.json_response(request.app[K.OPENAPI])


async def docs(request: web.Request) -> web.Response:
    """GET /docs: Swagger UI over this server's document."""
    return web.Response(text=docs_page(request.app[K.OPENAPI]), content_type="text/html")


async def docs_file(request: web.Request) -> web.Response:
    """GET /docs/{file}: one of Swagger UI's files, its start-up script, or the document's 3.0 form."""
    name = request.match_info["file"]
    if name == "openapi-3.0.json":
        return web.json_response(request.app[K.OPENAPI_30])
    if name == "swagger-initializer.js":
        return web.Response(text=docs_initializer(), content_type="application/javascript")
    ctype = DOCS_ASSETS.get(name)
    if ctype is None:
        raise NotFoundError(f"no file {name!r} under /docs", {"file": name})
    data = _ASSET_CACHE.get(name)
    if data is None:
        data = await asyncio.to_thread(_read_asset, name)
        _ASSET_CACHE[name] = data
    return web.Response(body=data, headers={"Content-Type": ctype,
                                            "Cache-Control": f"public, max-age={ASSET_MAX_AGE_S}"})


def _read_asset(name: str) -> bytes:
    return (swagger_ui_dir() / name).read_bytes()
