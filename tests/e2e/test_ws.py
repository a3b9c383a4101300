"""The web demo's websocket protocol (``/ws/chat``), sign-in endpoints and static page, end to end:
real memchat and fake-upstream processes, the ``websockets`` client library."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.testkit import FakeUpstream, MemchatServer
from tests.conftest import API_KEYS, KEY_ORG1, KEY_ORG2

pytestmark = pytest.mark.usefixtures("clean_fake")

DEFAULT_COMMIT_AFTER = 60
PING_INTERVAL = 0.5
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def web(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemchatServer]:
    env = {"MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "x",
           "MEMCHAT_API_KEYS": API_KEYS, "MEMCHAT_COMMIT_AFTER": str(DEFAULT_COMMIT_AFTER),
           "MEMCHAT_SSE_PING_INTERVAL": str(PING_INTERVAL), "MEMCHAT_DEFAULT_MODEL": "fake-gpt"}
    with MemchatServer(tmp_path_factory.mktemp("ws"), env=env) as srv:
        yield srv


def ws_url(srv: MemchatServer, query: str = "") -> str:
    return f"ws://127.0.0.1:{srv.port}/ws/chat{query}"


def bearer(key: str = KEY_ORG1) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def open_socket(srv: MemchatServer, headers: dict[str, str] | None = None, origin: str | None = None,
                      query: str = "") -> ClientConnection:
    ws = await connect(ws_url(srv, query), additional_headers=bearer() if headers is None else headers,
                       origin=origin, proxy=None, open_timeout=10, max_size=None)  # type: ignore[arg-type]
    ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ready["type"] == "ready" and ready["max_message_bytes"] == LIMIT, ready
    assert ready["commit_after"] == DEFAULT_COMMIT_AFTER
    return ws


async def recv(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    """The next message that is not a keep-alive ping (TimeoutError after ``timeout`` seconds in all)."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic())))
        if message["type"] != "ping":
            return message


async def until(ws: ClientConnection, kind: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Messages up to and including the first of type ``kind``."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        message = await recv(ws, max(0.0, deadline - time.monotonic()))
        seen.append(message)
        if message["type"] == kind:
            return seen


async def ask(ws: ClientConnection, content: str, namespace: str, **extra: Any) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "message", "content": content, "namespace": namespace, **extra}))
    return await until(ws, "done")


def tokens(messages: list[dict[str, Any]]) -> str:
    return "".join(m["token"] for m in messages if m["type"] == "token")


async def history(ws: ClientConnection, namespace: str, chat_id: str) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "history", "namespace": namespace, "chat_id": chat_id}))
    reply = await recv(ws)
    assert reply["type"] == "history" and reply["chat_id"] == chat_id, reply
    return reply["turns"]


def chat_requests(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["path"].endswith("/chat/completions")
            and "memchat-extract" not in json.dumps(r["body"]["messages"][:1])]


# -- streaming -------------------------------------------------------------------------------------------


async def test_reply_streams_token_by_token(web: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.add_rule(match="stream to me", reply="alpha beta gamma delta", token_delay=0.3)
    ws = await open_socket(web)
    async with ws:
        await ws.send(json.dumps({"type": "message", "content": "please stream to me", "namespace": namespace}))
        arrivals: list[tuple[float, dict[str, Any]]] = []
        while not arrivals or arrivals[-1][1]["type"] != "done":
            arrivals.append((time.monotonic(), await recv(ws)))
    messages = [m for _, m in arrivals]
    kinds = [m["type"] for m in messages]
    assert kinds[:2] == ["start", "refs"] and kinds[-1] == "done" and set(kinds[2:-1]) == {"token"}, kinds
    assert tokens(messages) == "alpha beta gamma delta"
    token_times = [t for t, m in arrivals if m["type"] == "token"]
    # forwarded as they arrived: 0.9 s of token delays upstream, so a buffered reply would arrive at once
    assert len(token_times) == 4 and token_times[-1] - token_times[0] > 0.5
    start, refs, done = messages[0], messages[1], messages[-1]
    assert start["chat_id"] and start["namespace"] == namespace and start["commit_after"] == DEFAULT_COMMIT_AFTER
    assert refs["refs"] == [] and refs["chat_id"] == start["chat_id"]
    assert done["chat_id"] == start["chat_id"] and done["commit_after"] == DEFAULT_COMMIT_AFTER
    assert done["usage"]["completion_tokens"] == 4 and done["finish_reason"] == "stop"
    body = chat_requests(fake)[-1]["body"]
    assert body["model"] == "fake-gpt" and body["stream"] is True
    assert [m for m in body["messages"] if m["role"] == "user"] == [{"role": "user", "content": "please stream to me"}]


async def test_chat_id_continues_the_conversation(web: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    async with await open_socket(web) as ws:
        first = await ask(ws, "I am planning a trip to Kyoto.", namespace, commit_after=30)
        chat_id = first[0]["chat_id"]
        assert first[-1]["commit_after"] == 30
        second = await ask(ws, "What should I pack?", namespace, chat_id=chat_id)
        assert second[0]["chat_id"] == chat_id
        dialog = [(m["role"], m["content"]) for m in chat_requests(fake)[-1]["body"]["messages"] if m["role"] != "system"]
        assert dialog == [("user", "I am planning a trip to Kyoto."),
                          ("assistant", "Echo: I am planning a trip to Kyoto."), ("user", "What should I pack?")]
        turns = await history(ws, namespace, chat_id)
        assert [(t["seq"], t["user"], t["assistant"], t["status"]) for t in turns] == [
            (1, "I am planning a trip to Kyoto.", "Echo: I am planning a trip to Kyoto.", "complete"),
            (2, "What should I pack?", "Echo: What should I pack?", "complete")]
        assert all(t["turn_id"] and t["created_at"].endswith("Z") for t in turns)
        # the same words without chat_id start a new conversation (no implicit matching on this surface)
        again = await ask(ws, "I am planning a trip to Kyoto.", namespace)
        assert again[0]["chat_id"] != chat_id
        # conversations are scoped to the namespace and the organisation
        assert await history(ws, namespace + "-other", chat_id) == []
    async with await open_socket(web, bearer(KEY_ORG2)) as other_org:
        assert await history(other_org, namespace, chat_id) == []
        await other_org.send(json.dumps({"type": "message", "content": "hi", "namespace": namespace,
                                         "chat_id": chat_id}))
        error = await recv(other_org)
        assert error["type"] == "error" and error["code"] == "not_found"


async def test_unknown_chat_id_is_an_error(web: MemchatServer, namespace: str) -> None:
    async with await open_socket(web) as ws:
        await ws.send(json.dumps({"type": "message", "content": "hi", "namespace": namespace, "chat_id": "nope"}))
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == "not_found" and error["status"] == 404
        assert "chat_id" not in error  # nothing started: the request is over
        assert tokens(await ask(ws, "still here?", namespace)) == "Echo: still here?"


# -- robustness -------------------------------------------------------------------------------------------


BAD_MESSAGES = [
    ("{not json", "invalid_json"),
    ("[]", "invalid_message"),
    ('"message"', "invalid_message"),
    ('{"type": 5}', "invalid_message"),
    ('{"content": "hi"}', "invalid_message"),
    ('{"type": "shout", "content": "hi"}', "unknown_type"),
    ('{"type": "message"}', "invalid_request"),
    ('{"type": "message", "content": "   "}', "invalid_request"),
    ('{"type": "message", "content": 5}', "invalid_request"),
    ('{"type": "message", "content": "hi", "namespace": "a\\u0000b"}', "invalid_request"),
    ('{"type": "message", "content": "hi", "namespace": ["x"]}', "invalid_request"),
    ('{"type": "message", "content": "hi", "chat_id": "' + "x" * 200 + '"}', "invalid_request"),
    ('{"type": "message", "content": "hi", "commit_after": -1}', "invalid_request"),
    ('{"type": "message", "content": "hi", "commit_after": "10"}', "invalid_request"),
    ('{"type": "message", "content": "hi", "commit_after": true}', "invalid_request"),
    ('{"type": "history", "namespace": "x"}', "invalid_request"),
]


async def test_bad_messages_get_an_error_and_the_socket_stays_open(web: MemchatServer, namespace: str) -> None:
    async with await open_socket(web) as ws:
        for raw, code in BAD_MESSAGES:
            await ws.send(raw)
            reply = await recv(ws)
            assert reply["type"] == "error" and reply["code"] == code and reply["message"], (raw, reply)
        await ws.send(b'{"type": "ping"}')  # binary frames carry JSON too
        assert await recv(ws) == {"type": "pong"}
        assert tokens(await ask(ws, "after all that", namespace)) == "Echo: after all that"


async def test_message_over_the_size_limit_closes_1009(web: MemchatServer) -> None:
    async with await open_socket(web) as ws:
        at_limit = '{"type": "shout", "pad": "' + "é" * ((LIMIT - 27) // 2) + '"}'
        at_limit += " " * (LIMIT - len(at_limit.encode()))
        assert len(at_limit.encode()) == LIMIT
        await ws.send(at_limit)
        assert (await recv(ws))["code"] == "unknown_type"  # exactly at the limit: handled
        await ws.send(at_limit + " ")
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws)
        assert ws.close_code == 1009 and "65536" in (ws.close_reason or "")


async def test_second_message_while_streaming_is_rejected(web: MemchatServer, fake: FakeUpstream,
                                                          namespace: str) -> None:
    fake.add_rule(match="slowly", reply="one two three four five", token_delay=0.15)
    async with await open_socket(web) as ws:
        await ws.send(json.dumps({"type": "message", "content": "answer slowly", "namespace": namespace}))
        start = await recv(ws)
        assert start["type"] == "start"
        await ws.send(json.dumps({"type": "message", "content": "and another thing", "namespace": namespace}))
        rest = await until(ws, "done")
        busy = [m for m in rest if m["type"] == "error"]
        assert len(busy) == 1 and busy[0]["code"] == "busy" and "chat_id" not in busy[0]
        assert tokens(rest) == "one two three four five" and rest[-1]["chat_id"] == start["chat_id"]
        assert len(chat_requests(fake)) == 1  # the rejected message never went upstream
        assert tokens(await ask(ws, "now it is my turn", namespace)) == "Echo: now it is my turn"


async def test_stop_closes_the_upstream_and_keeps_the_partial_reply(web: MemchatServer, fake: FakeUpstream,
                                                                    namespace: str) -> None:
    fake.add_rule(match="long story", reply="w " * 100, token_delay=0.1)
    async with await open_socket(web) as ws:
        await ws.send(json.dumps({"type": "message", "content": "tell me a long story", "namespace": namespace}))
        seen = [await recv(ws) for _ in range(4)]  # start, refs, two tokens
        assert [m["type"] for m in seen] == ["start", "refs", "token", "token"]
        await ws.send(json.dumps({"type": "stop"}))
        rest = await until(ws, "done", timeout=5)
        done = rest[-1]
        assert done["stopped"] is True and done["commit_after"] == DEFAULT_COMMIT_AFTER
        streams = fake.wait_for(lambda: (s := fake.streams())["open"] == 0 and s, timeout=3)
        assert streams["streams"][-1]["state"] == "client_closed"
        [turn] = await history(ws, namespace, seen[0]["chat_id"])
        assert turn["status"] == "partial" and turn["assistant"] == tokens(seen + rest)
        assert tokens(await ask(ws, "short one", namespace)) == "Echo: short one"


async def test_disconnect_mid_stream_closes_the_upstream(web: MemchatServer, fake: FakeUpstream,
                                                         namespace: str) -> None:
    fake.add_rule(match="never ending", reply="z " * 200, token_delay=0.05)
    ws = await open_socket(web)
    await ws.send(json.dumps({"type": "message", "content": "a never ending story", "namespace": namespace}))
    start = await recv(ws)
    await until(ws, "token")
    await ws.close()
    closed_at = time.monotonic()
    streams = fake.wait_for(lambda: (s := fake.streams())["open"] == 0 and s["closed_early"] >= 1 and s, timeout=3)
    assert time.monotonic() - closed_at < 1.5
    assert streams["streams"][-1]["state"] == "client_closed" and streams["streams"][-1]["chunks_sent"] < 150
    async with await open_socket(web) as again:
        deadline = time.monotonic() + 5
        while not (turns := await history(again, namespace, start["chat_id"])) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert [t["status"] for t in turns] == ["partial"] and turns[0]["assistant"].startswith("z ")


async def test_upstream_refusal_and_mid_stream_failure(web: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.add_rule(match="refuse me", fault={"status": 429, "message": "slow down"})
    fake.add_rule(match="break me", reply="one two three four five six", fault={"drop_after": 3})
    async with await open_socket(web) as ws:
        refused = await ask(ws, "refuse me", namespace)
        assert [m["type"] for m in refused] == ["start", "refs", "error", "done"]
        error, done = refused[2], refused[3]
        assert error["status"] == 429 and error["message"] == "slow down" and error["chat_id"] == done["chat_id"]
        assert "commit_after" not in done  # nothing was recorded, so nothing will be committed
        broken = await ask(ws, "break me", namespace)
        assert tokens(broken) == "one two "
        assert broken[-2]["type"] == "error" and broken[-2]["message"] and broken[-2]["chat_id"]
        assert broken[-1]["commit_after"] == DEFAULT_COMMIT_AFTER  # the partial turn was recorded
        assert tokens(await ask(ws, "fine again", namespace)) == "Echo: fine again"


async def test_pings_arrive_periodically(web: MemchatServer) -> None:
    async with await open_socket(web) as ws:
        started = time.monotonic()
        pings = 0
        while pings < 2:
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            pings += message == {"type": "ping"}
        assert time.monotonic() - started < 4 * PING_INTERVAL + 1
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


# -- memory events ----------------------------------------------------------------------------------------


async def test_memory_committed_is_pushed_to_the_users_sockets(web: MemchatServer, fake: FakeUpstream,
                                                               namespace: str) -> None:
    fake.add_rule(match="memchat-extract", reply=json.dumps({"facts": [
        {"content": "The user's cat is called Miso.", "entities": ["Miso"], "turn": 1}]}))
    async with await open_socket(web) as ws, await open_socket(web) as watcher, \
            await open_socket(web, bearer(KEY_ORG2)) as other_org, await open_socket(web) as other_ns:
        for socket, ns in ((watcher, namespace), (other_org, namespace), (other_ns, namespace + "-b")):
            await socket.send(json.dumps({"type": "subscribe", "namespace": ns}))
            assert await recv(socket) == {"type": "subscribed", "namespace": ns}
        done = (await ask(ws, "My cat is called Miso.", namespace, commit_after=1))[-1]
        assert done["commit_after"] == 1
        for socket in (ws, watcher):
            event = await until(socket, "memory_committed", timeout=20)
            committed = event[-1]
            assert committed["chat_id"] == done["chat_id"] and committed["namespace"] == namespace
            [memory] = committed["memories"]
            assert memory["content"] == "The user's cat is called Miso." and memory["sourceThreadId"] == done["chat_id"]
        for socket in (other_org, other_ns):  # another organisation or user hears nothing
            with pytest.raises(TimeoutError):
                await until(socket, "memory_committed", timeout=1.5)
        # the refs of a later question point at the committed memory and its source conversation
        answer = await ask(ws, "What is my cat called?", namespace)
        [ref] = answer[1]["refs"]
        assert ref["id"] == memory["id"] and ref["sourceThreadId"] == done["chat_id"] and ref["sourceTurnId"]
        [turn] = await history(ws, namespace, ref["sourceThreadId"])
        assert turn["turn_id"] == ref["sourceTurnId"] and turn["user"] == "My cat is called Miso."


# -- handshake --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "origin", "query", "status"), [
    ({}, None, "", 401),
    ({"Authorization": "Bearer wrong"}, None, "", 401),
    ({}, None, f"?key={KEY_ORG1}", 401),
    ({}, None, f"?token={KEY_ORG1}&api_key={KEY_ORG1}&vai_token={KEY_ORG1}", 401),
    ({"Cookie": f"vai_token={KEY_ORG1}"}, None, "", 403),
    ({"Cookie": f"vai_token={KEY_ORG1}"}, "http://evil.example", "", 403),
    ({"Cookie": f"vai_token={KEY_ORG1}"}, "null", "", 403),
    ({"Cookie": f"vai_token={KEY_ORG1}"}, "http://127.0.0.1:1", "", 403),
    ({"Cookie": f"vai_token={KEY_ORG1}"}, "http://localhost.evil.example", "", 403),
    ({"Authorization": f"Bearer {KEY_ORG1}"}, "http://evil.example", "", 403),
    ({"Cookie": "vai_token=wrong"}, "SAME", "", 401),
])
async def test_handshake_is_refused(web: MemchatServer, headers: dict[str, str], origin: str | None, query: str,
                                    status: int) -> None:
    if origin == "SAME":
        origin = web.url
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(web, query), additional_headers=headers, origin=origin, proxy=None,  # type: ignore[arg-type]
                      open_timeout=10)
    response = refused.value.response
    assert response.status_code == status
    error = json.loads(bytes(response.body))["error"]
    assert error["message"] and error["type"] == ("authentication_error" if status == 401 else "permission_error")


async def test_two_authorization_headers_are_refused(web: MemchatServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(web), additional_headers=[("Authorization", f"Bearer {KEY_ORG1}"),
                                                       ("Authorization", f"Bearer {KEY_ORG2}")], proxy=None)
    assert refused.value.response.status_code == 401


@pytest.mark.parametrize("how", ["cookie from the page's origin", "authorization header, no origin",
                                 "raw authorization header", "x-api-key header"])
async def test_handshake_is_accepted(web: MemchatServer, namespace: str, how: str) -> None:
    headers, origin = {
        "cookie from the page's origin": ({"Cookie": f"vai_token={KEY_ORG1}"}, web.url),
        "authorization header, no origin": (bearer(), None),
        "raw authorization header": ({"Authorization": KEY_ORG1}, None),
        "x-api-key header": ({"X-API-Key": KEY_ORG1}, None),
    }[how]
    async with await open_socket(web, headers, origin) as ws:
        assert tokens(await ask(ws, "hello", namespace)) == "Echo: hello"


async def test_offline_mode(offline_server: MemchatServer, namespace: str) -> None:
    ws = await connect(ws_url(offline_server), additional_headers=bearer(), proxy=None)
    async with ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        messages = await ask(ws, "My dog is called Bruno.", namespace)
        assert tokens(messages).startswith("[offline mode]")
        assert len([m for m in messages if m["type"] == "token"]) > 5


# -- sign-in and the page ---------------------------------------------------------------------------------


def test_sign_in_sets_an_httponly_strict_cookie(web: MemchatServer, namespace: str) -> None:
    with httpx2.Client(base_url=web.url, timeout=10) as client:
        assert client.get("/auth/session").json() == {"signed_in": False}
        resp = client.post("/auth/session", json={"key": KEY_ORG1}, headers={"Origin": web.url})
        assert resp.status_code == 200 and resp.json() == {"signed_in": True, "org_id": "org1"}
        cookie = resp.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert cookie.startswith(f"vai_token={KEY_ORG1};")
        assert {"httponly", "path"} <= attributes and "samesite=strict" in cookie.lower()
        assert "secure" not in attributes  # plain http here; https adds Secure
        assert client.get("/auth/session").json() == {"signed_in": True, "org_id": "org1"}
        # the cookie is what the page's REST calls carry
        listed = client.get("/api/v1/memory", params={"namespace": namespace})
        assert listed.status_code == 200 and listed.json()["memories"] == []
        out = client.delete("/auth/session", headers={"Origin": web.url})
        assert out.status_code == 204 and "max-age=0" in out.headers["set-cookie"].lower()
        assert client.get("/auth/session").json() == {"signed_in": False}
        assert client.get("/api/v1/memory", params={"namespace": namespace}).status_code == 401


@pytest.mark.parametrize(("body", "headers", "status", "error_type"), [
    ({"key": "wrong"}, {}, 401, "authentication_error"),
    ({"key": ""}, {}, 400, "invalid_request_error"),
    ({"secret": KEY_ORG1}, {}, 400, "invalid_request_error"),
    ("{not json", {}, 400, "invalid_request_error"),
    ({"key": KEY_ORG1}, {"Origin": "http://evil.example"}, 403, "permission_error"),
])
def test_sign_in_errors(web: MemchatServer, body: Any, headers: dict[str, str], status: int, error_type: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    resp = httpx2.post(f"{web.url}/auth/session", content=content, timeout=10,
                       headers={"Content-Type": "application/json", **headers})
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["type"] == error_type and resp.json()["error"]["message"]
    assert "set-cookie" not in resp.headers


def test_stale_cookie_is_cleared_and_cross_origin_sign_out_refused(web: MemchatServer) -> None:
    resp = httpx2.get(f"{web.url}/auth/session", headers={"Cookie": "vai_token=revoked-or-wrong"})
    assert resp.json() == {"signed_in": False} and "max-age=0" in resp.headers["set-cookie"].lower()
    resp = httpx2.delete(f"{web.url}/auth/session", headers={"Origin": "http://evil.example"})
    assert resp.status_code == 403 and "set-cookie" not in resp.headers


def test_page_and_static_files(web: MemchatServer) -> None:
    page = httpx2.get(f"{web.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/web/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for name, kind in [("app.js", "javascript"), ("socket.js", "javascript"), ("api.js", "javascript"),
                       ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")]:
        resp = httpx2.get(f"{web.url}/web/{name}")
        assert resp.status_code == 200 and kind in resp.headers["content-type"], name
    assert "http://" not in httpx2.get(f"{web.url}/web/style.css").text  # nothing from the network: works offline
    assert httpx2.get(f"{web.url}/web/../pyproject.toml").status_code == 404
    assert httpx2.get(f"{web.url}/web/%2e%2e/pyproject.toml").status_code == 404
