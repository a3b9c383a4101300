"""Personal chat sessions driven by the seed's own Python clients: new sessions, continued sessions,
client-chosen session ids (scoped to organisation + ``unique_id``), hostile ids, and reading ``refs``."""

from __future__ import annotations

import json
import uuid

import httpx2
import pytest

from tests.conftest import KEY_ORG1, KEY_ORG1_B, KEY_ORG2
from tests.e2e.test_personal_chat import chat_requests, personal, post, seed_json, seed_stream  # noqa: F401
from app.testkit import FakeUpstream, MemchatServer

pytestmark = pytest.mark.usefixtures("clean_fake")


def dialog(fake: FakeUpstream) -> list[tuple[str, str]]:
    """User and assistant messages of the last chat request that went upstream."""
    return [(m["role"], m["content"]) for m in chat_requests(fake)[-1]["body"]["messages"] if m["role"] != "system"]


def tokens(frames: list) -> str:
    return "".join(f["token"] for f in frames if f != "[DONE]")


def test_new_then_continued_session_with_the_seed_clients(personal: MemchatServer, fake: FakeUpstream,
                                                          namespace: str) -> None:
    first = seed_stream(personal, namespace, prompt="I am planning a trip to Kyoto.")
    assert first[0]["token"] == "" and first[1]["token"] == "" and first[-1] == "[DONE]"
    session = first[0]["session_id"]
    assert session and tokens(first) == "Echo: I am planning a trip to Kyoto."
    second = seed_stream(personal, namespace, session=session, prompt="What should I pack?")
    assert second[0] == {"token": "", "session_id": session}
    assert dialog(fake) == [("user", "I am planning a trip to Kyoto."),
                            ("assistant", "Echo: I am planning a trip to Kyoto."), ("user", "What should I pack?")]
    third = seed_json(personal, namespace, session=session, prompt="And for the rain?")
    assert third["success"] is True and third["session_id"] == session
    assert third["data"]["content"] == "Echo: And for the rain?"
    assert [text for role, text in dialog(fake) if role == "user"] == [
        "I am planning a trip to Kyoto.", "What should I pack?", "And for the rain?"]


@pytest.mark.parametrize("first_surface", ["stream", "json"])
def test_client_chosen_session_id_starts_then_continues(personal: MemchatServer, fake: FakeUpstream,
                                                        namespace: str, first_surface: str) -> None:
    session = str(uuid.uuid4())  # a client that mints its own id per chat
    if first_surface == "stream":
        frames = seed_stream(personal, namespace, session=session, prompt="My sister is called Ines.")
        assert frames[0] == {"token": "", "session_id": session} and frames[-1] == "[DONE]"
    else:
        envelope = seed_json(personal, namespace, session=session, prompt="My sister is called Ines.")
        assert envelope["success"] is True and envelope["code"] == "0000" and envelope["session_id"] == session
    assert dialog(fake) == [("user", "My sister is called Ines.")]  # a new session: no history
    again = seed_json(personal, namespace, session=session, prompt="What is her name?")
    assert again["session_id"] == session
    assert dialog(fake) == [("user", "My sister is called Ines."), ("assistant", "Echo: My sister is called Ines."),
                            ("user", "What is her name?")]


def test_the_same_session_id_for_two_users_is_two_sessions(personal: MemchatServer, fake: FakeUpstream,
                                                           namespace: str) -> None:
    session = f"chat-{uuid.uuid4().hex[:8]}"
    seed_stream(personal, namespace, session=session, prompt="My PIN is 4321.")
    # Another user of the organisation, the same user id in another organisation, and the same organisation
    # through its second key under another user: each gets a session of its own, never the first one's.
    for uid, key in [(namespace + "-b", KEY_ORG1), (namespace, KEY_ORG2), (namespace + "-c", KEY_ORG1_B)]:
        frames = seed_stream(personal, uid, session=session, prompt="What is my PIN?", key=key)
        assert frames[0]["session_id"] == session
        assert dialog(fake) == [("user", "What is my PIN?")], (uid, key)
        assert "4321" not in json.dumps(chat_requests(fake)[-1]["body"])
    # ... and their turns never joined the first user's session.
    seed_json(personal, namespace, session=session, prompt="Say it again.")
    assert [text for role, text in dialog(fake) if role == "user"] == ["My PIN is 4321.", "Say it again."]
    # The second organisation's session continues on its own too.
    seed_json(personal, namespace, session=session, prompt="Once more.", key=KEY_ORG2)
    assert [text for role, text in dialog(fake) if role == "user"] == ["What is my PIN?", "Once more."]


@pytest.mark.parametrize("session", ["it's", "' OR 1=1 --", "x') OR ('1'='1", 'a"b\\c', "ünïcødé 🎈",
                                     "%_*", "a" * 128])
def test_hostile_session_ids_are_plain_ids(personal: MemchatServer, fake: FakeUpstream, namespace: str,
                                           session: str) -> None:
    seed_json(personal, namespace, session=session, prompt="first message")
    frames = seed_stream(personal, namespace, session=session, prompt="second message")
    assert frames[0]["session_id"] == session
    assert [text for role, text in dialog(fake) if role == "user"] == ["first message", "second message"]
    other = seed_json(personal, namespace + "-other", session=session, prompt="someone else")
    assert other["session_id"] == session and dialog(fake) == [("user", "someone else")]


@pytest.mark.parametrize("session", ["a" * 129, "a\x00b", "line\nbreak", "tab\there", "del\x7f", "c1\x85",
                                     "\x1fshared"])
@pytest.mark.parametrize("path", ["chat_personal", "chat_personal_stream"])
def test_bad_session_ids_are_4000(personal: MemchatServer, namespace: str, session: str, path: str) -> None:
    resp = post(personal, path, {"prompt": "hi", "session_id": session, "unique_id": namespace})
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"code": "4000", "msg": resp.json()["msg"], "data": None, "session_id": None,
                           "failed": True, "success": False}
    assert "session_id" in resp.json()["msg"]


@pytest.mark.parametrize("unique_id", ["a" * 257, "x\x00y", "\x1fshared"])
def test_bad_unique_ids_are_4000(personal: MemchatServer, unique_id: str) -> None:
    resp = post(personal, "chat_personal", {"prompt": "hi", "unique_id": unique_id})
    assert resp.status_code == 400 and resp.json()["code"] == "4000" and resp.json()["failed"] is True


def test_a_seed_client_reads_refs(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    """A client written from the seed: ``for ref in refs: ref["video"] ... ref["refItems"]``."""
    for path, content in [(f"?namespace={namespace}", "My favourite island is Menorca."),
                          ("/shared", f"Company trips in {namespace} go to the island of Menorca.")]:
        resp = httpx2.post(f"{personal.url}/api/v1/memory{path}", headers={"Authorization": KEY_ORG1},
                           json={"content": content})
        assert resp.status_code == 200, resp.text
    frames = seed_stream(personal, namespace, prompt="Which island do I like, Menorca?")
    envelope = seed_json(personal, namespace, prompt="Which island do I like, Menorca?")
    for refs in (frames[1]["refs"], envelope["data"]["refs"]):
        seen = {}
        for ref in refs:
            video = ref["video"]
            assert set(video) == {"id", "type", "title", "createdAt", "scope"}
            for item in ref["refItems"]:
                assert item["scope"] == video["scope"]
                seen[item["content"]] = (video["id"], video["type"], video["title"], video["scope"])
        assert seen["My favourite island is Menorca."] == ("explicit", "explicit", "Saved memories", "user")
        assert seen[f"Company trips in {namespace} go to the island of Menorca."] == (
            "shared", "explicit", "Shared memories", "shared")


def test_non_ascii_ids_reach_the_headers_percent_encoded(personal: MemchatServer, namespace: str) -> None:
    session = "ünïcødé 🎈 100%"
    with httpx2.stream("POST", f"{personal.url}/serve/api/v1/chat_personal_stream", timeout=30,
                       json={"prompt": "hi", "session_id": session, "unique_id": namespace},
                       headers={"Authorization": KEY_ORG1}) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-memchat-session-id"] == "%C3%BCn%C3%AFc%C3%B8d%C3%A9 %F0%9F%8E%88 100%25"
        assert json.loads(next(resp.iter_lines())[6:])["session_id"] == session
    resp = httpx2.post(f"{personal.url}/v1/chat/completions", params={"chat_id": session, "namespace": namespace},
                       headers={"Authorization": KEY_ORG1}, timeout=30,
                       json={"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-memchat-chat-id"] == "%C3%BCn%C3%AFc%C3%B8d%C3%A9 %F0%9F%8E%88 100%25"
    assert resp.json()["memory"]["chat_id"] == session
