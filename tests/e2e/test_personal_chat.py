"""memories.ai-compatible personal chat (`/serve/api/v1/chat_personal*`), end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx2
import pytest

from app.testkit import REPO_ROOT, FakeUpstream, MemchatServer
from tests.conftest import API_KEYS, KEY_ORG1, KEY_ORG2

pytestmark = pytest.mark.usefixtures("clean_fake")


@pytest.fixture(scope="module")
def personal(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemchatServer]:
    env = {"MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "x",
           "MEMCHAT_API_KEYS": API_KEYS, "MEMCHAT_COMMIT_AFTER": "1", "MEMCHAT_SSE_PING_INTERVAL": "0.3",
           "MEMCHAT_DEFAULT_MODEL": "fake-gpt"}
    with MemchatServer(tmp_path_factory.mktemp("personal"), env=env) as srv:
        yield srv


def run_script(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


SEED_STREAMING = '''
import requests
import json

url = "{url}/serve/api/v1/chat_personal_stream"
payload = json.dumps({{ "session_id": {session!r}, "prompt": {prompt!r}, "unique_id": {uid!r}}})
headers = {{ 'Authorization': '{key}', 'Content-Type': 'application/json', 'Accept': 'text/event-stream'}}

with requests.post(url, headers=headers, data=payload) as resp: 
    resp.raise_for_status() 
    for line in resp.iter_lines(decode_unicode=True): 
        if line: 
            print(line)
'''

SEED_NON_STREAMING = '''
import requests
import json

url = "{url}/serve/api/v1/chat_personal"
payload = json.dumps({{ "session_id": {session!r}, "prompt": {prompt!r}, "unique_id": {uid!r}}})
headers = {{ 'Authorization': '{key}', 'Content-Type': 'application/json'}}

response = requests.post(url, headers=headers, data=payload)
print(response.text)
'''


SEED_PROMPT = "When did I went to the beach?"


def seed_stream(srv: MemchatServer, uid: str, *, session: str = "", prompt: str = SEED_PROMPT,
                key: str = KEY_ORG1) -> list:
    """Run the seed's streaming example (its code, with these values) and parse what it prints: the frames
    of every ``data:`` line, ``"[DONE]"`` for the last."""
    out = run_script(textwrap.dedent(SEED_STREAMING).format(url=srv.url, key=key, uid=uid, session=session,
                                                            prompt=prompt))
    lines = out.strip().splitlines()
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


def seed_json(srv: MemchatServer, uid: str, *, session: str = "", prompt: str = SEED_PROMPT,
              key: str = KEY_ORG1) -> dict:
    """Run the seed's non-streaming example and parse the envelope it prints."""
    return json.loads(run_script(textwrap.dedent(SEED_NON_STREAMING).format(
        url=srv.url, key=key, uid=uid, session=session, prompt=prompt)))


def post(srv: MemchatServer, path: str, body: object, key: str = KEY_ORG1) -> httpx2.Response:
    return httpx2.post(f"{srv.url}/serve/api/v1/{path}", headers={"Authorization": key}, json=body, timeout=30)


def stream_frames(srv: MemchatServer, body: dict, key: str = KEY_ORG1) -> list:
    frames = []
    with httpx2.stream("POST", f"{srv.url}/serve/api/v1/chat_personal_stream", json=body, timeout=30,
                       headers={"Authorization": key}) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line:
                assert line.startswith("data: "), line
                frames.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
    return frames


def chat_requests(fake: FakeUpstream) -> list[dict]:
    return [r for r in fake.requests() if r["path"].endswith("/chat/completions")
            and "memchat-extract" not in json.dumps(r["body"]["messages"][:1])]


def test_seed_streaming_example(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.reset()
    fake.add_rule(match="beach", token_delay=0.02)  # tokens arrive apart, as from a model: one frame each
    *frames, done = seed_stream(personal, namespace)
    assert done == "[DONE]"
    assert all("token" in f for f in frames)  # a naive json.loads(line[6:])["token"] client never breaks
    assert frames[0]["session_id"] and frames[0]["token"] == ""
    assert "refs" in frames[1] and "thinkings" in frames[1]
    assert "".join(f["token"] for f in frames) == "Echo: When did I went to the beach?"
    assert len([f for f in frames if f["token"]]) >= 3  # streamed token by token


def test_seed_non_streaming_example(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    envelope = seed_json(personal, namespace)
    assert envelope["code"] == "0000" and envelope["msg"] == "success"
    assert envelope["success"] is True and envelope["failed"] is False and envelope["session_id"]
    assert envelope["data"]["role"] == "ASSISTANT"
    assert envelope["data"]["content"] == "Echo: When did I went to the beach?"
    assert envelope["data"]["refs"] == [] and isinstance(envelope["data"]["thinkings"], list)


def test_two_turn_session_keeps_history(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    first = stream_frames(personal, {"prompt": "I am planning a trip to Kyoto.", "session_id": "",
                                     "unique_id": namespace})
    session = first[0]["session_id"]
    second = post(personal, "chat_personal", {"prompt": "What should I pack?", "session_id": session,
                                              "unique_id": namespace}).json()
    assert second["session_id"] == session
    messages = chat_requests(fake)[-1]["body"]["messages"]
    dialog = [(m["role"], m["content"]) for m in messages if m["role"] != "system"]
    assert dialog == [("user", "I am planning a trip to Kyoto."), ("assistant", "Echo: I am planning a trip to Kyoto."),
                      ("user", "What should I pack?")]


def test_fact_from_session_one_in_session_two(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    frames_first = stream_frames(personal, {"prompt": "I went to the beach in Biarritz yesterday.",
                                            "unique_id": namespace})
    deadline = time.monotonic() + 20
    frames: list = []
    while time.monotonic() < deadline:
        frames = stream_frames(personal, {"prompt": "When did I go to the beach?", "unique_id": namespace})
        if frames[1]["refs"]:
            break
        time.sleep(0.5)
    refs = frames[1]["refs"]
    assert refs, "the committed fact never showed up"
    group = refs[0]
    video = group["video"]
    assert video["type"] == "conversation" and video["scope"] == "user" and "thread" not in group
    assert video["id"] == frames_first[0]["session_id"] and video["title"].startswith("I went to the beach")
    assert video["createdAt"] <= group["refItems"][0]["createdAt"]  # the conversation's start
    assert "Biarritz" in group["refItems"][0]["content"] and group["refItems"][0]["scope"] == "user"
    assert "used" in frames[1]["thinkings"][0]
    section = [m["content"] for m in chat_requests(fake)[-1]["body"]["messages"] if "<memchat-memory>" in m["content"]]
    assert section and "Biarritz" in section[0]


def test_shares_memory_with_openai_namespace(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    resp = httpx2.post(f"{personal.url}/api/v1/memory", params={"namespace": namespace},
                       headers={"X-API-Key": KEY_ORG1}, json={"content": "My favourite beach is La Concha."})
    assert resp.status_code == 200
    envelope = post(personal, "chat_personal", {"prompt": "Which beach do I like best?", "unique_id": namespace}).json()
    [group] = envelope["data"]["refs"]
    assert group["video"] == {"id": "explicit", "type": "explicit", "title": "Saved memories", "scope": "user",
                              "createdAt": group["refItems"][0]["createdAt"]}
    assert group["refItems"][0]["content"] == "My favourite beach is La Concha."
    other = post(personal, "chat_personal", {"prompt": "Which beach do I like best?", "unique_id": namespace},
                 key=KEY_ORG2).json()
    assert other["data"]["refs"] == []


@pytest.mark.parametrize("raw", [
    b"{not json", b"", b"[]", b'{"session_id": ""}', b'{"prompt": 5}', b'{"prompt": "   "}',
    b'{"prompt": "hi", "session_id": 3}', b'{"prompt": "hi", "unique_id": ["x"]}',
    b'{"prompt": "hi", "unique_id": "a\\u0000b"}',
    json.dumps({"prompt": "x" * 1_000_000}).encode(),
])
@pytest.mark.parametrize("path", ["chat_personal", "chat_personal_stream"])
def test_bad_bodies_get_the_envelope(personal: MemchatServer, raw: bytes, path: str) -> None:
    resp = httpx2.post(f"{personal.url}/serve/api/v1/{path}", content=raw, timeout=30,
                       headers={"Authorization": KEY_ORG1, "Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text
    envelope = resp.json()
    assert envelope["success"] is False and envelope["failed"] is True
    assert envelope["code"] != "0000" and envelope["msg"] and envelope["data"] is None


def test_auth_errors_get_the_envelope(personal: MemchatServer) -> None:
    for headers in ({}, {"Authorization": "wrong"}):
        resp = httpx2.post(f"{personal.url}/serve/api/v1/chat_personal", json={"prompt": "hi"}, headers=headers)
        assert resp.status_code == 401 and resp.json()["code"] == "4010"


def test_upstream_errors(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.add_rule(match="refuse me", fault={"status": 429})
    resp = post(personal, "chat_personal_stream", {"prompt": "refuse me", "unique_id": namespace})
    assert resp.status_code == 429 and resp.json()["code"] == "4290"
    fake.add_rule(match="break me", reply="one two three four five six", fault={"drop_after": 3})
    frames = stream_frames(personal, {"prompt": "break me", "unique_id": namespace})
    assert frames[-1] == "[DONE]"
    assert frames[-2]["token"] == "" and frames[-2]["error"]["message"]
    assert "".join(f["token"] for f in frames[:-1]) == "one two "


def test_keepalive_pings_while_upstream_is_slow(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.add_rule(match="take your time", reply="done now", first_token_delay=1.5)
    frames = stream_frames(personal, {"prompt": "take your time", "unique_id": namespace})
    pings = [f for f in frames[2:-1] if f == {"token": ""}]
    assert len(pings) >= 2  # every ~0.3 s while the first token was 1.5 s away
    assert "".join(f["token"] for f in frames[:-1]) == "done now"


def test_disconnect_closes_upstream(personal: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.add_rule(match="long story", tokens=60, token_delay=0.2)
    with httpx2.stream("POST", f"{personal.url}/serve/api/v1/chat_personal_stream", timeout=30,
                       json={"prompt": "long story", "unique_id": namespace},
                       headers={"Authorization": KEY_ORG1}) as resp:
        tokens = 0
        for line in resp.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:]).get("token"):
                tokens += 1
            if tokens >= 2:
                break
    streams = fake.wait_for(lambda: (s := fake.streams())["open"] == 0 and s["closed_early"] >= 1 and s, timeout=2)
    assert streams["streams"][-1]["state"] == "client_closed"
