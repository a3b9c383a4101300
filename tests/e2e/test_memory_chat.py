"""Memories are retrieved per org + namespace, injected as one system section, and shown as refs."""

from __future__ import annotations

import httpx2
import openai
import pytest

from app.testkit import FakeUpstream, MemchatServer
from tests.conftest import KEY_ORG1, KEY_ORG1_B, KEY_ORG2

pytestmark = pytest.mark.usefixtures("clean_fake")

DOG = "My dog's name is Bruno and he is a beagle."
QUESTION = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the name of my dog?"}]


def add_memory(server: MemchatServer, content: str, namespace: str, key: str = KEY_ORG1) -> dict:
    resp = httpx2.post(f"{server.url}/api/v1/memory", params={"namespace": namespace},
                       headers={"Authorization": f"Bearer {key}"}, json={"content": content})
    assert resp.status_code == 200, resp.text
    return resp.json()


def sdk(server: MemchatServer, key: str = KEY_ORG1) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=key, max_retries=0, timeout=30)


def upstream_messages(fake: FakeUpstream) -> list[dict]:
    reqs = [r for r in fake.requests() if r["path"].endswith("/chat/completions")]
    return reqs[-1]["body"]["messages"]


def memory_sections(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "system" and "<memchat-memory>" in m["content"]]


def test_memories_injected_and_refs_on_first_chunk(server: MemchatServer, fake: FakeUpstream,
                                                    namespace: str) -> None:
    created = add_memory(server, DOG, namespace)
    add_memory(server, "I work as a nurse in Lyon.", namespace)
    raw = sdk(server).chat.completions.with_raw_response.create(
        model="fake-gpt", messages=QUESTION, stream=True, extra_query={"namespace": namespace})
    chunks = list(raw.parse())
    refs = chunks[0].model_extra["memory"]["refs"]
    assert refs and refs[0]["id"] == created["id"] and refs[0]["content"] == DOG
    assert set(refs[0]) >= {"id", "content", "score", "createdAt", "source", "sourceThreadId", "sourceTurnId"}
    assert refs[0]["source"] == "explicit" and refs[0]["createdAt"].endswith("Z")
    assert all("memory" not in (c.model_extra or {}) for c in chunks[1:])
    assert raw.headers["x-memchat-memories"] == str(len(refs))
    messages = upstream_messages(fake)
    sections = memory_sections(messages)
    assert len(sections) == 1 and "Bruno" in sections[0]
    assert created["createdAt"][:10] in sections[0]  # each memory carries its date
    # the section comes after the client's own system message; the user's message is untouched
    assert messages[0] == QUESTION[0] and messages[1]["content"] == sections[0]
    assert messages[-1] == QUESTION[-1]


def test_a_namespace_seen_empty_finds_a_memory_added_right_after(server: MemchatServer, fake: FakeUpstream,
                                                                 namespace: str) -> None:
    """Chats in an empty namespace skip retrieval (remembered as empty for a while); a memory written
    through this server must still be found by the very next chat."""
    client = sdk(server)
    first = client.chat.completions.create(model="fake-gpt", messages=QUESTION, extra_query={"namespace": namespace})
    assert first.model_extra["memory"]["refs"] == [] and not memory_sections(upstream_messages(fake))
    created = add_memory(server, DOG, namespace)
    second = client.chat.completions.create(model="fake-gpt", messages=QUESTION, extra_query={"namespace": namespace})
    assert [r["id"] for r in second.model_extra["memory"]["refs"]] == [created["id"]]
    assert "Bruno" in memory_sections(upstream_messages(fake))[0]


def test_non_stream_response_carries_refs(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    add_memory(server, DOG, namespace)
    completion = sdk(server).chat.completions.create(model="fake-gpt", messages=QUESTION,
                                                     extra_query={"namespace": namespace})
    refs = completion.model_extra["memory"]["refs"]
    assert [r["content"] for r in refs][:1] == [DOG]


@pytest.mark.parametrize("key,other_namespace", [(KEY_ORG1, True), (KEY_ORG2, False), (KEY_ORG1_B, True)])
def test_no_leak_across_namespace_or_org(server: MemchatServer, fake: FakeUpstream, namespace: str,
                                         key: str, other_namespace: bool) -> None:
    add_memory(server, DOG, namespace)
    ask_in = namespace + "-other" if other_namespace else namespace
    stream = sdk(server, key).chat.completions.create(model="fake-gpt", messages=QUESTION, stream=True,
                                                      extra_query={"namespace": ask_in})
    chunks = list(stream)
    assert chunks[0].model_extra["memory"]["refs"] == []
    assert memory_sections(upstream_messages(fake)) == []


def test_same_org_second_key_shares_memory(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    add_memory(server, DOG, namespace, key=KEY_ORG1)
    completion = sdk(server, KEY_ORG1_B).chat.completions.create(model="fake-gpt", messages=QUESTION,
                                                                 extra_query={"namespace": namespace})
    assert [r["content"] for r in completion.model_extra["memory"]["refs"]][:1] == [DOG]


def test_nothing_injected_when_nothing_relevant(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    add_memory(server, DOG, namespace)
    completion = sdk(server).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "Summarise quantum chromodynamics"}],
        extra_query={"namespace": namespace})
    assert completion.model_extra["memory"]["refs"] == []
    assert memory_sections(upstream_messages(fake)) == []


def test_search_route_ranks_and_validates(server: MemchatServer, namespace: str) -> None:
    for content in ("I love hiking in the Alps.", DOG, "My favourite food is ramen."):
        add_memory(server, content, namespace)
    headers = {"Authorization": f"Bearer {KEY_ORG1}"}
    resp = httpx2.post(f"{server.url}/api/v1/memory/search", headers=headers,
                       json={"query": "what is my dog called", "namespace": namespace, "limit": 2})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert results[0]["content"] == DOG and len(results) <= 2 and "score" in results[0]
    for bad in ({"query": "x", "limit": 0}, {"query": "x", "limit": 101}, {"limit": 3}, {"query": 5}):
        resp = httpx2.post(f"{server.url}/api/v1/memory/search", headers=headers, json=bad)
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["detail"][0]["loc"][0] == "body"


HOSTILE = ["' OR '1'='1", "a'; DROP TABLE memories; --", "back\\slash", "100%_wild", "\u202eRTL\u202c",
           "emoji 🐶🦜", "x" * 256, "tenant/with/slash", "3:1:a/b"]


def test_hostile_namespaces_are_isolated(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    secret = f"The secret code of {namespace} is 4242 tangerine"
    for hostile in HOSTILE:
        add_memory(server, f"{secret} in {hostile!r}", hostile + namespace[:0])
    add_memory(server, secret, namespace)
    headers = {"Authorization": f"Bearer {KEY_ORG1}"}
    for hostile in HOSTILE + ["", "'", "%", "_"]:
        resp = httpx2.post(f"{server.url}/api/v1/memory/search", headers=headers,
                           json={"query": "secret code tangerine 4242", "namespace": hostile, "limit": 100})
        assert resp.status_code == 200, resp.text
        for hit in resp.json()["results"]:
            assert hit["namespace"] == hostile, (hostile, hit)
    # a hostile namespace on the chat surface works and sees only its own memory
    completion = sdk(server).chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "what is the secret code tangerine?"}],
        extra_query={"namespace": HOSTILE[0]})
    refs = completion.model_extra["memory"]["refs"]
    assert refs and all(repr(HOSTILE[0]) in r["content"] for r in refs)


def test_control_characters_and_overlong_namespace_rejected(server: MemchatServer) -> None:
    headers = {"Authorization": f"Bearer {KEY_ORG1}"}
    for bad in ("a\x00b", "line\nbreak", "x" * 257):
        resp = httpx2.post(f"{server.url}/api/v1/memory", params={"namespace": bad}, headers=headers,
                           json={"content": "hello"})
        assert resp.status_code == 422, resp.text
        assert resp.json()["detail"][0]["loc"] == ["query", "namespace"]


def test_offline_mode_answers_from_memory(offline_server: MemchatServer, namespace: str) -> None:
    add_memory(offline_server, DOG, namespace)
    completion = sdk(offline_server).chat.completions.create(model="any", messages=QUESTION,
                                                             extra_query={"namespace": namespace})
    text = completion.choices[0].message.content
    assert text.startswith("[offline mode] Here is what I remember:") and "Bruno" in text
    assert completion.model_extra["memory"]["refs"][0]["content"] == DOG
