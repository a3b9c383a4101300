"""The OpenAI-compatible proxy, end to end (real memchat process, real fake upstream, real SDK)."""

from __future__ import annotations

import json
import time

import httpx2
import openai
import pytest

from app.testkit import FakeUpstream, MemchatServer, raw_request
from tests.conftest import KEY_ORG1

pytestmark = pytest.mark.usefixtures("clean_fake")


def sdk(server: MemchatServer, key: str = KEY_ORG1) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=key, max_retries=0, timeout=30)


def async_sdk(server: MemchatServer, key: str = KEY_ORG1) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=key, max_retries=0, timeout=30)


def last_chat_request(fake: FakeUpstream) -> dict:
    reqs = [r for r in fake.requests() if r["path"].endswith("/chat/completions")]
    assert reqs, "the fake upstream received no chat request"
    return reqs[-1]


USER_HELLO = [{"role": "user", "content": "hello brave new world"}]


def test_sync_non_stream_matches_upstream(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    client = sdk(server)
    raw = client.chat.completions.with_raw_response.create(
        model="fake-gpt", messages=USER_HELLO, extra_query={"namespace": namespace})
    completion = raw.parse()
    assert completion.choices[0].message.content == "Echo: hello brave new world"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    memory = completion.model_extra["memory"]
    assert memory["refs"] == [] and memory["chat_id"]
    assert raw.headers["x-memchat-chat-id"] == memory["chat_id"]
    assert raw.headers["x-memchat-memories"] == "0"


def test_sync_stream_token_for_token(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.set_config(reply="one two three four five")
    client = sdk(server)
    stream = client.chat.completions.create(model="fake-gpt", messages=USER_HELLO, stream=True,
                                            extra_query={"namespace": namespace})
    chunks = list(stream)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["one ", "two ", "three ", "four ", "five"]
    assert chunks[0].model_extra["memory"]["chat_id"]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_stream_and_non_stream(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    client = async_sdk(server)
    completion = await client.chat.completions.create(model="fake-gpt", messages=USER_HELLO,
                                                      extra_query={"namespace": namespace})
    assert completion.choices[0].message.content == "Echo: hello brave new world"
    stream = await client.chat.completions.create(model="fake-gpt", messages=USER_HELLO, stream=True,
                                                  extra_query={"namespace": namespace})
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Echo: hello brave new world"
    await client.close()


def test_every_body_field_is_forwarded_unchanged(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                                "parameters": {"type": "object", "properties": {}}}}]
    client = sdk(server)
    client.chat.completions.create(
        model="fake-gpt", messages=USER_HELLO, temperature=0.3, seed=7, user="end-user-9", n=1, top_p=0.9,
        tools=tools, tool_choice="auto", response_format={"type": "text"}, max_tokens=50,
        metadata={"trace": "abc"}, extra_body={"custom_vendor_field": {"x": [1, 2]}},
        extra_query={"namespace": namespace})
    body = last_chat_request(fake)["body"]
    assert body["temperature"] == 0.3 and body["seed"] == 7 and body["user"] == "end-user-9"
    assert body["n"] == 1 and body["top_p"] == 0.9 and body["max_tokens"] == 50
    assert body["tools"] == tools and body["tool_choice"] == "auto"
    assert body["response_format"] == {"type": "text"}
    assert body["metadata"] == {"trace": "abc"}
    assert body["custom_vendor_field"] == {"x": [1, 2]}
    assert body["messages"][-1] == USER_HELLO[0]
    headers = last_chat_request(fake)["headers"]
    assert headers["authorization"] == "Bearer upstream-secret"


def test_upstream_sees_the_sdk_identity_and_uncompressed_streams(server: MemchatServer, fake: FakeUpstream,
                                                                  namespace: str) -> None:
    """The hot path posts pre-encoded bytes, but with the headers the openai SDK itself would send."""
    client = sdk(server)
    list(client.chat.completions.create(model="fake-gpt", messages=USER_HELLO, stream=True,
                                        extra_query={"namespace": namespace}))
    headers = last_chat_request(fake)["headers"]
    assert headers["user-agent"] == f"AsyncOpenAI/Python {openai.__version__}"
    assert headers["x-stainless-lang"] == "python" and headers["x-stainless-retry-count"] == "0"
    assert headers["content-type"] == "application/json"
    assert headers["accept-encoding"] == "identity"      # an SSE stream must not be compressed
    client.chat.completions.create(model="fake-gpt", messages=USER_HELLO, extra_query={"namespace": namespace})
    assert last_chat_request(fake)["headers"]["accept-encoding"] != "identity"


def test_tool_calls_and_usage_chunk_arrive_intact(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    client = sdk(server)
    stream = client.chat.completions.create(
        model="fake-gpt", messages=USER_HELLO, tools=tools, stream=True, stream_options={"include_usage": True},
        extra_body={"fake": {"tool_call": {"name": "lookup", "arguments": '{"city": "Lyon", "days": 3}'}}},
        extra_query={"namespace": namespace})
    chunks = list(stream)
    name, args, finish = None, "", None
    for chunk in chunks:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name = call.function.name or name
                args += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "lookup" and json.loads(args) == {"city": "Lyon", "days": 3}
    assert finish == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_429_is_rate_limit_error(server: MemchatServer, fake: FakeUpstream, stream: bool) -> None:
    client = sdk(server)
    with pytest.raises(openai.RateLimitError) as info:
        result = client.chat.completions.create(model="fake-gpt", messages=USER_HELLO, stream=stream,
                                                extra_body={"fake": {"fault": {"status": 429}}})
        list(result) if stream else None
    assert info.value.status_code == 429
    assert "Rate limit" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_500_is_502(server: MemchatServer, fake: FakeUpstream, stream: bool) -> None:
    client = sdk(server)
    with pytest.raises(openai.APIStatusError) as info:
        result = client.chat.completions.create(model="fake-gpt", messages=USER_HELLO, stream=stream,
                                                extra_body={"fake": {"fault": {"status": 500}}})
        list(result) if stream else None
    assert info.value.status_code == 502
    assert info.value.body["type"] == "upstream_error"


def test_upstream_400_passes_through(server: MemchatServer, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server).chat.completions.create(model="fake-gpt", messages=USER_HELLO,
                                            extra_body={"fake": {"fault": {"status": 400, "message": "bad thing"}}})
    assert info.value.status_code == 400 and "bad thing" in info.value.message


@pytest.mark.timeout(30)
def test_mid_stream_drop_is_an_sdk_error(server: MemchatServer, fake: FakeUpstream) -> None:
    client = sdk(server)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
                model="fake-gpt", messages=USER_HELLO, stream=True,
                extra_body={"fake": {"reply": "a b c d e f g h", "fault": {"drop_after": 3}}}):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["a ", "b "]  # the role chunk counts as one of the three
    assert "upstream" in info.value.message


def test_upstream_refused_is_502(tmp_path, namespace: str) -> None:
    from app.testkit import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = {"MEMCHAT_UPSTREAM_BASE_URL": dead, "MEMCHAT_API_KEYS": f"{KEY_ORG1}=org1"}
    with MemchatServer(tmp_path / "data", env=env) as srv:
        with pytest.raises(openai.APIStatusError) as info:
            sdk(srv).chat.completions.create(model="m", messages=USER_HELLO, stream=True)
        assert info.value.status_code == 502
        ready = httpx2.get(f"{srv.url}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["upstream"] is False


def test_stream_is_not_buffered(server: MemchatServer, fake: FakeUpstream) -> None:
    client = sdk(server)
    arrivals: list[float] = []
    start = time.monotonic()
    for chunk in client.chat.completions.create(
            model="fake-gpt", messages=USER_HELLO, stream=True,
            extra_body={"fake": {"tokens": 10, "token_delay": 0.1}}):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 10
    # Tokens are produced 100 ms apart: the first must arrive long before the last is produced.
    assert arrivals[-1] - arrivals[0] >= 0.6
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert sum(1 for gap in gaps if gap >= 0.05) >= 7


def test_client_disconnect_closes_upstream(server: MemchatServer, fake: FakeUpstream) -> None:
    body = {"model": "fake-gpt", "messages": USER_HELLO, "stream": True,
            "fake": {"tokens": 50, "token_delay": 0.2}}
    with httpx2.Client(timeout=10) as client:
        with client.stream("POST", f"{server.openai_base_url}/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {KEY_ORG1}"}) as resp:
            assert resp.status_code == 200
            frames = 0
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    frames += 1
                if frames >= 2:
                    break
    closed_at = time.monotonic()
    streams = fake.wait_for(lambda: (s := fake.streams())["open"] == 0 and s["closed_early"] >= 1 and s,
                            timeout=3)
    assert time.monotonic() - closed_at < 1.5
    assert streams["streams"][-1]["state"] == "client_closed"
    assert streams["streams"][-1]["chunks_sent"] < 50


@pytest.mark.parametrize("headers,cookies", [
    ({"Authorization": f"Bearer {KEY_ORG1}"}, {}),
    ({"Authorization": KEY_ORG1}, {}),
    ({"X-API-Key": KEY_ORG1}, {}),
    ({}, {"vai_token": KEY_ORG1}),
])
def test_all_key_forms_work(server: MemchatServer, fake: FakeUpstream, headers: dict, cookies: dict) -> None:
    resp = httpx2.post(f"{server.openai_base_url}/chat/completions", headers=headers, cookies=cookies,
                       json={"model": "fake-gpt", "messages": USER_HELLO})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "Echo: hello brave new world"


@pytest.mark.parametrize("headers", [
    [],
    [(b"Authorization", b"Bearer wrong-key")],
    [(b"Authorization", b"Bearer")],
    [(b"Authorization", b"Bearer   ")],
    [(b"Authorization", b"Basic dXNlcjpwYXNz")],
    [(b"X-API-Key", b"x" * 10_000)],
    [(b"Authorization", "Bearer ".encode() + "é".encode("utf-8") * 50)],
    [(b"Authorization", b"Bearer \xff\xfe\x80")],
    [(b"X-API-Key", b"' OR '1'='1")],
    [(b"Authorization", b"Bearer test-key-org1\x00")],
    [(b"Cookie", b"vai_token=%00%ff; other=\"x")],
    [(b"Authorization", b"Bearer test-key-org1"), (b"Authorization", b"Bearer test-key-org2")],
])
def test_bad_keys_are_401_in_openai_shape(server: MemchatServer, headers: list) -> None:
    body = json.dumps({"model": "fake-gpt", "messages": USER_HELLO}).encode()
    status, _, payload = raw_request(server.port, "POST", "/v1/memory/chat/completions",
                                     [(b"Content-Type", b"application/json"), *headers], body)
    assert status in (400, 401), payload
    if status == 401:
        assert payload["error"]["type"] == "authentication_error" and payload["error"]["message"]
    else:  # the HTTP server itself refused a malformed header line
        assert payload is None or isinstance(payload, bytes) or "error" in payload


def test_sdk_sees_authentication_error(server: MemchatServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(server, key="nope").chat.completions.create(model="fake-gpt", messages=USER_HELLO)


@pytest.mark.parametrize("raw,param", [
    (b"{not json", None),
    (b"", None),
    (b"[1, 2]", None),
    (b'{"model": "m"}', "messages"),
    (b'{"model": "m", "messages": []}', "messages"),
    (b'{"model": "m", "messages": "hi"}', "messages"),
    (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    (b'{"model": "m", "messages": [{"content": "x"}]}', "messages[0].role"),
    (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
    (b'{"model": "m", "messages": [{"role": "user"}]}', "messages[0].content"),
    (b'{"model": 3, "messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}', "stream"),
])
def test_invalid_bodies_are_400(server: MemchatServer, fake: FakeUpstream, raw: bytes, param: str | None) -> None:
    resp = httpx2.post(f"{server.openai_base_url}/chat/completions", content=raw,
                       headers={"Authorization": f"Bearer {KEY_ORG1}", "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert not [r for r in fake.requests() if r["path"].endswith("/chat/completions")]


@pytest.mark.parametrize("query,param", [
    ("commit_after=abc", "commit_after"),
    ("commit_after=-1", "commit_after"),
    ("namespace=" + "n" * 300, "namespace"),
    ("namespace=a%00b", "namespace"),
    ("namespace=a%0Ab", "namespace"),
    ("chat_id=" + "c" * 200, "chat_id"),
])
def test_invalid_query_params_are_400(server: MemchatServer, query: str, param: str) -> None:
    resp = httpx2.post(f"{server.openai_base_url}/chat/completions?{query}",
                       headers={"Authorization": f"Bearer {KEY_ORG1}"},
                       json={"model": "m", "messages": USER_HELLO})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_oversized_body_is_413(server: MemchatServer) -> None:
    resp = httpx2.post(f"{server.openai_base_url}/chat/completions",
                       headers={"Authorization": f"Bearer {KEY_ORG1}"},
                       json={"model": "m", "messages": [{"role": "user", "content": "x" * 5_000_000}]})
    assert resp.status_code == 413
    assert "error" in resp.json()


def test_models_are_proxied(server: MemchatServer, fake: FakeUpstream) -> None:
    client = sdk(server)
    ids = {m.id for m in client.models.list()}
    assert "fake-gpt" in ids
    plain = httpx2.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY_ORG1}"})
    assert plain.status_code == 200 and "fake-gpt" in {m["id"] for m in plain.json()["data"]}
    assert httpx2.get(f"{server.url}/v1/models").status_code == 401


def test_unknown_route_and_method(server: MemchatServer) -> None:
    resp = httpx2.get(f"{server.url}/v1/nothing-here", headers={"Authorization": f"Bearer {KEY_ORG1}"})
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
    resp = httpx2.get(f"{server.openai_base_url}/chat/completions", headers={"Authorization": f"Bearer {KEY_ORG1}"})
    assert resp.status_code == 405 and "error" in resp.json()


def test_health(server: MemchatServer) -> None:
    assert httpx2.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx2.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["upstream"] is True


def test_offline_mode(offline_server: MemchatServer) -> None:
    client = sdk(offline_server)
    assert [m.id for m in client.models.list()] == ["memchat-offline"]
    stream = client.chat.completions.create(model="anything", messages=USER_HELLO, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[offline mode]") and "hello brave new world" in text
    assert all(c.model == "memchat-offline" for c in chunks)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5
    completion = client.chat.completions.create(model="anything", messages=USER_HELLO)
    assert completion.choices[0].message.content == text
    assert "OFFLINE MODE" in offline_server.log_text()
