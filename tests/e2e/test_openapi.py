"""The OpenAPI document (``/schema/openapi.json``) describes every memory route accurately: paths and
methods, parameter bounds and defaults, request bodies, the memory and error shapes, documented statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from app.testkit import REPO_ROOT, MemchatServer

SEED_FIELDS = {"content", "createdAt", "id", "organizationId", "source", "sourceThreadId", "sourceTurnId"}
ROUTES = {
    "/api/v1/memory": {"get", "post", "delete"},
    "/api/v1/memory/search": {"post"},
    "/api/v1/memory/{memory_id}": {"get", "delete", "patch"},
    "/api/v1/memory/{memory_id}/history": {"get"},
    "/api/v1/memory/backfill-entities": {"post"},
    "/api/v1/memory/export": {"get"},
    "/api/v1/memory/import": {"post"},
}


@pytest.fixture(scope="module")
def spec(server: MemchatServer) -> dict[str, Any]:
    resp = httpx2.get(f"{server.url}/schema/openapi.json")
    assert resp.status_code == 200
    return resp.json()


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def param(spec: dict[str, Any], path: str, method: str, name: str, where: str = "query") -> dict[str, Any]:
    for p in spec["paths"][path][method]["parameters"]:
        if p["name"] == name and p["in"] == where:
            return p
    raise AssertionError(f"{method} {path} has no {where} parameter {name!r}")


def response_schema(spec: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    return resolve(spec, spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"])


def test_every_memory_route_is_documented(spec: dict[str, Any]) -> None:
    for path, methods in ROUTES.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), (path, set(spec["paths"][path]))


def test_bounds_and_defaults(spec: dict[str, Any]) -> None:
    limit = param(spec, "/api/v1/memory", "get", "limit")["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == ("integer", 1, 100, 50)
    offset = param(spec, "/api/v1/memory", "get", "offset")["schema"]
    assert (offset["minimum"], offset["default"]) == (0, 0) and "maximum" not in offset
    backfill = "/api/v1/memory/backfill-entities"
    b_limit = param(spec, backfill, "post", "limit")["schema"]
    assert (b_limit["minimum"], b_limit["maximum"], b_limit["default"]) == (1, 50, 20)
    chunk = param(spec, backfill, "post", "chunk_size")["schema"]
    assert (chunk["minimum"], chunk["maximum"], chunk["default"]) == (1, 10, 5)
    assert param(spec, backfill, "post", "offset")["schema"]["minimum"] == 0
    for path, methods in ROUTES.items():
        for method in methods:
            ns = param(spec, path, method, "namespace")["schema"]
            assert ns["maxLength"] == 256 and ns["default"] == "" and ns["pattern"], (path, method)
            assert param(spec, path, method, "authorization", "header")["required"] is False
            assert param(spec, path, method, "vai_token", "cookie")["required"] is False
    memory_id = param(spec, "/api/v1/memory/{memory_id}", "get", "memory_id", "path")
    assert memory_id["required"] is True and memory_id["schema"]["format"] == "uuid"
    confirm = param(spec, "/api/v1/memory", "delete", "confirm")
    assert confirm["required"] is True and confirm["schema"]["type"] == "boolean"
    assert confirm["schema"]["enum"] == [True]
    source = param(spec, "/api/v1/memory", "get", "source")["schema"]
    assert {"explicit", "conversation"} <= set(source["enum"])


def test_errors_are_documented_with_the_detail_shape(spec: dict[str, Any]) -> None:
    for path, methods in ROUTES.items():
        for method in methods:
            responses = spec["paths"][path][method]["responses"]
            assert {"401", "422"} <= set(responses), (path, method, set(responses))
            assert "400" not in responses, (path, method)  # parameter errors are 422 here
            error = response_schema(spec, path, method, "422")
            assert error["required"] == ["detail"]
            item = resolve(spec, error["properties"]["detail"]["items"])
            assert set(item["properties"]) == {"loc", "msg", "type"} and set(item["required"]) == {"loc", "msg", "type"}
    for path, method in (("/api/v1/memory/{memory_id}", "get"), ("/api/v1/memory/{memory_id}", "delete"),
                         ("/api/v1/memory/{memory_id}", "patch"), ("/api/v1/memory/{memory_id}/history", "get")):
        assert "404" in spec["paths"][path][method]["responses"]
    assert "403" in spec["paths"]["/api/v1/memory"]["post"]["responses"]
    for path in ("/api/v1/memory", "/api/v1/memory/import", "/api/v1/memory/search"):
        assert "413" in spec["paths"][path]["post"]["responses"]


def test_memory_and_page_shapes(spec: dict[str, Any]) -> None:
    memory = response_schema(spec, "/api/v1/memory/{memory_id}", "get", "200")
    assert SEED_FIELDS | {"entities", "state", "supersededBy", "namespace", "updatedAt"} == set(memory["properties"])
    assert SEED_FIELDS <= set(memory["required"])
    assert memory["properties"]["createdAt"]["format"] == "date-time"
    assert memory["properties"]["id"]["format"] == "uuid"
    page = response_schema(spec, "/api/v1/memory", "get", "200")
    assert set(page["properties"]) == {"memories", "total"} and set(page["required"]) == {"memories", "total"}
    assert resolve(spec, page["properties"]["memories"]["items"]) == memory
    created = response_schema(spec, "/api/v1/memory", "post", "200")
    assert created == memory
    no_content = spec["paths"]["/api/v1/memory/{memory_id}"]["delete"]["responses"]["204"]
    assert "content" not in no_content
    backfill = response_schema(spec, "/api/v1/memory/backfill-entities", "post", "200")
    assert set(backfill["properties"]) == {"examined", "failed", "hasMore", "limit", "nextOffset", "offset",
                                           "processed", "skipped"}
    history = response_schema(spec, "/api/v1/memory/{memory_id}/history", "get", "200")
    assert {"versions", "supersededBy", "supersedes"} <= set(history["properties"])
    export = spec["paths"]["/api/v1/memory/export"]["get"]["responses"]["200"]["content"]
    assert "application/x-ndjson" in export
    forget = response_schema(spec, "/api/v1/memory", "delete", "200")
    assert {"memories", "turns", "commits", "versions"} <= set(forget["properties"])


def test_request_bodies(spec: dict[str, Any]) -> None:
    def body(path: str, method: str, media: str = "application/json") -> dict[str, Any]:
        request = spec["paths"][path][method]["requestBody"]
        assert request["required"] is True
        return request["content"][media]["schema"]

    create = body("/api/v1/memory", "post")
    assert create["required"] == ["content"]
    assert (create["properties"]["content"]["minLength"], create["properties"]["content"]["maxLength"]) == (1, 32000)
    assert "organizationId" in create["properties"]
    search = body("/api/v1/memory/search", "post")
    assert search["required"] == ["query"]
    assert (search["properties"]["limit"]["minimum"], search["properties"]["limit"]["maximum"]) == (1, 100)
    assert search["properties"]["limit"]["default"] == 10
    patch = body("/api/v1/memory/{memory_id}", "patch")
    assert set(patch["properties"]) == {"content", "entities"}
    assert patch["anyOf"] == [{"required": ["content"]}, {"required": ["entities"]}]
    records = body("/api/v1/memory/import", "post")
    assert records["type"] == "array"
    record = records["items"]
    assert record["required"] == ["content"]
    assert {"content", "createdAt", "id", "source", "sourceThreadId", "sourceTurnId", "entities", "state",
            "supersededBy"} == set(record["properties"])
    assert "application/x-ndjson" in spec["paths"]["/api/v1/memory/import"]["post"]["requestBody"]["content"]
    for path, method in (("/api/v1/memory", "get"), ("/api/v1/memory/export", "get"),
                         ("/api/v1/memory/backfill-entities", "post")):
        assert "requestBody" not in spec["paths"][path][method]


@pytest.mark.timeout(600)
def test_schemathesis_finds_no_failure() -> None:
    """Schemathesis (all phases, every check but the two `Allow`-header ones, fixed seed) against a fresh
    server's own /schema/openapi.json: no 5xx, every response as documented, valid input accepted,
    invalid input rejected. See scripts/schemathesis_run.sh."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMCHAT_", "OPENAI_"))}
    env["PYTHON"] = sys.executable
    env["SCHEMATHESIS"] = str(Path(sys.executable).with_name("schemathesis"))
    run = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "schemathesis_run.sh")], check=False, cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=580)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert "passed" in run.stdout and " 0 passed" not in run.stdout
