"""Conversations, the durable turn log, idle-timeout commits, extraction, exactly-once."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx2
import openai
import pytest

from app.testkit import FakeUpstream, MemchatServer
from tests.conftest import API_KEYS, KEY_ORG1, KEY_ORG2

pytestmark = pytest.mark.usefixtures("clean_fake")
H1 = {"Authorization": f"Bearer {KEY_ORG1}"}


def sdk(server: MemchatServer, key: str = KEY_ORG1) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=key, max_retries=0, timeout=30)


def chat(server: MemchatServer, messages: list[dict], namespace: str, *, commit_after: int = 1,
         chat_id: str | None = None, key: str = KEY_ORG1, stream: bool = True) -> tuple[str, str]:
    """One turn through the SDK; returns (reply text, chat id)."""
    query = {"namespace": namespace, "commit_after": commit_after}
    if chat_id:
        query["chat_id"] = chat_id
    raw = sdk(server, key).chat.completions.with_raw_response.create(
        model="fake-gpt", messages=messages, stream=stream, extra_query=query)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content
    return text, raw.headers["x-memchat-chat-id"]


def memories(server: MemchatServer, namespace: str, key: str = KEY_ORG1, **params: object) -> list[dict]:
    resp = httpx2.get(f"{server.url}/api/v1/memory", params={"namespace": namespace, "limit": 100, **params},
                      headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    return resp.json()["memories"]


def wait_for_memories(server: MemchatServer, namespace: str, count: int = 1, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = [m for m in memories(server, namespace) if m["source"] == "conversation"]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"expected {count} committed memories in {namespace!r}, found {found}\n"
                         f"{server.log_text()[-3000:]}")


def memory_section(fake: FakeUpstream) -> str:
    reqs = [r for r in fake.requests() if r["path"].endswith("/chat/completions")
            and "memchat-extract" not in json.dumps(r["body"]["messages"][:1])]
    sections = [m["content"] for m in reqs[-1]["body"]["messages"]
                if m["role"] == "system" and "<memchat-memory>" in m["content"]]
    return sections[0] if sections else ""


def test_told_today_known_tomorrow(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    _, first_chat = chat(server, [{"role": "user", "content": "My dog's name is Bruno."}], namespace)
    committed = wait_for_memories(server, namespace)
    assert any("Bruno" in m["content"] for m in committed)
    assert all(m["sourceThreadId"] == first_chat and m["sourceTurnId"] for m in committed)
    _, second_chat = chat(server, [{"role": "user", "content": "What's my dog called?"}], namespace)
    assert second_chat != first_chat
    assert "Bruno" in memory_section(fake)
    chat(server, [{"role": "user", "content": "What's my dog called?"}], namespace + "-u2")
    assert "Bruno" not in memory_section(fake)
    chat(server, [{"role": "user", "content": "What's my dog called?"}], namespace, key=KEY_ORG2)
    assert "Bruno" not in memory_section(fake)


def test_llm_extraction_is_used_when_valid(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.add_rule(match="memchat-extract", reply=json.dumps({"facts": [
        {"content": "The user's favourite tea is genmaicha.", "entities": ["genmaicha"], "turn": 1}]}))
    chat(server, [{"role": "user", "content": "I really enjoy genmaicha, it is my favourite tea."}], namespace)
    [memory] = wait_for_memories(server, namespace)
    assert memory["content"] == "The user's favourite tea is genmaicha." and memory["entities"] == ["genmaicha"]
    extraction = [r for r in fake.requests() if "memchat-extract" in json.dumps(r["body"] or {})]
    assert extraction and extraction[-1]["body"]["response_format"] == {"type": "json_object"}
    assert extraction[-1]["body"]["model"] == "fake-gpt"


def test_malformed_extraction_falls_back_to_heuristic(server: MemchatServer, fake: FakeUpstream,
                                                      namespace: str) -> None:
    fake.add_rule(match="memchat-extract", reply='{"facts": [{"content": "The user')
    chat(server, [{"role": "user", "content": "I work as a lighthouse keeper in Brittany. Any tips?"}], namespace)
    found = wait_for_memories(server, namespace)
    assert [m["content"] for m in found] == ["I work as a lighthouse keeper in Brittany."]


def test_three_turn_conversation_is_one_conversation(server: MemchatServer, fake: FakeUpstream,
                                                     namespace: str) -> None:
    history: list[dict] = []
    chat_ids = []
    for text in ("I have a cat named Miso.", "I also grow tomatoes on my balcony.", "I am learning Portuguese."):
        history.append({"role": "user", "content": text})
        reply, chat_id = chat(server, history, namespace, commit_after=2)
        history.append({"role": "assistant", "content": reply})
        chat_ids.append(chat_id)
    assert len(set(chat_ids)) == 1
    # regenerate the last turn: same prefix, same user message -> replaces it, no second copy
    _, regen_chat = chat(server, history[:-1], namespace, commit_after=2)
    assert regen_chat == chat_ids[0]
    found = wait_for_memories(server, namespace, count=3)
    time.sleep(3)  # give a (wrong) second commit every chance to happen
    found = [m for m in memories(server, namespace) if m["source"] == "conversation"]
    contents = sorted(m["content"] for m in found)
    assert contents == ["I also grow tomatoes on my balcony.", "I am learning Portuguese.",
                        "I have a cat named Miso."]
    assert {m["sourceThreadId"] for m in found} == {chat_ids[0]}


def test_an_edit_after_the_commit_is_committed_as_a_revision(server: MemchatServer, fake: FakeUpstream,
                                                              namespace: str) -> None:
    def current() -> list[str]:
        return sorted(m["content"] for m in memories(server, namespace) if m["source"] == "conversation")

    first = [{"role": "user", "content": "I have a dog named Biscuit."}]
    reply, chat_id = chat(server, first, namespace, commit_after=1)
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "I play the oboe."}]
    chat(server, second, namespace, commit_after=1)
    wait_for_memories(server, namespace, count=2)
    _, again = chat(server, second, namespace, commit_after=1)   # turn 2 regenerated after its commit
    assert again == chat_id
    time.sleep(4)  # its revision is committed and adds no second copy of the same fact
    assert current() == ["I have a dog named Biscuit.", "I play the oboe."]
    edited = [*second[:2], {"role": "user", "content": "I play the bassoon in an orchestra."}]  # turn 2 edited
    _, again = chat(server, edited, namespace, commit_after=1)
    assert again == chat_id
    deadline = time.monotonic() + 20
    while "I play the bassoon in an orchestra." not in current():
        assert time.monotonic() < deadline, (current(), server.log_text()[-3000:])
        time.sleep(0.3)
    time.sleep(3)  # a (wrong) second commit of the revision would land now
    # what the edited message said is superseded by what it says now
    assert current() == ["I have a dog named Biscuit.", "I play the bassoon in an orchestra."]


def test_chat_id_continuity(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    given = "4b8b7a39-0a53-4d7e-9e0e-1c1c1c1c1c1c"
    _, first = chat(server, [{"role": "user", "content": "I play the cello."}], namespace, chat_id=given,
                    commit_after=2)
    _, second = chat(server, [{"role": "user", "content": "I live in Porto."}], namespace, chat_id=given,
                     commit_after=2, stream=False)
    assert first == second == given
    found = wait_for_memories(server, namespace, count=2)
    assert {m["sourceThreadId"] for m in found} == {given}


def test_superseding_fact(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    chat(server, [{"role": "user", "content": "I live in Paris."}], namespace)
    [paris] = wait_for_memories(server, namespace)
    chat(server, [{"role": "user", "content": "I moved from Paris to Lyon last month."}], namespace)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        old = httpx2.get(f"{server.url}/api/v1/memory/{paris['id']}", params={"namespace": namespace}, headers=H1)
        if old.json()["state"] == "superseded":
            break
        time.sleep(0.2)
    old = old.json()
    assert old["state"] == "superseded", old
    current = [m for m in memories(server, namespace) if m["source"] == "conversation"]
    assert [m["id"] for m in current] == [old["supersededBy"]] and "Lyon" in current[0]["content"]
    resp = httpx2.post(f"{server.url}/api/v1/memory/search", headers=H1,
                       json={"query": "where do I live", "namespace": namespace})
    assert [r["content"] for r in resp.json()["results"]][:1] == [current[0]["content"]]


def test_metrics(server: MemchatServer) -> None:
    text = httpx2.get(f"{server.url}/metrics").text
    for name in ("memchat_conversations_pending", 'memchat_commits_total{outcome="done"}',
                 "memchat_commit_seconds_count", "memchat_turnlog_rows_written_total"):
        assert name in text


def metric(server: MemchatServer, name: str) -> float:
    text = httpx2.get(f"{server.url}/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_commits_in_progress_gauge(tmp_path: Path, clean_fake: FakeUpstream, namespace: str) -> None:
    """A commit stuck in its extraction call shows as in progress (the pending gauge already reads 0)."""
    clean_fake.add_rule(match="memchat-extract", fault={"stall": 4}, times=1)
    with crash_server(tmp_path / "data", clean_fake) as srv:   # its own server: no other test's commits
        chat(srv, [{"role": "user", "content": "I collect vintage typewriters."}], namespace, commit_after=0)
        clean_fake.wait_for(lambda: any("memchat-extract" in json.dumps(r["body"] or {})
                                        for r in clean_fake.requests()), timeout=20)
        assert metric(srv, "memchat_conversations_pending") == 0
        assert metric(srv, "memchat_commits_in_progress") == 1
        assert metric(srv, "memchat_commits_running") == 1
        wait_for_memories(srv, namespace, timeout=30)
        deadline = time.monotonic() + 20
        while metric(srv, "memchat_commits_in_progress") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric(srv, "memchat_commits_in_progress") == 0


# -- crash safety ---------------------------------------------------------------------------------------


def crash_server(data: Path, fake: FakeUpstream, *, workers: int = 1, lease: int = 2) -> MemchatServer:
    env = {"MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "x",
           "MEMCHAT_API_KEYS": API_KEYS, "MEMCHAT_COMMIT_LEASE": str(lease)}
    return MemchatServer(data, env=env, workers=workers)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_between_turn_and_commit(tmp_path: Path, fake: FakeUpstream, namespace: str, workers: int) -> None:
    data = tmp_path / "data"
    srv = crash_server(data, fake, workers=workers).start()
    try:
        chat(srv, [{"role": "user", "content": "My sister Ana lives in Madrid."}], namespace, commit_after=3)
        chat(srv, [{"role": "user", "content": "I drive a green Volvo."}], namespace, commit_after=3)
        assert memories(srv, namespace) == []
    finally:
        srv.kill9()  # well before the 3 s idle deadline
    # on restart the overdue conversations are recovered from the turn log and commit at once
    with crash_server(data, fake, workers=workers) as srv:
        found = wait_for_memories(srv, namespace, count=2)
        time.sleep(2)
        found = [m for m in memories(srv, namespace) if m["source"] == "conversation"]
        assert sorted(m["content"] for m in found) == ["I drive a green Volvo.", "My sister Ana lives in Madrid."]
    with crash_server(data, fake, workers=workers) as srv:  # a further restart commits nothing again
        time.sleep(2)
        assert len([m for m in memories(srv, namespace) if m["source"] == "conversation"]) == 2


def test_kill9_in_the_middle_of_a_commit(tmp_path: Path, fake: FakeUpstream, namespace: str) -> None:
    data = tmp_path / "data"
    fake.add_rule(match="memchat-extract", fault={"stall": 30}, times=1)
    srv = crash_server(data, fake).start()
    try:
        chat(srv, [{"role": "user", "content": "I am allergic to peanuts."}], namespace, commit_after=1)
        fake.wait_for(lambda: any("memchat-extract" in json.dumps(r["body"] or {}) for r in fake.requests()),
                      timeout=20)
    finally:
        srv.kill9()  # the commit is claimed and waiting for the extraction call
    with crash_server(data, fake) as srv:
        found = wait_for_memories(srv, namespace, timeout=30)
        time.sleep(2)
        found = [m for m in memories(srv, namespace) if m["source"] == "conversation"]
        assert [m["content"] for m in found] == ["I am allergic to peanuts."]
