"""Memory REST API as documented: shapes, bounds, defaults, the 422 body, auth forms, tenancy."""

from __future__ import annotations

import re
import uuid

import httpx2
import pytest

from app.testkit import MemchatServer
from tests.conftest import KEY_ORG1, KEY_ORG2

H1 = {"Authorization": f"Bearer {KEY_ORG1}"}
H2 = {"Authorization": f"Bearer {KEY_ORG2}"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
SEED_FIELDS = {"content", "createdAt", "id", "organizationId", "source", "sourceThreadId", "sourceTurnId"}


def url(server: MemchatServer, path: str = "") -> str:
    return f"{server.url}/api/v1/memory{path}"


def create(server: MemchatServer, content: str, namespace: str, headers: dict = H1) -> dict:
    resp = httpx2.post(url(server), params={"namespace": namespace}, headers=headers, json={"content": content})
    assert resp.status_code == 200, resp.text
    return resp.json()


def assert_422(resp: httpx2.Response, loc_prefix: list) -> None:
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, list) and detail
    for item in detail:
        assert set(item) == {"loc", "msg", "type"} and isinstance(item["loc"], list)
    assert detail[0]["loc"][: len(loc_prefix)] == loc_prefix


def test_create_get_delete_shapes(server: MemchatServer, namespace: str) -> None:
    memory = create(server, "I like green tea", namespace)
    assert SEED_FIELDS <= set(memory)
    assert memory["source"] == "explicit" and memory["organizationId"] == "org1"
    assert memory["sourceThreadId"] is None and memory["sourceTurnId"] is None
    assert RFC3339.match(memory["createdAt"]) and uuid.UUID(memory["id"])
    got = httpx2.get(url(server, f"/{memory['id']}"), params={"namespace": namespace}, headers=H1)
    assert got.status_code == 200 and got.json()["content"] == "I like green tea"
    gone = httpx2.delete(url(server, f"/{memory['id']}"), params={"namespace": namespace}, headers=H1)
    assert gone.status_code == 204 and gone.content == b""
    again = httpx2.get(url(server, f"/{memory['id']}"), params={"namespace": namespace}, headers=H1)
    assert again.status_code == 404 and again.json()["detail"][0]["msg"]
    assert httpx2.delete(url(server, f"/{memory['id']}"), params={"namespace": namespace},
                         headers=H1).status_code == 404


def test_list_newest_first_paging_and_total(server: MemchatServer, namespace: str) -> None:
    ids = [create(server, f"fact number {i}", namespace)["id"] for i in range(7)]
    resp = httpx2.get(url(server), params={"namespace": namespace}, headers=H1)
    body = resp.json()
    assert body["total"] == 7 and [m["id"] for m in body["memories"]] == ids[::-1]
    page1 = httpx2.get(url(server), params={"namespace": namespace, "limit": 3}, headers=H1).json()
    page2 = httpx2.get(url(server), params={"namespace": namespace, "limit": 3, "offset": 3}, headers=H1).json()
    page3 = httpx2.get(url(server), params={"namespace": namespace, "limit": 3, "offset": 6}, headers=H1).json()
    seen = [m["id"] for m in page1["memories"] + page2["memories"] + page3["memories"]]
    assert seen == ids[::-1] and page3["total"] == 7
    beyond = httpx2.get(url(server), params={"namespace": namespace, "offset": 100}, headers=H1).json()
    assert beyond == {"memories": [], "total": 7}


@pytest.mark.parametrize("params,loc", [
    ({"limit": 0}, ["query", "limit"]), ({"limit": 101}, ["query", "limit"]), ({"limit": -1}, ["query", "limit"]),
    ({"limit": "abc"}, ["query", "limit"]), ({"offset": -1}, ["query", "offset"]),
    ({"offset": "x"}, ["query", "offset"]),
])
def test_list_bounds(server: MemchatServer, params: dict, loc: list) -> None:
    assert_422(httpx2.get(url(server), params=params, headers=H1), loc)


@pytest.mark.parametrize("body,loc", [
    (b"", ["body"]), (b"{bad", ["body"]), (b"{}", ["body"]), (b'{"content": 5}', ["body", "content"]),
    (b'{"content": ""}', ["body", "content"]), (b'{"content": "   "}', ["body", "content"]),
    (b'{"content": "x", "organizationId": 7}', ["body", "organizationId"]), (b"[1]", ["body"]),
])
def test_create_validation(server: MemchatServer, body: bytes, loc: list) -> None:
    resp = httpx2.post(url(server), content=body, headers={**H1, "Content-Type": "application/json"})
    assert_422(resp, loc)


def test_huge_content_is_rejected_not_500(server: MemchatServer) -> None:
    resp = httpx2.post(url(server), headers=H1, json={"content": "x" * 1_000_000})
    assert resp.status_code in (413, 422), resp.text
    assert "detail" in resp.json()
    resp = httpx2.post(url(server), headers=H1, json={"content": "x" * 5_000_000})
    assert resp.status_code == 413 and "detail" in resp.json()


def test_organization_id_must_be_callers(server: MemchatServer, namespace: str) -> None:
    ok = httpx2.post(url(server), params={"namespace": namespace}, headers=H1,
                     json={"content": "mine", "organizationId": "org1"})
    assert ok.status_code == 200
    other = httpx2.post(url(server), params={"namespace": namespace}, headers=H1,
                        json={"content": "theirs", "organizationId": "org2"})
    assert other.status_code == 403 and other.json()["detail"][0]["msg"]


def test_bad_uuid_is_422(server: MemchatServer) -> None:
    for method in ("GET", "DELETE"):
        resp = httpx2.request(method, url(server, "/not-a-uuid"), headers=H1)
        assert_422(resp, ["path", "memory_id"])


def test_other_org_and_namespace_see_404(server: MemchatServer, namespace: str) -> None:
    memory = create(server, "secret of org1", namespace)
    for headers, ns in ((H2, namespace), (H1, namespace + "-b"), (H1, "")):
        resp = httpx2.get(url(server, f"/{memory['id']}"), params={"namespace": ns}, headers=headers)
        assert resp.status_code == 404
        assert httpx2.delete(url(server, f"/{memory['id']}"), params={"namespace": ns},
                             headers=headers).status_code == 404
        listed = httpx2.get(url(server), params={"namespace": ns}, headers=headers).json()["memories"]
        assert memory["id"] not in [m["id"] for m in listed]
    assert httpx2.get(url(server, f"/{memory['id']}"), params={"namespace": namespace}, headers=H1).status_code == 200


@pytest.mark.parametrize("headers,cookies", [
    ({"Authorization": f"Bearer {KEY_ORG1}"}, {}), ({"Authorization": KEY_ORG1}, {}),
    ({"X-API-Key": KEY_ORG1}, {}), ({}, {"vai_token": KEY_ORG1}),
])
def test_every_auth_form(server: MemchatServer, headers: dict, cookies: dict) -> None:
    resp = httpx2.get(url(server), headers=headers, cookies=cookies)
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}])
def test_no_or_wrong_key_is_401(server: MemchatServer, headers: dict) -> None:
    for method, path in (("GET", ""), ("POST", ""), ("GET", f"/{uuid.uuid4()}"), ("DELETE", f"/{uuid.uuid4()}")):
        resp = httpx2.request(method, url(server, path), headers=headers, json={"content": "x"})
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.json()["detail"][0]["msg"]
