"""Public memories: the organisation's shared scope, filled through the memory REST API (``shared=true``)
or import, reaches every user of its organisation through personal chat (and the OpenAI surface with
``include_shared=true``), nobody in another organisation, and never receives a user's idle commits."""

from __future__ import annotations

import json
import time
import uuid

import httpx2
import openai
import pytest

from tests.conftest import KEY_ORG1, KEY_ORG1_B, KEY_ORG2
from tests.e2e.test_personal_chat import chat_requests, personal, post, seed_json, seed_stream  # noqa: F401
from app.testkit import FakeUpstream, MemchatServer

pytestmark = pytest.mark.usefixtures("clean_fake")


def memory_api(srv: MemchatServer, method: str, path: str = "", *, key: str = KEY_ORG1, **kw) -> httpx2.Response:
    return httpx2.request(method, f"{srv.url}/api/v1/memory{path}", headers={"Authorization": key}, timeout=60, **kw)


def add(srv: MemchatServer, content: str, key: str = KEY_ORG1, *, shared: bool = False, **params: str) -> dict:
    resp = memory_api(srv, "POST", "/shared" if shared else "", key=key, params=params, json={"content": content})
    assert resp.status_code == 200, resp.text
    return resp.json()


def contents(refs: list) -> dict[str, str]:
    """content -> scope of every memory in personal-chat refs."""
    return {item["content"]: item["scope"] for ref in refs for item in ref["refItems"]}


def personal_refs(srv: MemchatServer, uid: str, prompt: str, key: str = KEY_ORG1) -> list[dict[str, str]]:
    """What the seed's two clients are shown (stream refs frame, then the JSON envelope's refs)."""
    frames = seed_stream(srv, uid, prompt=prompt, key=key)
    envelope = seed_json(srv, uid, prompt=prompt, key=key)
    return [contents(frames[1]["refs"]), contents(envelope["data"]["refs"])]


def openai_refs(srv: MemchatServer, namespace: str, prompt: str, key: str = KEY_ORG1,
                **query: str) -> dict[str, str]:
    client = openai.OpenAI(base_url=srv.openai_base_url, api_key=key, max_retries=0, timeout=30)
    completion = client.chat.completions.create(model="fake-gpt", messages=[{"role": "user", "content": prompt}],
                                                extra_query={"namespace": namespace, **query})
    return {ref["content"]: ref["scope"] for ref in completion.model_extra["memory"]["refs"]}


def test_a_shared_memory_reaches_every_user_of_its_organisation_only(personal: MemchatServer,
                                                                     namespace: str) -> None:
    marker = uuid.uuid4().hex[:8]
    fact = f"The office wifi password is kumquat-{marker}."
    stored = add(personal, fact, shared=True)
    assert stored["source"] == "explicit"
    question = f"What is the office wifi password kumquat-{marker}?"
    for uid, key in [(namespace, KEY_ORG1), (namespace + "-b", KEY_ORG1), (namespace + "-c", KEY_ORG1_B)]:
        for seen in personal_refs(personal, uid, question, key=key):
            assert seen.get(fact) == "shared", (uid, key, seen)
        assert fact not in openai_refs(personal, uid, question, key=key)  # isolation by default, as before
        assert openai_refs(personal, uid, question, key=key, include_shared="true").get(fact) == "shared"
    for seen in personal_refs(personal, namespace, question, key=KEY_ORG2):
        assert fact not in seen
    assert fact not in openai_refs(personal, namespace, question, key=KEY_ORG2, include_shared="true")
    assert fact not in openai_refs(personal, "", question, key=KEY_ORG2, include_shared="true")
    # The shared scope is not the global namespace: neither sees the other's memories.
    assert fact not in openai_refs(personal, "", question)
    listed = memory_api(personal, "GET", "/shared", params={"limit": 100}).json()["memories"]
    assert fact in [m["content"] for m in listed]
    assert memory_api(personal, "GET", "/shared", key=KEY_ORG2).json()["total"] == 0


def test_a_users_memory_never_reaches_another_user(personal: MemchatServer, namespace: str) -> None:
    marker = uuid.uuid4().hex[:8]
    secret = f"My locker code is tangerine-{marker}."
    add(personal, secret, namespace=namespace)
    question = f"What is my locker code tangerine-{marker}?"
    for seen in personal_refs(personal, namespace, question):
        assert seen.get(secret) == "user"
    assert openai_refs(personal, namespace, question, include_shared="true").get(secret) == "user"
    for uid, key in [(namespace + "-b", KEY_ORG1), ("", KEY_ORG1), ("default", KEY_ORG1_B), (namespace, KEY_ORG2)]:
        for seen in personal_refs(personal, uid, question, key=key):
            assert secret not in seen, (uid, key)
        for query in ({}, {"include_shared": "true"}):
            assert secret not in openai_refs(personal, uid, question, key=key, **query), (uid, key, query)


def test_user_and_shared_memories_rank_as_one_list(personal: MemchatServer, fake: FakeUpstream,
                                                   namespace: str) -> None:
    marker = uuid.uuid4().hex[:8]
    mine = f"My bicycle {marker} is a red Brompton."
    shared = f"Bicycles {marker} can be parked in the basement garage."
    add(personal, mine, namespace=namespace)
    add(personal, shared, shared=True)
    envelope = seed_json(personal, namespace, prompt=f"Where can I park my bicycle {marker}?")
    items = [item for ref in envelope["data"]["refs"] for item in ref["refItems"]]
    assert {mine, shared} <= {i["content"] for i in items}
    by_content = {i["content"]: i for i in items}
    assert by_content[mine]["scope"] == "user" and by_content[shared]["scope"] == "shared"
    # Groups come in the order of their best memory, and the model sees both scopes as one list ranked by
    # score (a shared memory may come between two of the user's).
    best = [max(i["score"] for i in ref["refItems"]) for ref in envelope["data"]["refs"]]
    assert best == sorted(best, reverse=True)
    assert "shared memories" in envelope["data"]["thinkings"][0]
    section = [m["content"] for m in chat_requests(fake)[-1]["body"]["messages"] if "<memchat-memory>" in m["content"]]
    assert section and mine in section[0] and shared in section[0]
    ranked = sorted(items, key=lambda i: -i["score"])
    shown = sorted(ranked, key=lambda i: section[0].index(i["content"]))
    assert [i["content"] for i in shown] == [i["content"] for i in ranked]


def test_import_fills_the_shared_scope(personal: MemchatServer, namespace: str) -> None:
    marker = uuid.uuid4().hex[:8]
    lines = "\n".join(json.dumps({"content": f"Holiday {marker} number {i} is on the {i + 1}st of May."})
                      for i in range(3))
    resp = memory_api(personal, "POST", "/shared/import", content=lines.encode())
    assert resp.status_code == 200 and resp.json()["written"] == 3, resp.text
    for seen in personal_refs(personal, namespace, f"When is holiday {marker} number 1?"):
        assert seen and set(seen.values()) <= {"shared", "user"}
        assert any(marker in content and scope == "shared" for content, scope in seen.items())
    exported = memory_api(personal, "GET", "/shared/export").text
    assert exported.count(marker) == 3


def test_idle_commits_never_write_into_the_shared_scope(personal: MemchatServer, namespace: str) -> None:
    before = memory_api(personal, "GET", "/shared", params={"limit": 100}).json()["total"]
    marker = uuid.uuid4().hex[:6]
    seed_stream(personal, namespace, prompt=f"I adopted a parrot called Kiwi{marker} last week.")
    deadline = time.monotonic() + 30
    mine: list = []
    while time.monotonic() < deadline and not mine:  # MEMCHAT_COMMIT_AFTER=1: the commit follows quickly
        time.sleep(0.5)
        mine = memory_api(personal, "GET", params={"namespace": namespace}).json()["memories"]
    assert mine and all(m["source"] == "conversation" and m["namespace"] == namespace for m in mine)
    shared = memory_api(personal, "GET", "/shared", params={"limit": 100}).json()
    assert shared["total"] == before and all(marker not in m["content"] for m in shared["memories"])


def test_the_shared_scope_is_reached_only_by_its_own_routes(personal: MemchatServer, namespace: str) -> None:
    fact = f"Shared notice {uuid.uuid4().hex[:8]}."
    stored = add(personal, fact, shared=True)
    assert memory_api(personal, "GET", f"/shared/{stored['id']}").json()["content"] == fact
    # No namespace names it (its name starts with a control character) ...
    for ns in ("\x1fshared", "shared", ""):
        resp = memory_api(personal, "GET", f"/{stored['id']}", params={"namespace": ns})
        assert resp.status_code in (404, 422), (ns, resp.text)
    # ... a namespace parameter on its routes changes nothing, and another organisation sees none of it.
    assert memory_api(personal, "GET", f"/shared/{stored['id']}", params={"namespace": namespace}).status_code == 200
    assert memory_api(personal, "GET", f"/shared/{stored['id']}", key=KEY_ORG2).status_code == 404
    found = memory_api(personal, "POST", "/shared/search", json={"query": fact, "namespace": namespace}).json()
    assert fact in [r["content"] for r in found["results"]]
    assert memory_api(personal, "DELETE", f"/shared/{stored['id']}").status_code == 204
    assert memory_api(personal, "GET", f"/shared/{stored['id']}").status_code == 404


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_bad_include_shared_is_400(personal: MemchatServer, value: str) -> None:
    resp = httpx2.post(f"{personal.url}/v1/chat/completions", params={"include_shared": value},
                       headers={"Authorization": KEY_ORG1},
                       json={"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "include_shared"


@pytest.mark.parametrize("hostile", ["' OR 1=1 --", "x') OR tenant LIKE '%", "a\\'b", "é" * 256])
def test_hostile_unique_ids_see_only_their_own_and_the_shared_scope(personal: MemchatServer, hostile: str) -> None:
    marker = uuid.uuid4().hex[:8]
    victim = f"My passport number {marker} is X123."
    add(personal, victim, namespace=f"victim-{marker}")
    add(personal, f"Passport {marker} renewals go through the front desk.", shared=True)
    resp = post(personal, "chat_personal", {"prompt": f"What is my passport number {marker}?", "unique_id": hostile})
    assert resp.status_code == 200, resp.text
    seen = contents(resp.json()["data"]["refs"])
    assert victim not in seen and set(seen.values()) <= {"shared", "user"}
    assert any(marker in content for content, scope in seen.items() if scope == "shared")


def test_cli_imports_and_exports_the_shared_scope(personal: MemchatServer, namespace: str, tmp_path) -> None:
    from tests.e2e.test_memory_rest_more import memchat
    marker = uuid.uuid4().hex[:8]
    source = tmp_path / "shared.jsonl"
    source.write_text(json.dumps({"content": f"The canteen {marker} opens at noon."}) + "\n")
    run = memchat("import", str(source), "--url", personal.url, "--shared")
    assert run.returncode == 0 and b"imported 1 records" in run.stderr, run.stderr.decode()
    exported = memchat("export", "--url", personal.url, "--shared")
    assert exported.returncode == 0 and marker.encode() in exported.stdout
    assert marker.encode() not in memchat("export", "--url", personal.url, "--namespace", namespace).stdout
    assert memchat("export", "--url", personal.url, "--shared", "--namespace", namespace).returncode == 2
    for seen in personal_refs(personal, namespace, f"When does the canteen {marker} open?"):
        assert seen.get(f"The canteen {marker} opens at noon.") == "shared"
