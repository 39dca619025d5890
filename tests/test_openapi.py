"""The OpenAPI document and the API explorer: a valid OpenAPI 3.1 document generated from the
code's models (and its 3.0 form for Swagger UI), complete for every route; Swagger UI served
from the swagger-ui-bundle package (no CDN); GPU_BACKTEST_PUBLIC_DOCS and CORS origins.

The servers here are the real app on a loopback port (jobs run in-process, no cluster).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from gpu_backtest.core.config import ConfigError, Settings
from gpu_backtest.web import schemas as S
from gpu_backtest.web.app import create_app
from gpu_backtest.web.openapi import (
    DOCS_ASSETS,
    docs_initializer,
    docs_page,
    document_to_30,
    openapi_document,
    swagger_ui_dir,
)

pytestmark = pytest.mark.filterwarnings("error::aiohttp.web_exceptions.NotAppKeyWarning")

KEY = "docs-secret"
METHODS = {"get", "post", "delete", "put", "patch"}


def _walk(node: Any, path: str = "") -> Any:
    """(path, dict) for every mapping in a JSON document."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"GPU_BACKTEST_DATA_DIR": str(tmp_path), "GPU_BACKTEST_BACKEND": "cpu",
                              "GPU_SERVER_HOST": "127.0.0.1", **env})


# --------------------------------------------------------------------------- the document


def test_document_is_valid_openapi_31_and_its_30_form_too() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator: OpenAPI 3.1 (JSON Schema 2020-12 schemas)
    # no 3.0-only forms in the 3.1 document
    for where, node in _walk(doc["components"]["schemas"]):
        assert "nullable" not in node, where
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert not isinstance(node.get(bound), bool), (where, bound)
    lowered = document_to_30(doc)
    assert lowered["openapi"] == "3.0.3"
    validate(lowered)
    for where, node in _walk(lowered["components"]["schemas"]):
        assert not isinstance(node.get("type"), list) and node.get("type") != "null", where
        assert "examples" not in node and "const" not in node, where
    public = openapi_document(public_docs=True)
    validate(public)
    for path in ("/docs", "/docs/{file}", "/openapi.json"):
        assert public["paths"][path]["get"]["security"] == [] and "401" not in public["paths"][path]["get"]["responses"]
        assert "security" not in doc["paths"][path]["get"] and "401" in doc["paths"][path]["get"]["responses"]


def test_every_route_is_documented_with_its_answers(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path), cluster=False)
    doc = openapi_document()
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {(r.resource.canonical, r.method) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    assert documented == served
    schemas = doc["components"]["schemas"]
    assert {m.__name__ for m in S.MODELS} | {"BacktestSpec"} <= set(schemas)
    assert set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(doc))) <= set(schemas)
    op_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids))
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["responses"], where
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in op["parameters"]), where
            if path == "/ui" or path.startswith("/ui/"):  # console pages: HTML answers, a redirect to log in
                assert op["tags"] == ["console"] and op["security"] in ([], [{"ApiKey": []}, {"ConsoleSession": []}])
                assert [c for c in op["responses"] if c[0] in "23"], where
                for code, resp in op["responses"].items():
                    want = {"text/plain"} if code == "303" else {"text/html"}
                    assert resp["description"] and set(resp["content"]) == want, (where, code)
                continue
            ok = [code for code in op["responses"] if code.startswith("2")]
            assert len(ok) == 1, where
            secured = op.get("security") != []
            assert ("401" in op["responses"]) == secured, where
            for code, resp in op["responses"].items():
                assert resp["description"] and resp["content"], (where, code)
                for ctype, media in resp["content"].items():
                    assert "schema" in media, (where, code, ctype)
                if not code.startswith("2"):  # every error is the envelope, with an example
                    media = resp["content"]["application/json"]
                    assert media["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}, (where, code)
                    assert media["example"]["error"]["code"], (where, code)
    # the errors each handler can answer with
    expect = {("POST", "/backtest"): {"400", "401", "408", "413", "415", "422", "503"},
              ("GET", "/backtest"): {"400", "401"},
              ("GET", "/backtest/{job_id}"): {"400", "401", "404"},
              ("DELETE", "/backtest/{job_id}"): {"400", "401", "404", "409"},
              ("GET", "/backtest/{job_id}/results"): {"400", "401", "404", "409"},
              ("GET", "/backtest/{job_id}/details"): {"401", "404", "409"},
              ("GET", "/backtest/{job_id}/columns/{n}"): {"401", "404", "409", "422"},
              ("GET", "/backtest/{job_id}/report"): {"401", "404", "409"},
              ("GET", "/backtest/{job_id}/columns/{n}/report"): {"401", "404", "409", "422"},
              ("GET", "/data/symbols"): {"400", "401", "404", "422"},
              ("DELETE", "/data/symbols/{source}/{frequency}/{symbol}"): {"401", "404", "422"},
              ("POST", "/data/upload"): {"400", "401", "404", "408", "413", "415", "422", "429", "507"},
              ("POST", "/strategies"): {"400", "401", "408", "409", "415", "422"},
              ("GET", "/strategies/{name}"): {"400", "401", "404", "422"},
              ("PUT", "/strategies/{name}"): {"400", "401", "404", "408", "409", "415", "422"},
              ("DELETE", "/strategies/{name}"): {"401", "404", "422"},
              ("GET", "/ui"): {"303"},
              ("GET", "/ui/new"): {"303"},
              ("POST", "/ui/new"): {"303", "403", "422", "503"},
              ("GET", "/ui/login"): {"303"},
              ("POST", "/ui/login"): {"303", "401", "403"},
              ("POST", "/ui/logout"): {"303", "403"}}
    for (method, path), codes in expect.items():
        got = {c for c in doc["paths"][path][method.lower()]["responses"] if not c.startswith("2")}
        assert got == codes, (method, path, got)
    results = doc["paths"]["/backtest/{job_id}/results"]["get"]["responses"]["200"]["content"]
    assert set(results) == {"application/json", "text/csv", "application/vnd.apache.parquet"}
    assert set(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(doc["paths"]["/docs"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    for path in ("/backtest/{job_id}/report", "/backtest/{job_id}/columns/{n}/report"):  # the key or the cookie
        assert doc["paths"][path]["get"]["security"] == [{"ApiKey": []}, {"ConsoleSession": []}]


@pytest.mark.parametrize("model", S.MODELS, ids=lambda m: m.__name__)
def test_every_model_has_examples_that_fit_its_schema(model: Any) -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    examples = schemas[model.__name__].get("examples")
    assert examples, model.__name__
    for example in examples:
        _check(doc, {"$ref": f"#/components/schemas/{model.__name__}"}, example, OAS31Validator)
        model.model_validate(example)  # and the model itself takes it


def _check(doc: dict[str, Any], schema: dict[str, Any], instance: Any, cls: Any) -> None:
    """Validate ``instance`` against ``schema`` whose $refs point into ``doc``'s components."""
    resolved = {**schema, "components": doc["components"]}
    errors = sorted(cls(resolved).iter_errors(instance), key=str)
    assert not errors, [e.message for e in errors[:5]]


def test_request_body_schema_is_the_specs_own(tmp_path: Path) -> None:
    doc = openapi_document()
    spec = doc["components"]["schemas"]["BacktestSpec"]
    assert spec["additionalProperties"] is False and spec["required"] == ["strategy"]
    costs = spec["properties"]["costs"]
    assert costs["type"] == ["object", "null"]
    fees = costs["properties"]["fees"]
    assert fees["exclusiveMaximum"] == 1.0 and fees["minimum"] == 0.0  # the 3.0 bound lifted to 3.1
    assert spec["properties"]["source"]["type"] == ["string", "null"]
    _check(doc, {"$ref": "#/components/schemas/BacktestSpec"}, spec["examples"][0], OAS31Validator)
    body = doc["paths"]["/backtest"]["post"]["requestBody"]["content"]["application/json"]
    _check(doc, body["schema"], body["example"], OAS31Validator)


# --------------------------------------------------------------------------- the explorer


def test_swagger_ui_files_come_from_the_installed_bundle() -> None:
    root = swagger_ui_dir()
    for name in DOCS_ASSETS:
        assert (root / name).is_file() and (root / name).stat().st_size > 0, name
    page = docs_page(openapi_document())
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert urls and all(u.startswith("docs/") or u == "openapi.json" for u in urls), urls  # this server only
    assert "http://" not in page and "https://" not in page and "//" not in page.replace("<!--", "")
    assert '"docs/openapi-3.0.json"' in docs_initializer() and "http" not in docs_initializer()


async def _client(aiohttp_client: Any, tmp_path: Path, **env: str) -> TestClient:  # type: ignore[type-arg]
    return await aiohttp_client(create_app(_settings(tmp_path, **env), cluster=False, shutdown_grace_s=1))


@pytest.mark.asyncio
async def test_docs_page_and_its_files_are_served(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    resp = await client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    for url in re.findall(r'(?:src|href)="(docs/[^"]+)"', page):
        asset = await client.get("/" + url)
        assert asset.status == 200, url
        assert len(await asset.read()) > 100, url
    js = await client.get("/docs/swagger-ui-bundle.js")
    assert js.headers["Content-Type"].startswith("application/javascript")
    assert (await js.read()) == (swagger_ui_dir() / "swagger-ui-bundle.js").read_bytes()
    assert "max-age" in js.headers["Cache-Control"]
    lowered = await (await client.get("/docs/openapi-3.0.json")).json()
    assert lowered["openapi"] == "3.0.3"
    validate(lowered)
    served = await (await client.get("/openapi.json")).json()
    assert served["openapi"] == "3.1.0" and served == json.loads(json.dumps(openapi_document()))
    for name in ("nope.js", "..%2Fapp.py", "swagger-ui.js.map", "index.html"):
        resp = await client.get(f"/docs/{name}")
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found", name


@pytest.mark.parametrize("public", [False, True])
@pytest.mark.asyncio
async def test_public_docs_open_the_explorer_only(aiohttp_client: Any, tmp_path: Path, public: bool) -> None:
    env = {"API_KEY_REQUIRED": "true", "GPU_SERVER_API_KEY": KEY}
    if public:
        env["GPU_BACKTEST_PUBLIC_DOCS"] = "true"
    client = await _client(aiohttp_client, tmp_path, **env)
    for path in ("/docs", "/docs/swagger-ui.css", "/docs/swagger-initializer.js", "/docs/openapi-3.0.json",
                 "/openapi.json"):
        resp = await client.get(path)
        assert resp.status == (200 if public else 401), (path, resp.status)
        assert (await client.get(path, headers={"X-API-Key": KEY})).status == 200, path
    for method, path in (("GET", "/strategies"), ("GET", "/backtest"), ("POST", "/backtest"),
                         ("GET", "/docsx"), ("GET", "/metrics")):
        resp = await client.request(method, path)
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized", (method, path)
    doc = await (await client.get("/openapi.json", headers={"X-API-Key": KEY})).json()
    assert ("security" in doc["paths"]["/docs"]["get"]) == public


@pytest.mark.asyncio
async def test_cors_for_listed_origins(aiohttp_client: Any, tmp_path: Path) -> None:
    origin = "https://lab.example.com"
    client = await _client(aiohttp_client, tmp_path, GPU_BACKTEST_CORS_ORIGINS=f"{origin}, http://localhost:3000",
                           API_KEY_REQUIRED="true", GPU_SERVER_API_KEY=KEY)
    pre = await client.options("/backtest", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "X-API-Key, Content-Type"})
    assert pre.status == 204  # answered before authentication
    assert pre.headers["Access-Control-Allow-Origin"] == origin
    allowed = {h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"x-api-key", "idempotency-key", "content-type"} <= allowed
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    resp = await client.get("/strategies", headers={"Origin": origin, "X-API-Key": KEY})
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == origin
    exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Request-ID", "Location"} <= exposed
    denied = await client.get("/strategies", headers={"Origin": origin})  # errors carry the header too
    assert denied.status == 401 and denied.headers["Access-Control-Allow-Origin"] == origin
    other = await client.get("/strategies", headers={"Origin": "https://evil.example", "X-API-Key": KEY})
    assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers
    bad = await client.options("/backtest", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in bad.headers and bad.status >= 400


@pytest.mark.asyncio
async def test_no_cors_headers_by_default(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _client(aiohttp_client, tmp_path)
    resp = await client.get("/health", headers={"Origin": "https://lab.example.com"})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    pre = await client.options("/backtest", headers={"Origin": "https://lab.example.com",
                                                     "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in pre.headers


def test_settings_for_docs_and_cors() -> None:
    s = Settings.from_env({})
    assert s.public_docs is False and s.cors_origins == ()
    s = Settings.from_env({"GPU_BACKTEST_PUBLIC_DOCS": "yes",
                           "GPU_BACKTEST_CORS_ORIGINS": " https://a.example.com/ ,http://localhost:3000,,"})
    assert s.public_docs is True and s.cors_origins == ("https://a.example.com", "http://localhost:3000")
    for raw in ("a.example.com", "https://a.example.com/path", "ftp://x"):
        with pytest.raises(ConfigError, match="GPU_BACKTEST_CORS_ORIGINS"):
            Settings.from_env({"GPU_BACKTEST_CORS_ORIGINS": raw})
    with pytest.raises(ConfigError, match="GPU_BACKTEST_PUBLIC_DOCS"):
        Settings.from_env({"GPU_BACKTEST_PUBLIC_DOCS": "maybe"})
