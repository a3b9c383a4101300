"""Reliability: upstream faults and client disconnects on every HTTP surface.

Each fault must give the surface's own error shape, leave the server healthy, keep the turn log
consistent (a partial reply is recorded), and a client that leaves must close the upstream request
within a second without leaking tasks.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx2
import pytest

from app.testkit import FakeUpstream, MemchatServer
from tests.conftest import API_KEYS, KEY_ORG1

pytestmark = pytest.mark.usefixtures("clean_fake")
AUTH = {"Authorization": f"Bearer {KEY_ORG1}"}


@pytest.fixture(scope="module")
def srv(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemchatServer]:
    env = {"MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "x",
           "MEMCHAT_API_KEYS": API_KEYS, "MEMCHAT_UPSTREAM_TIMEOUT": "1.5", "MEMCHAT_DEFAULT_MODEL": "fake-gpt",
           "MEMCHAT_EMBEDDER": "none"}
    with MemchatServer(tmp_path_factory.mktemp("reliability"), env=env) as server:
        yield server


def _call(url: str, body: dict, *, stream: bool) -> tuple[int, list | dict]:
    """POST ``body``; a JSON body back, or the stream's data frames (``"[DONE]"`` for the last)."""
    if not stream:
        resp = httpx2.post(url, json=body, headers=AUTH, timeout=30)
        return resp.status_code, resp.json()
    frames: list = []
    with httpx2.stream("POST", url, json=body, headers=AUTH, timeout=30) as resp:
        if resp.status_code != 200:
            return resp.status_code, json.loads(resp.read())
        for line in resp.iter_lines():
            if line.startswith("data: "):
                frames.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
    return 200, frames


def openai_call(srv: MemchatServer, prompt: str, *, stream: bool, namespace: str) -> tuple[int, list | dict]:
    body = {"model": "fake-gpt", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    return _call(f"{srv.url}/v1/memory/chat/completions?namespace={namespace}", body, stream=stream)


def personal_call(srv: MemchatServer, prompt: str, *, stream: bool, namespace: str,
                  session_id: str = "") -> tuple[int, list | dict]:
    body = {"prompt": prompt, "unique_id": namespace, "session_id": session_id}
    return _call(f"{srv.url}/serve/api/v1/chat_personal" + ("_stream" if stream else ""), body, stream=stream)


def assert_healthy(srv: MemchatServer) -> None:
    assert httpx2.get(f"{srv.url}/healthz", timeout=5).status_code == 200


PRE_STREAM_FAULTS = [({"status": 500}, 502), ({"status": 503}, 502), ({"status": 429}, 429),
                     ({"status": 400}, 400), ({"stall": 5}, 504)]


@pytest.mark.parametrize("fault,status", PRE_STREAM_FAULTS)
@pytest.mark.parametrize("stream", [True, False])
def test_openai_surface_faults(srv: MemchatServer, fake: FakeUpstream, namespace: str, fault: dict, status: int,
                               stream: bool) -> None:
    fake.add_rule(match="fault please", fault=fault)
    got, body = openai_call(srv, "fault please", stream=stream, namespace=namespace)
    assert got == status, body
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert_healthy(srv)


@pytest.mark.parametrize("fault,status", PRE_STREAM_FAULTS)
@pytest.mark.parametrize("stream", [True, False])
def test_personal_surface_faults(srv: MemchatServer, fake: FakeUpstream, namespace: str, fault: dict, status: int,
                                 stream: bool) -> None:
    fake.add_rule(match="fault please", fault=fault)
    got, body = personal_call(srv, "fault please", stream=stream, namespace=namespace)
    assert got == status, body
    assert body["success"] is False and body["failed"] is True and body["code"] != "0000" and body["data"] is None
    assert_healthy(srv)


@pytest.mark.parametrize("fault", [{"drop_after": 3}, {"stall_after": 3, "stall": 5}])
def test_mid_stream_failure_openai(srv: MemchatServer, fake: FakeUpstream, namespace: str, fault: dict) -> None:
    fake.add_rule(match="break midway", reply="one two three four five", fault=fault)
    status, frames = openai_call(srv, "break midway", stream=True, namespace=namespace)
    assert status == 200 and frames[-1] == "[DONE]"
    assert "error" in frames[-2] and frames[-2]["error"]["message"]
    text = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames[:-2] if f.get("choices"))
    assert text == "one two "
    assert_healthy(srv)


@pytest.mark.parametrize("fault", [{"drop_after": 3}, {"stall_after": 3, "stall": 5}])
def test_mid_stream_failure_personal_keeps_partial_turn(srv: MemchatServer, fake: FakeUpstream, namespace: str,
                                                        fault: dict) -> None:
    fake.add_rule(match="break midway", reply="one two three four five", fault=fault, times=1)
    status, frames = personal_call(srv, "break midway", stream=True, namespace=namespace)
    assert status == 200 and frames[-1] == "[DONE]" and frames[-2]["token"] == "" and frames[-2]["error"]
    session = frames[0]["session_id"]
    # the turn log kept the partial reply: the next turn of the session sends it upstream as history
    status, envelope = personal_call(srv, "go on", stream=False, namespace=namespace, session_id=session)
    assert status == 200, envelope
    history = [r for r in fake.requests() if r["path"].endswith("/chat/completions")][-1]["body"]["messages"]
    dialog = [(m["role"], m["content"]) for m in history if m["role"] != "system"]
    assert dialog == [("user", "break midway"), ("assistant", "one two "), ("user", "go on")]


def tasks(srv: MemchatServer) -> int:
    text = httpx2.get(f"{srv.url}/metrics", timeout=5).text
    return int(float(re.search(r"^memchat_event_loop_tasks (\S+)$", text, re.M).group(1)))


@pytest.mark.parametrize("surface", ["openai", "personal"])
def test_disconnect_closes_upstream_without_leaks(srv: MemchatServer, fake: FakeUpstream, namespace: str,
                                                  surface: str) -> None:
    fake.add_rule(match="very long answer", tokens=100, token_delay=0.1)
    baseline = tasks(srv)
    for _ in range(3):
        if surface == "openai":
            url = f"{srv.url}/v1/memory/chat/completions?namespace={namespace}"
            body: dict = {"model": "fake-gpt", "stream": True,
                          "messages": [{"role": "user", "content": "very long answer"}]}
        else:
            url = f"{srv.url}/serve/api/v1/chat_personal_stream"
            body = {"prompt": "very long answer", "unique_id": namespace}
        with httpx2.stream("POST", url, json=body, headers=AUTH, timeout=30) as resp:
            seen = 0
            for line in resp.iter_lines():
                seen += line.startswith("data: ")
                if seen >= 4:
                    break
        left = time.monotonic()
        fake.wait_for(lambda: fake.streams()["open"] == 0, timeout=2)
        assert time.monotonic() - left <= 1.0 + 0.3  # polling slack
    states = [s["state"] for s in fake.streams()["streams"]]
    assert states[-3:] == ["client_closed"] * 3
    deadline = time.monotonic() + 5
    while tasks(srv) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tasks(srv) <= baseline
    assert_healthy(srv)
