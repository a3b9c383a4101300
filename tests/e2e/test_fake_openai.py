"""End-to-end tests for scripts/fake_openai.py, via the real openai SDK."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.request

import anyio
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from app.testkit import FakeUpstream, FakeUpstreamError, free_port

TOKEN_RE = re.compile(r"\S+\s*|\s+")
MODEL = "fake-gpt"


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()
    yield


@pytest.fixture
def client(fake):
    c = OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=10)
    yield c
    c.close()


def user(text):
    return [{"role": "user", "content": text}]


def collect(stream):
    """Return (content_deltas, chunks) for a sync stream."""
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    return deltas, chunks


def raw_request(fake, method, path, data=None):
    req = urllib.request.Request(fake.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# --------------------------------------------------------------------------- chat basics


def test_non_stream_echo(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "hello there world"},
        ],
    )
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    assert r.system_fingerprint == "fp_fake"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "Echo: hello there world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 4
    assert r.usage.prompt_tokens == 2 + 2 + 2 + 3
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_echo_token_for_token(client):
    text = "the  quick brown\nfox"
    stream = client.chat.completions.create(model="other-model", messages=user(text), stream=True)
    deltas, chunks = collect(stream)
    assert deltas == TOKEN_RE.findall("Echo: " + text)
    assert "".join(deltas) == "Echo: " + text
    first = chunks[0]
    assert first.object == "chat.completion.chunk"
    assert first.model == "other-model"
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert all(c.id == first.id for c in chunks)
    # one chunk per token, then the finish chunk; no usage chunk unless asked
    assert len(chunks) == 1 + len(deltas) + 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].delta.content is None
    assert all(c.usage is None for c in chunks)
    # non-stream gives the same text
    r = client.chat.completions.create(model=MODEL, messages=user(text))
    assert r.choices[0].message.content == "".join(deltas)


def test_raw_sse_wire_format(fake):
    body = json.dumps({"model": MODEL, "stream": True, "messages": user("hi")}).encode()
    req = urllib.request.Request(fake.base_url + "/chat/completions", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["content-type"] == "text/event-stream"
        raw = r.read().decode()
    frames = raw.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    objs = [json.loads(f[len("data: "):]) for f in frames[:-2]]
    assert all(f.startswith("data: ") for f in frames[:-1])
    assert objs[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": "", "refusal": None},
        "logprobs": None,
        "finish_reason": None,
    }
    assert [o["choices"][0]["delta"].get("content") for o in objs[1:-1]] == ["Echo: ", "hi"]
    assert objs[-1]["choices"][0]["delta"] == {} and objs[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in o for o in objs)


def test_content_parts(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "part one "},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "part two"},
                ],
            }
        ],
    )
    assert r.choices[0].message.content == "Echo: part one part two"


def test_tokens_n(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=user("x"), stream=True, extra_body={"fake": {"tokens": 7}}
    )
    deltas, _ = collect(stream)
    assert deltas == ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 ", "tok5 ", "tok6"]

    r = client.chat.completions.create(
        model=MODEL, messages=user("x"), extra_body={"fake": {"reply": "a b", "tokens": 5}}
    )
    assert r.choices[0].message.content == "a b a b a "
    assert r.usage.completion_tokens == 5

    r = client.chat.completions.create(
        model=MODEL, messages=user("x"), extra_body={"fake": {"reply": "one two three four", "tokens": 2}}
    )
    assert r.choices[0].message.content == "one two "


def test_max_tokens_truncates(client):
    r = client.chat.completions.create(
        model=MODEL, messages=user("x"), max_completion_tokens=3, extra_body={"fake": {"tokens": 10}}
    )
    assert r.choices[0].message.content == "tok0 tok1 tok2 "
    assert r.choices[0].finish_reason == "length"


async def test_stream_include_usage_async(fake):
    async with AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=10) as ac:
        stream = await ac.chat.completions.create(
            model=MODEL,
            messages=user("count these words"),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == "Echo: count these words"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(deltas) == 4
    assert last.usage.prompt_tokens == 3
    assert last.usage.total_tokens == 7
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


async def test_concurrent_async_streams(fake):
    async with AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=10) as ac:
        results = {}

        async def one(i):
            s = await ac.chat.completions.create(
                model=MODEL, messages=user(f"msg {i}"), stream=True, extra_body={"fake": {"token_delay": 0.01}}
            )
            results[i] = "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    assert results == {i: f"Echo: msg {i}" for i in range(20)}
    st = fake.streams()
    assert st["opened"] == 20 and st["completed"] == 20 and st["open"] == 0


# --------------------------------------------------------------------------- tool calls

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tool_call_streaming(client):
    args = '{"city": "Paris", "unit": "celsius"}'
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user("weather?"),
        tools=[WEATHER_TOOL],
        stream=True,
        extra_body={"fake": {"tool_call": {"name": "get_weather", "arguments": args}}},
    )
    chunks = list(stream)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    tc0 = first.tool_calls[0]
    assert tc0.index == 0 and tc0.id.startswith("call_") and tc0.type == "function"
    assert tc0.function.name == "get_weather" and tc0.function.arguments == ""

    frags = [c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-1]]
    assert len(frags) >= 2
    assert all(c.choices[0].delta.tool_calls[0].index == 0 for c in chunks[1:-1])
    assert "".join(frags) == args
    assert json.loads("".join(frags)) == {"city": "Paris", "unit": "celsius"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(c.choices[0].delta.content in (None, "") for c in chunks)


def test_tool_call_non_stream_and_tool_choice(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=user("weather?"),
        tools=[WEATHER_TOOL],
        extra_body={"fake": {"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}},
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert msg.content is None
    assert msg.tool_calls[0].function.name == "get_weather"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Oslo"}

    # not configured: tool_choice naming a function -> call it with {}
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user("weather?"),
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.tool_calls[0].function.name == "get_weather"
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[1:-1] if c.choices[0].delta.tool_calls
    )
    assert args == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # tool_call configured but the request has no tools -> plain text reply
    r = client.chat.completions.create(
        model=MODEL, messages=user("hi"), extra_body={"fake": {"tool_call": {"name": "get_weather"}}}
    )
    assert r.choices[0].message.content == "Echo: hi" and r.choices[0].message.tool_calls is None


def test_response_format_accepted(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=user("give json"),
        response_format={"type": "json_object"},
        extra_body={"fake": {"reply": '{"ok": true}'}},
    )
    assert json.loads(r.choices[0].message.content) == {"ok": True}


# --------------------------------------------------------------------------- config, rules, overrides


def test_precedence_override_rule_default(fake, client):
    fake.set_config(reply="server default")
    assert client.chat.completions.create(model=MODEL, messages=user("x")).choices[0].message.content == (
        "server default"
    )
    fake.add_rule(match="MAGIC", reply="from rule")
    r = client.chat.completions.create(model=MODEL, messages=user("has MAGIC inside"))
    assert r.choices[0].message.content == "from rule"
    r = client.chat.completions.create(
        model=MODEL, messages=user("has MAGIC inside"), extra_body={"fake": {"reply": "per request"}}
    )
    assert r.choices[0].message.content == "per request"
    # keys merge: rule reply + request tokens
    r = client.chat.completions.create(
        model=MODEL, messages=user("has MAGIC inside"), extra_body={"fake": {"tokens": 4}}
    )
    assert r.choices[0].message.content == "from rule from rule"
    # reset restores CLI defaults and clears rules
    fake.reset()
    assert fake.rules() == []
    r = client.chat.completions.create(model=MODEL, messages=user("has MAGIC inside"))
    assert r.choices[0].message.content == "Echo: has MAGIC inside"


def test_rules_match_times_and_order(fake, client):
    fake.add_rule(match="Extract memories", reply='{"memories": ["likes tea"]}', times=2)
    fake.add_rule(match="Extract", reply="second rule")
    fake.add_rule(match="system-only marker", reply="matched system")

    def ask(msgs):
        return client.chat.completions.create(model=MODEL, messages=msgs).choices[0].message.content

    msgs = [{"role": "system", "content": "Extract memories from the conversation"}, *user("I like tea")]
    assert ask(msgs) == '{"memories": ["likes tea"]}'
    assert ask(msgs) == '{"memories": ["likes tea"]}'
    # exhausted -> next matching rule wins
    assert ask(msgs) == "second rule"
    assert ask(user("unrelated")) == "Echo: unrelated"
    assert ask([{"role": "system", "content": "a system-only marker"}, *user("q")]) == "matched system"
    rules = fake.rules()
    assert [r["match"] for r in rules] == ["Extract", "system-only marker"]
    assert rules[0]["hits"] == 1
    fake.clear_rules()
    assert ask(msgs) == "Echo: I like tea"


def test_bad_fake_key_is_400(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, messages=user("x"), extra_body={"fake": {"replyy": "typo"}})
    assert "replyy" in ei.value.message


# --------------------------------------------------------------------------- faults


def test_rate_limit_429(fake, client):
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(
            model=MODEL, messages=user("x"), extra_body={"fake": {"fault": {"status": 429, "message": "slow down"}}}
        )
    e = ei.value
    assert e.status_code == 429
    assert e.body == {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    assert len(fake.requests()) == 1  # max_retries=0: no retry


def test_server_error_500_stream_and_non_stream(fake, client):
    fake.set_config(fault={"status": 500})
    with pytest.raises(openai.InternalServerError) as ei:
        client.chat.completions.create(model=MODEL, messages=user("x"))
    assert ei.value.status_code == 500
    assert ei.value.body["type"] == "server_error"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=user("x"), stream=True)
    # a per-request null fault overrides the server default
    r = client.chat.completions.create(model=MODEL, messages=user("x"), extra_body={"fake": {"fault": None}})
    assert r.choices[0].message.content == "Echo: x"


def test_sdk_retries_by_default(fake):
    fake.add_rule(match="retry me", fault={"status": 500, "retry_after": 0.01}, times=1)
    with OpenAI(base_url=fake.base_url, api_key="x", timeout=10) as c:  # default max_retries (2)
        r = c.chat.completions.create(model=MODEL, messages=user("retry me"))
    assert r.choices[0].message.content == "Echo: retry me"
    reqs = fake.requests()
    assert len(reqs) == 2
    assert reqs[1]["headers"].get("x-stainless-retry-count") == "1"


@pytest.mark.timeout(15)
def test_drop_after_sync(fake, client):
    stream = client.chat.completions.create(
        model=MODEL, messages=user("x"), stream=True, extra_body={"fake": {"tokens": 20, "fault": {"drop_after": 3}}}
    )
    got = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 3  # role chunk + 2 content chunks
    assert [c.choices[0].delta.content for c in got[1:]] == ["tok0 ", "tok1 "]
    st = fake.wait_for(lambda: (s := fake.streams()) and s["streams"] and s["streams"][-1]["state"] != "open" and s)
    assert st["streams"][-1]["state"] == "dropped"
    assert st["streams"][-1]["chunks_sent"] == 3
    assert st["dropped"] == 1 and st["closed_early"] == 0


@pytest.mark.timeout(15)
async def test_drop_after_async(fake):
    async with AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=10) as ac:
        stream = await ac.chat.completions.create(
            model=MODEL, messages=user("x"), stream=True, extra_body={"fake": {"fault": {"drop_after": 1}}}
        )
        got = []
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                got.append(chunk)
    assert len(got) == 1


@pytest.mark.timeout(15)
def test_end_after_ends_cleanly_without_done(fake, client):
    # clean end of the HTTP body without finish chunk / [DONE]: the SDK just stops
    stream = client.chat.completions.create(
        model=MODEL, messages=user("x"), stream=True, extra_body={"fake": {"tokens": 20, "fault": {"end_after": 3}}}
    )
    chunks = list(stream)
    assert len(chunks) == 3
    assert all(c.choices[0].finish_reason is None for c in chunks)
    st = fake.wait_for(lambda: (s := fake.streams()) and s["streams"][-1]["state"] != "open" and s)
    assert st["streams"][-1]["state"] == "ended_early" and st["ended_early"] == 1


@pytest.mark.timeout(15)
def test_drop_non_stream(client):
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=user("x"), extra_body={"fake": {"fault": {"drop_after": 0}}})


def test_stall_before_headers(fake, client):
    t0 = time.monotonic()
    r = client.chat.completions.create(model=MODEL, messages=user("x"), extra_body={"fake": {"fault": {"stall": 0.4}}})
    assert time.monotonic() - t0 >= 0.38
    assert r.choices[0].message.content == "Echo: x"
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(
            model=MODEL, messages=user("x"), timeout=0.2, extra_body={"fake": {"fault": {"stall": 3}}}
        )


def test_stall_after_and_delays(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user("x"),
        stream=True,
        extra_body={"fake": {"tokens": 6, "first_token_delay": 0.25, "token_delay": 0.05, "fault": {"stall_after": 3, "stall": 0.4}}},
    )
    t0 = time.monotonic()
    times = []
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            times.append(time.monotonic() - t0)
    assert len(times) == 6
    # Lower bounds only (the server never sends early; a loaded client may read late).
    # token k is due at 0.25 + k*0.05, except that after 3 chunks (role + 2 tokens)
    # the 0.4 s stall pushes token 2 to >= 0.25 + 0.05 + 0.4 and the rest follow it.
    eps = 0.03
    expected = [0.25, 0.30, 0.70, 0.75, 0.80, 0.85]
    assert all(t >= e - eps for t, e in zip(times, expected)), times
    assert times[2] - times[1] >= 0.4 - eps, times
    assert times[-1] < 3.0, times


# --------------------------------------------------------------------------- embeddings


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_float_base64_and_similarity(fake, client):
    docs = ["the cat sat on the mat", "a cat lying on a mat", "stock market prices fell sharply"]
    r = client.embeddings.create(model="fake-embedding", input=docs, encoding_format="float")
    assert r.object == "list" and r.model == "fake-embedding"
    assert [d.index for d in r.data] == [0, 1, 2]
    vecs = [d.embedding for d in r.data]
    assert all(len(v) == 256 for v in vecs)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-9 for v in vecs)
    assert r.usage.prompt_tokens == 6 + 6 + 5 and r.usage.total_tokens == r.usage.prompt_tokens

    q = client.embeddings.create(model="fake-embedding", input="cat on the mat", encoding_format="float")
    qv = q.data[0].embedding
    sims = [cos(qv, v) for v in vecs]
    assert sims[0] > sims[1] > sims[2]
    assert sims[2] < 0.3

    # SDK default: asks for base64, decodes float32 -> same vector within float32 precision
    b = client.embeddings.create(model="fake-embedding", input=docs)
    assert fake.requests()[-1]["body"]["encoding_format"] == "base64"
    for v_b64, v_f in zip((d.embedding for d in b.data), vecs):
        assert len(v_b64) == 256
        assert max(abs(x - y) for x, y in zip(v_b64, v_f)) < 1e-6

    # deterministic
    again = client.embeddings.create(model="fake-embedding", input=docs[0], encoding_format="float")
    assert again.data[0].embedding == vecs[0]


def test_embeddings_dimensions_errors_faults(fake, client):
    r = client.embeddings.create(model="fake-embedding", input="hello", dimensions=64, encoding_format="float")
    assert len(r.data[0].embedding) == 64
    fake.set_config(embedding_dim=32)
    assert len(client.embeddings.create(model="e", input="hello").data[0].embedding) == 32
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="e", input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="e", input="")
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="e", input="x", extra_body={"fake": {"fault": {"status": 503}}})
    fake.add_rule(match="poison", endpoint="embeddings", fault={"status": 429}, times=1)
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="e", input=["ok", "poison pill"])
    assert len(client.embeddings.create(model="e", input=["ok", "poison pill"]).data) == 2


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "fake-gpt" in ids and len(ids) >= 2
    assert client.models.retrieve("fake-gpt").owned_by == "fake"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


# --------------------------------------------------------------------------- disconnects


def _wait_client_closed(fake, timeout=1.0):
    t0 = time.monotonic()
    st = fake.wait_for(
        lambda: (s := fake.streams()) and s["streams"] and s["streams"][-1]["state"] != "open" and s, timeout=timeout
    )
    return st, time.monotonic() - t0


@pytest.mark.timeout(20)
def test_disconnect_detection_sync(fake, client):
    stream = client.chat.completions.create(
        model=MODEL, messages=user("x"), stream=True, extra_body={"fake": {"tokens": 50, "token_delay": 0.2}}
    )
    it = iter(stream)
    next(it)
    next(it)
    assert fake.streams()["open"] == 1
    stream.close()
    st, elapsed = _wait_client_closed(fake, timeout=1.0)
    assert elapsed < 1.0
    rec = st["streams"][-1]
    assert rec["state"] == "client_closed"
    assert rec["chunks_sent"] < 10
    assert st["open"] == 0 and st["closed_early"] == 1 and st["completed"] == 0


@pytest.mark.timeout(20)
async def test_disconnect_detection_async_during_first_token_delay(fake):
    async with AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=10) as ac:
        stream = await ac.chat.completions.create(
            model=MODEL, messages=user("x"), stream=True, extra_body={"fake": {"first_token_delay": 30}}
        )
        first = await stream.__anext__()
        assert first.choices[0].delta.role == "assistant"
        await stream.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            st = await anyio.to_thread.run_sync(fake.streams)
            if st["streams"][-1]["state"] != "open":
                break
            await anyio.sleep(0.02)
    assert st["streams"][-1]["state"] == "client_closed"
    assert st["streams"][-1]["chunks_sent"] == 1


# --------------------------------------------------------------------------- introspection & errors


def test_introspection_records_requests(fake, client):
    client.chat.completions.create(
        model=MODEL, messages=user("recorded"), extra_body={"fake": {"reply": "r"}}, extra_headers={"X-Custom": "Yes"}
    )
    client.embeddings.create(model="e", input="emb")
    fake.streams()  # control endpoints are not recorded
    reqs = fake.requests()
    assert [(r["method"], r["path"]) for r in reqs] == [("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")]
    chat = reqs[0]
    assert chat["body"]["messages"] == user("recorded")
    assert chat["body"]["fake"] == {"reply": "r"}
    assert chat["headers"]["authorization"] == "Bearer x"
    assert chat["headers"]["x-custom"] == "Yes"
    assert isinstance(chat["time"], float) and abs(chat["time"] - time.time()) < 60
    assert [r["path"] for r in fake.requests(path="embeddings")] == ["/v1/embeddings"]
    fake.clear_requests()
    assert fake.requests() == []


def test_error_shapes(fake):
    status, body = raw_request(fake, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    status, body = raw_request(fake, "GET", "/v1/nope")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    status, body = raw_request(fake, "POST", "/v1/chat/completions", json.dumps({"model": MODEL}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    # invalid JSON is still recorded, with body null
    assert fake.requests()[0]["body"] is None


@pytest.mark.timeout(20)
def test_no_tracebacks_in_server_log(fake, client):
    raw_request(fake, "POST", "/v1/chat/completions", b"[1, 2")
    raw_request(fake, "POST", "/v1/embeddings", b'"just a string"')
    raw_request(fake, "POST", "/_fake/rules", b'{"bogus": 1}')
    with pytest.raises(openai.APIConnectionError):
        for _ in client.chat.completions.create(
            model=MODEL, messages=user("x"), stream=True, extra_body={"fake": {"fault": {"drop_after": 2}}}
        ):
            pass
    s = client.chat.completions.create(
        model=MODEL, messages=user("x"), stream=True, extra_body={"fake": {"tokens": 50, "token_delay": 0.05}}
    )
    next(iter(s))
    s.close()
    _wait_client_closed(fake)
    err = fake._stderr_text()
    assert "Traceback" not in err and "ERROR" not in err, err


# --------------------------------------------------------------------------- launcher


def test_launcher_cli_defaults_and_port_file(tmp_path):
    port_file = tmp_path / "port"
    with FakeUpstream("--reply", "cli reply", "--tokens", "3", "--port-file", str(port_file)) as f:
        assert int(port_file.read_text()) == f.port
        with OpenAI(base_url=f.base_url, api_key="x", max_retries=0) as c:
            assert c.chat.completions.create(model=MODEL, messages=user("x")).choices[0].message.content == (
                "cli reply cli "
            )
            f.set_config(reply="changed")
            f.reset()
            assert c.chat.completions.create(model=MODEL, messages=user("x")).choices[0].message.content == (
                "cli reply cli "
            )
        proc = f.proc
    assert proc.poll() is not None  # stopped


def test_launcher_reports_stderr_on_failure():
    with pytest.raises(FakeUpstreamError, match="unrecognized arguments"):
        FakeUpstream("--bogus-flag").start()
    port = free_port()
    assert isinstance(port, int) and port > 0
