"""Memory REST API beyond the documented routes' basics: namespace isolation on every route, PATCH + history,
list filters and stable paging, backfill-entities (counters, pages, idempotence), export/import, forget,
bounds and auth on every route, and the memchat CLI's memory commands against a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx2
import lancedb
import pytest

from app.storage import filters as F
from app.testkit import REPO_ROOT, FakeUpstream, MemchatServer
from tests.conftest import KEY_ORG1, KEY_ORG2
from tests.e2e.test_commits import chat, wait_for_memories

H1 = {"Authorization": f"Bearer {KEY_ORG1}"}
H2 = {"Authorization": f"Bearer {KEY_ORG2}"}
ENTITY_MARKER = "memchat-entities"


def url(server: MemchatServer, path: str = "") -> str:
    return f"{server.url}/api/v1/memory{path}"


def create(server: MemchatServer, content: str, namespace: str) -> dict:
    resp = httpx2.post(url(server), params={"namespace": namespace}, headers=H1, json={"content": content})
    assert resp.status_code == 200, resp.text
    return resp.json()


def listed(server: MemchatServer, namespace: str, **params: object) -> dict:
    resp = httpx2.get(url(server), params={"namespace": namespace, "limit": 100, **params}, headers=H1)
    assert resp.status_code == 200, resp.text
    return resp.json()


def export(server: MemchatServer, namespace: str, headers: dict = H1) -> bytes:
    resp = httpx2.get(url(server, "/export"), params={"namespace": namespace}, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    return resp.content


def do_import(server: MemchatServer, namespace: str, body: bytes, content_type: str = "application/x-ndjson",
              headers: dict = H1) -> httpx2.Response:
    return httpx2.post(url(server, "/import"), params={"namespace": namespace}, content=body,
                       headers={**headers, "Content-Type": content_type}, timeout=60)


def assert_422(resp: httpx2.Response, loc: list) -> None:
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail and all(set(d) == {"loc", "msg", "type"} for d in detail)
    assert detail[0]["loc"][: len(loc)] == loc, detail


def record(content: str, minute: int, **extra: object) -> dict:
    return {"content": content, "id": str(uuid.uuid4()), "createdAt": f"2024-05-01T10:{minute:02d}:00.000001Z",
            "source": "explicit", "sourceThreadId": None, "sourceTurnId": None, "entities": [], "state": "current",
            "supersededBy": None, **extra}


def jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def entity_requests(fake: FakeUpstream) -> list[dict]:
    return [r for r in fake.requests("/chat/completions") if ENTITY_MARKER in json.dumps(r["body"]["messages"][:1])]


# ---------------------------------------------------------------- PATCH and history


def test_patch_keeps_versions_and_history(server: MemchatServer, namespace: str) -> None:
    memory = create(server, "I drive a red Fiat Panda", namespace)
    mid, params = memory["id"], {"namespace": namespace}
    resp = httpx2.patch(url(server, f"/{mid}"), params=params, headers=H1,
                        json={"content": "I drive a blue Tesla Model 3"})
    assert resp.status_code == 200, resp.text
    patched = resp.json()
    assert patched["content"] == "I drive a blue Tesla Model 3" and patched["id"] == mid
    assert patched["createdAt"] == memory["createdAt"]
    resp = httpx2.patch(url(server, f"/{mid}"), params=params, headers=H1,
                        json={"entities": ["Tesla Model 3", "tesla model 3", "Tesla"]})
    assert resp.json()["entities"] == ["Tesla Model 3", "Tesla"]
    same = httpx2.patch(url(server, f"/{mid}"), params=params, headers=H1, json={"entities": ["Tesla Model 3", "Tesla"]})
    assert same.status_code == 200 and same.json()["updatedAt"] == resp.json()["updatedAt"]
    # re-embedded: the search finds the new content, the old one is gone from the memory
    hits = httpx2.post(url(server, "/search"), headers=H1,
                       json={"query": "which car do I drive", "namespace": namespace}).json()["results"]
    assert [h["content"] for h in hits] == ["I drive a blue Tesla Model 3"]
    history = httpx2.get(url(server, f"/{mid}/history"), params=params, headers=H1)
    assert history.status_code == 200, history.text
    body = history.json()
    assert body["id"] == mid and body["supersededBy"] is None and body["supersedes"] == []
    versions = body["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]  # the no-op PATCH made no version
    assert [v["content"] for v in versions] == ["I drive a red Fiat Panda", "I drive a blue Tesla Model 3",
                                                "I drive a blue Tesla Model 3"]
    assert [v["entities"] for v in versions] == [[], [], ["Tesla Model 3", "Tesla"]]
    assert [v["current"] for v in versions] == [False, False, True]
    assert versions[0]["updatedAt"] == memory["createdAt"] and versions[-1]["replacedAt"] is None
    assert versions[0]["replacedAt"] is not None
    # the history is private to the tenant
    for headers, ns in ((H2, namespace), (H1, namespace + "-other")):
        assert httpx2.get(url(server, f"/{mid}/history"), params={"namespace": ns}, headers=headers).status_code == 404
        assert httpx2.patch(url(server, f"/{mid}"), params={"namespace": ns}, headers=headers,
                            json={"content": "hijacked"}).status_code == 404
    assert httpx2.get(url(server, f"/{mid}"), params=params, headers=H1).json()["content"] != "hijacked"
    # deleting the memory deletes its history
    assert httpx2.delete(url(server, f"/{mid}"), params=params, headers=H1).status_code == 204
    assert httpx2.get(url(server, f"/{mid}/history"), params=params, headers=H1).status_code == 404


@pytest.mark.parametrize("body,loc", [
    (b"", ["body"]), (b"{bad", ["body"]), (b"{}", ["body"]), (b'{"content": null, "entities": null}', ["body"]),
    (b'{"content": ""}', ["body", "content"]), (b'{"content": "  "}', ["body", "content"]),
    (b'{"content": 5}', ["body", "content"]), (b'{"entities": "x"}', ["body", "entities"]),
    (b'{"entities": [""]}', ["body", "entities", 0]), (b'{"entities": [1]}', ["body", "entities", 0]),
    (b"[1]", ["body"]),
])
def test_patch_validation(server: MemchatServer, namespace: str, body: bytes, loc: list) -> None:
    mid = create(server, "patch me", namespace)["id"]
    resp = httpx2.patch(url(server, f"/{mid}"), params={"namespace": namespace}, content=body,
                        headers={**H1, "Content-Type": "application/json"})
    assert_422(resp, loc)


def test_patch_huge_content_and_unknown_or_bad_ids(server: MemchatServer, namespace: str) -> None:
    mid = create(server, "patch me", namespace)["id"]
    resp = httpx2.patch(url(server, f"/{mid}"), params={"namespace": namespace}, headers=H1,
                        json={"content": "x" * 1_000_000})
    assert resp.status_code in (413, 422) and "detail" in resp.json()
    resp = httpx2.patch(url(server, f"/{mid}"), params={"namespace": namespace}, headers=H1,
                        json={"content": "x" * 5_000_000})
    assert resp.status_code == 413 and "detail" in resp.json()
    assert httpx2.patch(url(server, f"/{uuid.uuid4()}"), params={"namespace": namespace}, headers=H1,
                        json={"content": "new"}).status_code == 404
    assert httpx2.get(url(server, f"/{uuid.uuid4()}/history"), headers=H1).status_code == 404
    assert_422(httpx2.patch(url(server, "/nope"), headers=H1, json={"content": "x"}), ["path", "memory_id"])
    assert_422(httpx2.get(url(server, "/nope/history"), headers=H1), ["path", "memory_id"])


# ---------------------------------------------------------------- list filters and paging


def test_list_filters_source_entity_superseded(server: MemchatServer, namespace: str) -> None:
    old = record("I live in Paris", 1, entities=["Paris"], source="conversation", sourceThreadId="t1",
                 sourceTurnId="u1")
    new = record("I live in Lyon", 2, entities=["Lyon"], source="conversation", sourceThreadId="t2",
                 sourceTurnId="u2")
    old.update(state="superseded", supersededBy=new["id"])
    resp = do_import(server, namespace, jsonl([old, new]))
    assert resp.status_code == 200, resp.text
    explicit = create(server, "I like Lyon's food", namespace)
    ids = lambda body: [m["id"] for m in body["memories"]]  # noqa: E731
    assert ids(listed(server, namespace)) == [explicit["id"], new["id"]]
    assert listed(server, namespace)["total"] == 2
    everything = listed(server, namespace, include_superseded="true")
    assert ids(everything) == [explicit["id"], new["id"], old["id"]] and everything["total"] == 3
    assert ids(listed(server, namespace, source="conversation")) == [new["id"]]
    assert ids(listed(server, namespace, source="explicit")) == [explicit["id"]]
    assert ids(listed(server, namespace, entity="Lyon")) == [new["id"]]
    assert ids(listed(server, namespace, entity="lyon")) == []  # exact match
    assert ids(listed(server, namespace, entity="Paris")) == []
    assert ids(listed(server, namespace, entity="Paris", include_superseded="true")) == [old["id"]]
    # history shows the supersession links both ways
    h_old = httpx2.get(url(server, f"/{old['id']}/history"), params={"namespace": namespace}, headers=H1).json()
    h_new = httpx2.get(url(server, f"/{new['id']}/history"), params={"namespace": namespace}, headers=H1).json()
    assert h_old["state"] == "superseded" and h_old["supersededBy"] == new["id"]
    assert h_new["supersedes"] == [old["id"]] and h_new["supersededBy"] is None
    for params, loc in (({"source": "robot"}, ["query", "source"]), ({"include_superseded": "maybe"},
                        ["query", "include_superseded"]), ({"entity": ""}, ["query", "entity"]),
                        ({"before": "nope"}, ["query", "before"])):
        assert_422(httpx2.get(url(server), params={"namespace": namespace, **params}, headers=H1), loc)
    unknown = httpx2.get(url(server), params={"namespace": namespace, "before": str(uuid.uuid4())}, headers=H1)
    assert unknown.status_code == 404 and unknown.json()["detail"][0]["msg"]


def test_paging_is_stable_while_inserting(server: MemchatServer, namespace: str) -> None:
    originals = [create(server, f"original {i}", namespace)["id"] for i in range(9)]
    newest_first = originals[::-1]
    # offset paging: inserts push memories to later pages, so some repeat -- but none is ever skipped
    seen: list[str] = []
    offset = 0
    for n in range(4):
        page = listed(server, namespace, limit=3, offset=offset)["memories"]
        seen += [m["id"] for m in page]
        create(server, f"inserted while paging {n}", namespace)
        offset += 3
    assert list(dict.fromkeys(i for i in seen if i in originals)) == newest_first
    # keyset paging ("before" = the last id of the previous page): exactly the originals, in order
    seen, before = [], None
    start = listed(server, namespace)["memories"]
    anchor = start[[m["id"] for m in start].index(newest_first[0]) - 1]["id"]  # newest memory before the originals
    before = anchor
    while True:
        params = {"limit": 2, "before": before}
        page = listed(server, namespace, **params)["memories"]
        if not page:
            break
        seen += [m["id"] for m in page]
        create(server, "inserted during keyset paging", namespace)
        before = page[-1]["id"]
    assert seen == newest_first


# ---------------------------------------------------------------- backfill-entities


def test_backfill_counters_over_pages_and_rerun(server: MemchatServer, clean_fake: FakeUpstream,
                                                namespace: str) -> None:
    reply = json.dumps({"memories": [{"n": 1, "people": ["Zork"]}, {"n": 2, "places": ["Quuxville"]}]})
    clean_fake.add_rule(match=ENTITY_MARKER, reply=reply)
    for i in range(5):
        create(server, f"plain fact number {i}", namespace)
    tagged = record("already tagged", 0, entities=["Tag"])
    assert do_import(server, namespace, jsonl([tagged])).status_code == 200  # the oldest memory
    pages, offset = [], 0
    while True:
        resp = httpx2.post(url(server, "/backfill-entities"), headers=H1,
                           params={"namespace": namespace, "limit": 2, "offset": offset, "chunk_size": 2})
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) == {"examined", "failed", "hasMore", "limit", "nextOffset", "offset", "processed", "skipped"}
        pages.append(page)
        if not page["hasMore"]:
            break
        offset = page["nextOffset"]
    assert [(p["offset"], p["nextOffset"], p["examined"], p["processed"], p["skipped"], p["failed"], p["hasMore"])
            for p in pages] == [(0, 2, 2, 2, 0, 0, True), (2, 4, 2, 2, 0, 0, True), (4, 6, 2, 1, 1, 0, False)]
    assert len(entity_requests(clean_fake)) == 3  # one model call per chunk
    # each chunk's first memory got Zork, the second Quuxville
    zork = listed(server, namespace, entity="Zork")["memories"]
    quux = listed(server, namespace, entity="Quuxville")["memories"]
    assert [m["content"] for m in zork] == ["plain fact number 4", "plain fact number 2", "plain fact number 0"]
    assert [m["content"] for m in quux] == ["plain fact number 3", "plain fact number 1"]
    assert listed(server, namespace, entity="Tag")["memories"][0]["id"] == tagged["id"]
    # running again processes nothing and asks the model nothing
    again = httpx2.post(url(server, "/backfill-entities"), headers=H1,
                        params={"namespace": namespace, "limit": 50}).json()
    assert again == {"examined": 6, "failed": 0, "hasMore": False, "limit": 50, "nextOffset": 6, "offset": 0,
                     "processed": 0, "skipped": 6}
    assert len(entity_requests(clean_fake)) == 3


def test_backfill_malformed_model_output_falls_back_and_empty_results_count_as_done(
        server: MemchatServer, clean_fake: FakeUpstream, namespace: str) -> None:
    clean_fake.add_rule(match=ENTITY_MARKER, reply="I'm sorry, I can't produce JSON today.")
    create(server, "I met Alice Smith in Copenhagen.", namespace)
    create(server, "i like green tea", namespace)  # nothing to find
    first = httpx2.post(url(server, "/backfill-entities"), headers=H1, params={"namespace": namespace}).json()
    assert (first["examined"], first["processed"], first["skipped"], first["failed"]) == (2, 2, 0, 0)
    assert first["limit"] == 20 and first["offset"] == 0 and first["hasMore"] is False
    memories = {m["content"]: m for m in listed(server, namespace)["memories"]}
    assert memories["I met Alice Smith in Copenhagen."]["entities"] == ["Alice Smith", "Copenhagen"]
    assert memories["i like green tea"]["entities"] == []
    second = httpx2.post(url(server, "/backfill-entities"), headers=H1, params={"namespace": namespace}).json()
    assert (second["processed"], second["skipped"]) == (0, 2)
    assert len(entity_requests(clean_fake)) == 1


@pytest.mark.parametrize("params,loc", [
    ({"limit": 0}, ["query", "limit"]), ({"limit": 51}, ["query", "limit"]), ({"limit": -1}, ["query", "limit"]),
    ({"limit": "abc"}, ["query", "limit"]), ({"offset": -1}, ["query", "offset"]),
    ({"offset": "x"}, ["query", "offset"]), ({"chunk_size": 0}, ["query", "chunk_size"]),
    ({"chunk_size": 11}, ["query", "chunk_size"]), ({"chunk_size": "many"}, ["query", "chunk_size"]),
    ({"namespace": "a\nb"}, ["query", "namespace"]), ({"namespace": "x" * 257}, ["query", "namespace"]),
])
def test_backfill_bounds(server: MemchatServer, params: dict, loc: list) -> None:
    assert_422(httpx2.post(url(server, "/backfill-entities"), params=params, headers=H1), loc)


# ---------------------------------------------------------------- export / import


def test_export_import_round_trip_into_empty_namespace(server: MemchatServer, namespace: str) -> None:
    old = record("I work at Initech", 1, entities=["Initech"], source="conversation", sourceThreadId="c1",
                 sourceTurnId="t1")
    new = record("I work at Globex", 2, entities=["Globex"], source="conversation", sourceThreadId="c2",
                 sourceTurnId="t2")
    old.update(state="superseded", supersededBy=new["id"])
    assert do_import(server, namespace, jsonl([old, new])).status_code == 200
    explicit = create(server, "My sister is called Maud", namespace)
    httpx2.patch(url(server, f"/{explicit['id']}"), params={"namespace": namespace}, headers=H1,
                 json={"entities": ["Maud"]})
    source = export(server, namespace)
    lines = [json.loads(line) for line in source.splitlines()]
    assert [line["content"] for line in lines] == ["I work at Initech", "I work at Globex", "My sister is called Maud"]
    assert lines[0] == old and lines[1] == new
    assert lines[2]["entities"] == ["Maud"] and lines[2]["id"] == explicit["id"]
    target = namespace + "-copy"
    assert export(server, target) == b""
    resp = do_import(server, target, source)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"received": 3, "written": 3, "batches": 1, "supersededLinks": 1, "unresolvedLinks": 0,
                           "total": 3}
    assert export(server, target) == source
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("namespace", "updatedAt")} for m in ms]  # noqa: E731
    assert strip(listed(server, target, include_superseded="true")["memories"]) == strip(
        listed(server, namespace, include_superseded="true")["memories"])
    hits = httpx2.post(url(server, "/search"), headers=H1, json={"query": "where do I work", "namespace": target})
    assert [h["content"] for h in hits.json()["results"]][0] == "I work at Globex"
    # idempotent: importing again (also as a JSON array) changes nothing
    again = do_import(server, target, json.dumps(lines).encode(), content_type="application/json")
    assert again.status_code == 200 and again.json()["total"] == 3 and again.json()["supersededLinks"] == 1
    assert export(server, target) == source
    # other organisations export nothing of it, and import into their own tenant
    assert export(server, target, headers=H2) == b""


def test_import_validation_and_limits(server: MemchatServer, namespace: str) -> None:
    good = record("fine", 1)
    cases = [
        (jsonl([good, {"content": ""}]), ["body", 1, "content"]),
        (jsonl([good]) + b"{broken\n", ["body", 1]),
        (jsonl([{"content": "x", "id": "not-a-uuid"}]), ["body", 0, "id"]),
        (jsonl([{"content": "x", "createdAt": "yesterday"}]), ["body", 0, "createdAt"]),
        (jsonl([{"content": "x", "source": "dream"}]), ["body", 0, "source"]),
        (jsonl([{"content": "x" * 40_000}]), ["body", 0, "content"]),
        (b'[{"content": "a"}, 7]', ["body", 1]),
    ]
    for body, loc in cases:
        assert_422(do_import(server, namespace, body), loc)
    assert listed(server, namespace)["total"] == 0  # nothing written by a rejected import
    assert_422(do_import(server, namespace, b""), ["body"])
    empty = do_import(server, namespace, b"[]", content_type="application/json")
    assert empty.status_code == 200 and empty.json()["received"] == 0
    big = do_import(server, namespace, b" " * (65 * 1024 * 1024))
    assert big.status_code == 413 and "detail" in big.json()


# ---------------------------------------------------------------- forget a user


def tenant_rows(server: MemchatServer, table: str, org: str, namespace: str) -> int:
    db = lancedb.connect(str(server.data_dir / "lancedb"))
    return db.open_table(table).count_rows(F.tenant_filter(org, namespace))


def test_forget_namespace_deletes_memories_and_conversations(server: MemchatServer, clean_fake: FakeUpstream,
                                                              namespace: str) -> None:
    chat(server, [{"role": "user", "content": "My cat is called Mittens."}], namespace, commit_after=0)
    wait_for_memories(server, namespace)
    mid = create(server, "I was born in Oslo", namespace)["id"]
    httpx2.patch(url(server, f"/{mid}"), params={"namespace": namespace}, headers=H1, json={"content": "Bergen"})
    other = create(server, "keep me", namespace + "-other")
    deadline = time.monotonic() + 20
    # turns reach the table from the server's journal within MEMCHAT_TURNLOG_FLUSH_INTERVAL (1 s)
    while (tenant_rows(server, "commits", "org1", namespace) == 0
           or tenant_rows(server, "turns", "org1", namespace) == 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tenant_rows(server, "turns", "org1", namespace) >= 1
    assert tenant_rows(server, "commits", "org1", namespace) >= 1
    assert_422(httpx2.delete(url(server), params={"namespace": namespace}, headers=H1), ["query", "confirm"])
    assert_422(httpx2.delete(url(server), params={"namespace": namespace, "confirm": "false"}, headers=H1),
               ["query", "confirm"])
    assert listed(server, namespace)["total"] >= 2  # nothing deleted without confirm
    # another organisation's forget of the same namespace name touches nothing of org1
    assert httpx2.delete(url(server), params={"namespace": namespace, "confirm": "true"}, headers=H2).json()[
        "memories"] == 0
    resp = httpx2.delete(url(server), params={"namespace": namespace, "confirm": "true"}, headers=H1)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["namespace"] == namespace and body["memories"] >= 2 and body["versions"] == 1
    assert body["turns"] >= 1 and body["commits"] >= 1
    assert listed(server, namespace, include_superseded="true") == {"memories": [], "total": 0}
    assert export(server, namespace) == b""
    assert tenant_rows(server, "turns", "org1", namespace) == 0
    assert tenant_rows(server, "commits", "org1", namespace) == 0
    assert tenant_rows(server, "memory_versions", "org1", namespace) == 0
    assert httpx2.get(url(server, f"/{other['id']}"), params={"namespace": namespace + "-other"},
                      headers=H1).status_code == 200


def test_forget_runs_again_after_one_journal_flush(server: MemchatServer, clean_fake: FakeUpstream,
                                                  namespace: str) -> None:
    """A turn another worker journaled just before the forget reaches the table with that worker's next
    flush, after the forget's delete: the second pass, one flush interval later, removes it."""
    from datetime import UTC, datetime

    from app.turns.turnlog import TurnRecord, to_arrow

    create(server, "I was born in Oslo", namespace)
    resp = httpx2.delete(url(server), params={"namespace": namespace, "confirm": "true"}, headers=H1)
    assert resp.status_code == 200, resp.text
    late = TurnRecord(turn_id=str(uuid.uuid4()), chat_id="other-worker", org_id="org1", namespace=namespace, seq=1,
                      user="my PIN is 1234", assistant="noted", status="complete", model="fake-gpt", surface="openai",
                      commit_after=3600, prefix_hash="p", transcript_hash="t", created_at=datetime.now(UTC))
    lancedb.connect(str(server.data_dir / "lancedb")).open_table("turns").add(to_arrow([late]))
    assert tenant_rows(server, "turns", "org1", namespace) == 1
    deadline = time.monotonic() + 15
    while tenant_rows(server, "turns", "org1", namespace) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tenant_rows(server, "turns", "org1", namespace) == 0


# ---------------------------------------------------------------- auth and namespaces on every route


def every_route(mid: str) -> list[tuple[str, str, dict]]:
    return [
        ("GET", "", {}), ("POST", "", {"json": {"content": "x"}}), ("GET", f"/{mid}", {}),
        ("DELETE", f"/{uuid.uuid4()}", {}), ("PATCH", f"/{mid}", {"json": {"entities": ["E"]}}),
        ("GET", f"/{mid}/history", {}), ("POST", "/search", {"json": {"query": "x"}}),
        ("POST", "/backfill-entities", {}), ("GET", "/export", {}), ("POST", "/import", {"content": b"[]"}),
        ("DELETE", "", {"params": {"confirm": "true"}}),
    ]


@pytest.mark.parametrize("headers,cookies", [
    ({"Authorization": f"Bearer {KEY_ORG1}"}, {}), ({"Authorization": KEY_ORG1}, {}),
    ({"X-API-Key": KEY_ORG1}, {}), ({}, {"vai_token": KEY_ORG1}),
])
def test_every_route_accepts_every_auth_form(server: MemchatServer, namespace: str, headers: dict,
                                             cookies: dict) -> None:
    mid = create(server, "auth check", namespace)["id"]
    for method, path, kw in every_route(mid):
        params = {"namespace": namespace, **kw.pop("params", {})}
        client = httpx2.Client(cookies=cookies)
        resp = client.request(method, url(server, path), params=params, headers=headers, **kw)
        expected = 404 if method == "DELETE" and path else 200  # the DELETE of a random id: 404
        assert resp.status_code == expected, (method, path, resp.text)
        client.close()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"},
                                     {"Authorization": "nope"}])
def test_every_route_refuses_missing_or_wrong_key(server: MemchatServer, namespace: str, headers: dict) -> None:
    mid = create(server, "still here", namespace)["id"]
    for method, path, kw in every_route(mid):
        resp = httpx2.request(method, url(server, path), params={"namespace": namespace, **kw.pop("params", {})},
                              headers=headers, **kw)
        assert resp.status_code == 401, (method, path, resp.text)
        assert resp.json()["detail"][0]["msg"]
    assert httpx2.get(url(server, f"/{mid}"), params={"namespace": namespace}, headers=H1).status_code == 200


def test_every_route_validates_namespace(server: MemchatServer) -> None:
    mid = str(uuid.uuid4())
    for method, path, kw in every_route(mid):
        for bad in ("a\x00b", "x" * 257):
            resp = httpx2.request(method, url(server, path), params={"namespace": bad, **kw.pop("params", {})},
                                  headers=H1, **kw)
            assert_422(resp, ["query", "namespace"])


# ---------------------------------------------------------------- CLI


def memchat(*args: str, input_: bytes | None = None, key: str = KEY_ORG1) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMCHAT_API_KEY": key}
    return subprocess.run([sys.executable, "-m", "app", *args], check=False, cwd=REPO_ROOT, env=env, input=input_,
                          capture_output=True, timeout=120)


def test_cli_export_import_backfill(server: MemchatServer, clean_fake: FakeUpstream, namespace: str,
                                   tmp_path: Path) -> None:
    clean_fake.add_rule(match=ENTITY_MARKER, reply=json.dumps({"memories": [{"n": 1, "people": ["Cli"]}]}))
    for i in range(7):
        create(server, f"cli fact {i}", namespace)
    run = memchat("backfill-entities", "--url", server.url, "--namespace", namespace, "--limit", "3",
                  "--chunk-size", "1")
    assert run.returncode == 0, run.stderr.decode()
    # the progress bar stays quiet when stderr is not a terminal: only the summary
    assert run.stderr == b"examined=7 processed=7 skipped=0 failed=0\n"
    assert listed(server, namespace, entity="Cli")["total"] == 7
    out = tmp_path / "mem.jsonl"
    run = memchat("export", "--url", server.url, "--namespace", namespace, "-o", str(out))
    assert run.returncode == 0, run.stderr.decode()
    assert out.read_bytes() == export(server, namespace) and len(out.read_bytes().splitlines()) == 7
    stdout = memchat("export", "--url", server.url, "--namespace", namespace)
    assert stdout.returncode == 0 and stdout.stdout == out.read_bytes()
    target = namespace + "-cli"
    run = memchat("import", str(out), "--url", server.url, "--namespace", target, "--batch", "3")
    assert run.returncode == 0, run.stderr.decode()
    assert b"imported 7 records" in run.stderr
    assert export(server, target) == out.read_bytes()
    bad = memchat("export", "--url", server.url, key="wrong-key")
    assert bad.returncode == 2 and b"HTTP 401" in bad.stderr


def test_huge_offsets_and_integral_float_limits(server: MemchatServer, namespace: str) -> None:
    create(server, "one memory", namespace)
    big = 10**20  # past LanceDB's own integer range: an empty page, not a 500
    assert listed(server, namespace, offset=big) == {"memories": [], "total": 1}
    page = httpx2.post(url(server, "/backfill-entities"), params={"namespace": namespace, "offset": big},
                       headers=H1).json()
    assert (page["examined"], page["offset"], page["nextOffset"], page["hasMore"]) == (0, big, big, False)
    ok = httpx2.post(url(server, "/search"), headers=H1, json={"query": "memory", "limit": 1.0, "namespace": namespace})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1
    assert_422(httpx2.post(url(server, "/search"), headers=H1, json={"query": "m", "limit": 1.5}), ["body", "limit"])
    assert_422(httpx2.post(url(server, "/search"), headers=H1, json={"query": "m", "limit": "1"}), ["body", "limit"])
    assert_422(httpx2.post(url(server), headers=H1, json={"content": 5.0}), ["body", "content"])


def test_import_self_link_is_unresolved_not_an_error(server: MemchatServer, namespace: str) -> None:
    me = record("I name myself", 1)
    me["supersededBy"] = me["id"]
    resp = do_import(server, namespace, jsonl([me]))
    assert resp.status_code == 200, resp.text
    assert (resp.json()["unresolvedLinks"], resp.json()["total"]) == (1, 1)
    assert listed(server, namespace)["memories"][0]["state"] == "current"
