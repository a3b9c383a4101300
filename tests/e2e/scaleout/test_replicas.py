"""Replicas on one object store (a real S3 endpoint): every answered turn is committed exactly once and
found through every replica, also when a replica dies with ``kill -9`` and a fresh one (empty data dir)
takes its place; follow-ups routed to another replica continue the conversation; a dead replica's
conversations are committed by the living ones; forgetting a user reaches every replica."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import httpx2
import pytest

from tests.conftest import KEY_ORG1
from tests.e2e.scaleout.conftest import Cluster
from app.testkit import MemchatServer

AUTH = {"Authorization": f"Bearer {KEY_ORG1}"}


def turn(server: MemchatServer, messages: list[dict], namespace: str, commit_after: int = 1) -> tuple[str, str]:
    """One streamed turn; returns (reply, chat id). Raises unless the stream ended with [DONE]."""
    body = {"model": "fake-gpt", "stream": True, "messages": messages}
    with httpx2.stream("POST", f"{server.url}/v1/memory/chat/completions", json=body, headers=AUTH, timeout=30,
                       params={"namespace": namespace, "commit_after": commit_after}) as resp:
        assert resp.status_code == 200, resp.read()
        chat_id = resp.headers["x-memchat-chat-id"]
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1] if line.startswith("data: ")]
    reply = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return reply, chat_id


def conversation_memories(server: MemchatServer, namespace: str) -> list[str]:
    resp = httpx2.get(f"{server.url}/api/v1/memory", params={"namespace": namespace, "limit": 100}, headers=AUTH,
                      timeout=30)
    assert resp.status_code == 200, resp.text
    return [m["content"] for m in resp.json()["memories"] if m["source"] == "conversation"]


def search(server: MemchatServer, namespace: str, query: str) -> list[str]:
    resp = httpx2.post(f"{server.url}/api/v1/memory/search", json={"query": query, "namespace": namespace},
                       headers=AUTH, timeout=30)
    assert resp.status_code == 200, resp.text
    return [hit["content"] for hit in resp.json()["results"]]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def fact(user: int, n: int) -> str:
    return f"I keep a ceramic owl number {user}{n} on my shelf."


@pytest.mark.slow
@pytest.mark.timeout(420)  # by design over the suite's 120 s: the dead replica's claims wait out the 60 s lease
def test_kill9_and_replacement_lose_no_answered_turn(cluster: Cluster) -> None:
    replicas = cluster.start_replicas(3)
    users = [f"user-{i}" for i in range(12)]
    answered: dict[str, list[str]] = {u: [] for u in users}
    attempted: dict[str, list[str]] = {u: [] for u in users}
    histories: dict[str, list[dict]] = {u: [] for u in users}
    lock = threading.Lock()

    def run_user(index: int, user: str) -> None:
        for n in range(3):
            server = replicas[(index + n) % 3]  # round-robin: each follow-up lands on another replica
            messages = [*histories[user], {"role": "user", "content": fact(index, n)}]
            attempted[user].append(fact(index, n))
            try:
                turn(server, messages, user)
            except (httpx2.HTTPError, AssertionError):
                continue  # that replica was killed: the turn was not answered
            with lock:
                answered[user].append(fact(index, n))
            histories[user] = [*messages, {"role": "assistant", "content": "noted"}]
            time.sleep(0.3)

    threads = [threading.Thread(target=run_user, args=(i, u)) for i, u in enumerate(users)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    replicas[2].kill9()
    for thread in threads:
        thread.join(timeout=120)
    replacement = cluster.start_replica()  # a new host: empty data dir
    living = [replicas[0], replicas[1], replacement]
    total = sum(len(v) for v in answered.values())
    assert total >= 24, answered  # most turns were answered; the dead replica's share was retried nowhere

    def all_committed() -> bool:
        return all(len(conversation_memories(living[0], u)) >= len(answered[u]) for u in users)

    try:
        wait_until(all_committed, 240, "every answered turn to be committed")  # > the 60 s lease of a dead claim
    except AssertionError:
        state = {u: (answered[u], conversation_memories(living[0], u)) for u in users}
        raise AssertionError(f"not all committed: {state}\n{replicas[0].log_text()[-3000:]}") from None
    time.sleep(3)  # a duplicate commit, if any, would land now
    for server in living:
        for user in users:
            found = Counter(conversation_memories(server, user))
            # every answered turn exactly once; a turn the dying replica recorded but whose [DONE] never
            # reached the client may be committed too (it was durable), but also only once
            assert all(found[f] == 1 for f in answered[user]), (server.url, user, found, answered[user])
            assert all(count == 1 and f in attempted[user] for f, count in found.items()), (server.url, user, found)
    for user in users[:3]:
        for server in living:
            assert answered[user][0] in search(server, user, "ceramic owl on my shelf")


def test_follow_up_on_another_replica_continues_the_conversation(cluster: Cluster) -> None:
    a, b = cluster.start_replicas(2)
    first = [{"role": "user", "content": "My sister is called Ottilie."}]
    reply, chat_a = turn(a, first, "follow-up", commit_after=600)
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "She lives in Tromsø."}]
    _, chat_b = turn(b, second, "follow-up", commit_after=600)
    assert chat_b == chat_a
    unrelated = [{"role": "user", "content": "Something else entirely."}]
    _, chat_c = turn(b, unrelated, "follow-up", commit_after=600)
    assert chat_c != chat_a


def test_a_dead_replicas_conversations_are_committed_by_the_living(cluster: Cluster) -> None:
    a, b = cluster.start_replicas(2)
    turn(a, [{"role": "user", "content": "I planted a quince tree in the garden."}], "takeover", commit_after=2)
    a.kill9()  # before its idle commit: only the living replica can commit it now
    wait_until(lambda: conversation_memories(b, "takeover"), 60, "the living replica to commit the turn")
    time.sleep(3)
    assert conversation_memories(b, "takeover") == ["I planted a quince tree in the garden."]


def test_forget_reaches_every_replica(cluster: Cluster) -> None:
    a, b = cluster.start_replicas(2)
    resp = httpx2.post(f"{a.url}/api/v1/memory", params={"namespace": "forget-me"}, headers=AUTH,
                       json={"content": "My locker code is 4471."}, timeout=30)
    assert resp.status_code == 200, resp.text
    wait_until(lambda: search(b, "forget-me", "locker code"), 15, "replica b to see the memory")
    gone = httpx2.delete(f"{a.url}/api/v1/memory", params={"namespace": "forget-me", "confirm": "true"},
                         headers=AUTH, timeout=30)
    assert gone.status_code == 200 and gone.json()["memories"] == 1
    # documented bound: another replica's caches are at most MEMCHAT_VECTOR_CACHE_TTL (5 s) stale
    wait_until(lambda: not search(b, "forget-me", "locker code"), 8, "replica b to forget the memory")
    assert httpx2.get(f"{b.url}/api/v1/memory", params={"namespace": "forget-me"}, headers=AUTH,
                      timeout=30).json()["total"] == 0
