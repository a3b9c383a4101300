"""POST /api/v1/memory/conversations: past conversations with their turns' times, committed to memories
dated by those times (real offline server, default heuristic extraction)."""

from __future__ import annotations

import time

import httpx2
import msgspec
import openai
import pytest

from app.testkit import MemchatServer
from tests.conftest import KEY_ORG1, KEY_ORG2

H1 = {"Authorization": f"Bearer {KEY_ORG1}"}
H2 = {"Authorization": f"Bearer {KEY_ORG2}"}
T1, T2 = "2023-05-08T13:56:00Z", "2023-06-20T09:00:00Z"


def url(server: MemchatServer, path: str = "/conversations") -> str:
    return f"{server.url}/api/v1/memory{path}"


def post(server: MemchatServer, body: object | bytes, namespace: str, headers: dict = H1,
         **params: object) -> httpx2.Response:
    kwargs = {"content": body, "headers": {**headers, "Content-Type": "application/json"}} \
        if isinstance(body, bytes) else {"json": body, "headers": headers}
    return httpx2.post(url(server), params={"namespace": namespace, **params}, timeout=60, **kwargs)


def memories(server: MemchatServer, namespace: str, headers: dict = H1) -> list[dict]:
    resp = httpx2.get(url(server, ""), params={"namespace": namespace, "limit": 100}, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["memories"]


def wait_memories(server: MemchatServer, namespace: str, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = memories(server, namespace)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def assert_422(resp: httpx2.Response, loc: list) -> None:
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail and all(set(d) == {"loc", "msg", "type"} for d in detail)
    assert detail[0]["loc"] == loc, detail


CONV = {"turns": [
    {"user": "I adopted a beagle called Bruno last week.", "assistant": "Congratulations!", "createdAt": T1},
    {"user": "What should I feed him?", "assistant": "Ask a vet.", "createdAt": T1.replace("56:00", "57:00")},
    {"user": "I moved to Lyon for a job as a nurse.", "assistant": "Nice.", "createdAt": T2},
]}


def test_import_commits_memories_dated_by_their_turns(offline_server: MemchatServer, namespace: str) -> None:
    resp = post(offline_server, CONV, namespace)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["turns"] == 3 and body["commit_after"] == 0
    [conv] = body["conversations"]
    chat_id, turn_ids = conv["chat_id"], conv["turn_ids"]
    assert len(turn_ids) == 3 and len(set(turn_ids)) == 3
    found = wait_memories(offline_server, namespace, 2)
    by_turn = {m["sourceTurnId"]: m for m in found}
    assert set(by_turn) == {turn_ids[0], turn_ids[2]}, found  # the question is not a fact
    assert all(m["source"] == "conversation" and m["sourceThreadId"] == chat_id for m in found)
    assert by_turn[turn_ids[0]]["createdAt"] == T1 and by_turn[turn_ids[2]]["createdAt"] == T2
    assert "Bruno" in by_turn[turn_ids[0]]["content"] and "2023-05-01" in by_turn[turn_ids[0]]["content"]


def test_jsonl_chat_ids_commit_after_and_continuation(offline_server: MemchatServer, namespace: str) -> None:
    lines = b"\n".join([
        b'{"chat_id": "session-1", "turns": [{"user": "I play the cello in an orchestra.", "createdAt": "2023-01-02T10:00:00"}]}',
        b'{"turns": [{"user": "My sister Ana lives in Porto.", "assistant": "Lovely city."}]}', b""])
    resp = post(offline_server, lines, namespace, commit_after=3600)
    assert resp.status_code == 200, resp.text
    convs = resp.json()["conversations"]
    assert convs[0]["chat_id"] == "session-1" and convs[1]["chat_id"] not in ("", "session-1")
    time.sleep(2)
    assert memories(offline_server, namespace) == []  # committed an hour from now, not at once
    # A client that continues the imported conversation by resending its history joins it.
    client = openai.OpenAI(base_url=offline_server.openai_base_url, api_key=KEY_ORG1, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="m", extra_query={"namespace": namespace},
        messages=[{"role": "user", "content": "My sister Ana lives in Porto."},
                  {"role": "assistant", "content": "Lovely city."},
                  {"role": "user", "content": "She is a teacher."}])
    assert raw.headers["x-memchat-chat-id"] == convs[1]["chat_id"]
    # Importing more turns into a known chat id appends after its last turn.
    more = post(offline_server, {"chat_id": "session-1", "turns": [{"user": "I practise every evening."}]}, namespace)
    assert more.status_code == 200 and more.json()["conversations"][0]["chat_id"] == "session-1"
    found = wait_memories(offline_server, namespace, 2)
    contents = sorted(m["content"] for m in found if m["sourceThreadId"] == "session-1")
    assert contents == ["I play the cello in an orchestra.", "I practise every evening."], found
    cello = next(m for m in found if "cello" in m["content"])
    assert cello["createdAt"] == "2023-01-02T10:00:00Z"  # naive = UTC


def test_a_future_time_is_kept_and_still_committed_now(offline_server: MemchatServer, namespace: str) -> None:
    body = {"turns": [{"user": "I will retire to Madeira.", "createdAt": "2041-03-01T08:00:00+02:00"}]}
    assert post(offline_server, body, namespace).status_code == 200
    [memory] = wait_memories(offline_server, namespace, 1)
    assert memory["createdAt"] == "2041-03-01T06:00:00Z"


def test_tenancy(offline_server: MemchatServer, namespace: str) -> None:
    body = {"chat_id": "shared-id", "turns": [{"user": "I keep bees on my roof in Leeds.", "createdAt": T1}]}
    assert post(offline_server, body, namespace).status_code == 200
    assert post(offline_server, body, namespace, headers=H2).status_code == 200
    mine = wait_memories(offline_server, namespace, 1)
    assert len(mine) == 1 and mine[0]["organizationId"] == "org1"
    assert memories(offline_server, namespace + "-other") == []
    theirs = memories(offline_server, namespace, headers=H2)
    deadline = time.monotonic() + 30
    while not theirs and time.monotonic() < deadline:
        time.sleep(0.2)
        theirs = memories(offline_server, namespace, headers=H2)
    assert len(theirs) == 1 and theirs[0]["organizationId"] == "org2" and theirs[0]["id"] != mine[0]["id"]


TURN = {"user": "I like tea."}


@pytest.mark.parametrize("body,loc", [
    (b"", ["body"]), (b"{bad", ["body"]), (b"[bad", ["body"]), (b"5", ["body"]), (b"[]", ["body"]),
    (b'[{"turns": [{"user": "x"}]}]', ["body"]),  # one object or JSON Lines, not an array
    (b"{}", ["body"]), (b'{"turns": []}', ["body", "turns"]), (b'{"turns": [{}]}', ["body", "turns", 0]),
    (b'{"turns": [{"user": "  ", "assistant": ""}]}', ["body", "turns", 0]),
    (b'{"turns": [{"user": 5}]}', ["body", "turns", 0, "user"]),
    (b'{"turns": [{"user": "x", "created_at": "2023-01-01T00:00:00Z"}]}', ["body", "turns", 0]),
    (b'{"turns": [{"user": "x", "createdAt": "yesterday"}]}', ["body", "turns", 0, "createdAt"]),
    (b'{"turns": [{"user": "x", "createdAt": "0999-01-01T00:00:00Z"}]}', ["body", "turns", 0, "createdAt"]),
    (b'{"turns": [{"user": "\\ud800"}]}', ["body"]),  # msgspec refuses a lone surrogate
    (b'{"chat_id": "a\\u0000b", "turns": [{"user": "x"}]}', ["body", "chat_id"]),
    (b'{"chat_id": "", "turns": [{"user": "x"}]}', ["body", "chat_id"]),
    (b'{"chat_id": "' + b"c" * 129 + b'", "turns": [{"user": "x"}]}', ["body", "chat_id"]),
    (b'{"turns": [{"user": "x"}]}\n{"turns": [{"user": "x", "createdAt": 7}]}', ["body", 1, "turns", 0, "createdAt"]),
    (b'{"turns": [{"user": "x"}]}\n{"turns": [{"user": "x"}]\n', ["body", 1]),
    (b'{"turns": [{"user": "x"}]}\n{"turns": []}', ["body", 1, "turns"]),
])
def test_bad_bodies_are_422(offline_server: MemchatServer, namespace: str, body: bytes, loc: list) -> None:
    assert_422(post(offline_server, body, namespace), loc)


def test_bounds_and_parameters(offline_server: MemchatServer, namespace: str) -> None:
    assert_422(post(offline_server, {"turns": [TURN] * 1001}, namespace), ["body", "turns"])
    assert_422(post(offline_server, {"turns": [{"user": "x" * 100_001}]}, namespace), ["body", "turns", 0, "user"])
    many = b"\n".join(b'{"turns": [{"user": "I like tea."}]}' for _ in range(1001))
    assert_422(post(offline_server, many, namespace), ["body"])
    too_many_turns = b"\n".join(msgspec.json.encode({"turns": [TURN] * 1000}) for _ in range(11))
    assert_422(post(offline_server, too_many_turns, namespace), ["body"])
    assert_422(post(offline_server, {"turns": [TURN]}, "n" * 257), ["query", "namespace"])
    assert_422(post(offline_server, {"turns": [TURN]}, "a\x01b"), ["query", "namespace"])
    for bad in (-1, 30 * 24 * 3600 + 1, "soon"):
        assert_422(post(offline_server, {"turns": [TURN]}, namespace, commit_after=bad), ["query", "commit_after"])
    big = httpx2.post(url(offline_server), content=b"x" * (17 * 1024 * 1024), headers=H1, timeout=60)
    assert big.status_code == 413
    assert httpx2.post(url(offline_server), json={"turns": [TURN]}).status_code == 401
    assert httpx2.post(url(offline_server), json={"turns": [TURN]},
                       headers={"Authorization": "Bearer nope"}).status_code == 401
    assert memories(offline_server, namespace) == []  # nothing of the refused requests was recorded
