"""The Responses API surface, end to end (real memchat process, the fake upstream's /v1/responses, real SDK)."""

from __future__ import annotations

import time

import httpx2
import openai
import pytest

from app.testkit import FakeUpstream, MemchatServer
from tests.conftest import KEY_ORG1, KEY_ORG2

pytestmark = pytest.mark.usefixtures("clean_fake")
H1 = {"Authorization": f"Bearer {KEY_ORG1}"}
DOG = "My dog's name is Bruno and he is a beagle."


def sdk(server: MemchatServer, key: str = KEY_ORG1) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=key, max_retries=0, timeout=30)


def async_sdk(server: MemchatServer, key: str = KEY_ORG1) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=key, max_retries=0, timeout=30)


def responses_requests(fake: FakeUpstream) -> list[dict]:
    return [r for r in fake.requests() if r["path"].endswith("/responses")]


def add_memory(server: MemchatServer, content: str, namespace: str) -> dict:
    resp = httpx2.post(f"{server.url}/api/v1/memory", params={"namespace": namespace}, headers=H1,
                       json={"content": content})
    assert resp.status_code == 200, resp.text
    return resp.json()


def memories(server: MemchatServer, namespace: str) -> list[dict]:
    resp = httpx2.get(f"{server.url}/api/v1/memory", params={"namespace": namespace, "limit": 100}, headers=H1)
    assert resp.status_code == 200, resp.text
    return [m for m in resp.json()["memories"] if m["source"] == "conversation"]


def test_sync_non_stream(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    raw = sdk(server).responses.with_raw_response.create(
        model="fake-gpt", input="hello brave new world", extra_query={"namespace": namespace})
    response = raw.parse()
    assert response.output_text == "Echo: hello brave new world" and response.status == "completed"
    memory = response.model_extra["memory"]
    assert memory["refs"] == [] and memory["chat_id"] == raw.headers["x-memchat-chat-id"]
    assert raw.headers["x-memchat-memories"] == "0"
    assert responses_requests(fake)[-1]["body"]["input"] == "hello brave new world"


def test_sync_stream_relays_typed_events(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    fake.set_config(reply="one two three")
    raw = sdk(server).responses.with_raw_response.create(
        model="fake-gpt", input=[{"role": "user", "content": "hi"}], stream=True,
        extra_query={"namespace": namespace})
    events = list(raw.parse())
    assert [e.type for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["one ", "two ", "three"]
    assert events[0].response.model_extra["memory"]["chat_id"] == raw.headers["x-memchat-chat-id"]
    assert "memory" not in (events[-1].response.model_extra or {})
    assert events[-1].response.id == events[0].response.id


def test_stream_helper_sync(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    with sdk(server).responses.stream(model="fake-gpt", input="stream helper please",
                                      extra_query={"namespace": namespace}) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Echo: stream helper please"


async def test_async_create_stream_and_helper(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    client = async_sdk(server)
    response = await client.responses.create(model="fake-gpt", input="async hello",
                                              extra_query={"namespace": namespace})
    assert response.output_text == "Echo: async hello"
    stream = await client.responses.create(model="fake-gpt", input="async stream", stream=True,
                                           extra_query={"namespace": namespace})
    text = "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
    assert text == "Echo: async stream"
    async with client.responses.stream(model="fake-gpt", input="async helper",
                                       extra_query={"namespace": namespace}) as helper:
        final = await helper.get_final_response()
    assert final.output_text == "Echo: async helper"
    await client.close()


def test_body_forwarded_unchanged_and_memory_in_instructions(server: MemchatServer, fake: FakeUpstream,
                                                             namespace: str) -> None:
    created = add_memory(server, DOG, namespace)
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    items = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "input_text", "text": "What is the name of my dog?"}]}]
    events = list(sdk(server).responses.create(
        model="fake-gpt", input=items, instructions="You are terse.", tools=tools, store=False, stream=True,
        temperature=0.2, metadata={"trace": "t1"}, extra_body={"vendor_field": {"x": [1]}},
        extra_query={"namespace": namespace}))
    refs = events[0].response.model_extra["memory"]["refs"]
    assert [r["id"] for r in refs] == [created["id"]]
    body = responses_requests(fake)[-1]["body"]
    assert body["input"] == items and body["tools"] == tools and body["store"] is False
    assert body["temperature"] == 0.2 and body["metadata"] == {"trace": "t1"} and body["vendor_field"] == {"x": [1]}
    own, section = body["instructions"].split("\n\n", 1)
    assert own == "You are terse."
    assert section.startswith("<memchat-memory>") and section.endswith("</memchat-memory>") and "Bruno" in section


def test_previous_response_id_chain_is_one_conversation(server: MemchatServer, fake: FakeUpstream,
                                                        namespace: str) -> None:
    client = sdk(server)
    query = {"namespace": namespace}
    first = client.responses.with_raw_response.create(model="fake-gpt", input="I like green tea.", extra_query=query)
    first_id = first.parse().id
    second = client.responses.with_raw_response.create(model="fake-gpt", input="And oolong too.", stream=True,
                                                       previous_response_id=first_id, extra_query=query)
    second_id = [e for e in second.parse() if e.type == "response.completed"][0].response.id
    third = client.responses.with_raw_response.create(model="fake-gpt", input="Any suggestions?",
                                                      previous_response_id=second_id, extra_query=query)
    chat_id = first.headers["x-memchat-chat-id"]
    assert second.headers["x-memchat-chat-id"] == chat_id == third.headers["x-memchat-chat-id"]
    # the same previous_response_id from another organisation is not this conversation
    other = sdk(server, KEY_ORG2).responses.with_raw_response.create(
        model="fake-gpt", input="hi", previous_response_id=first_id, extra_query=query)
    assert other.headers["x-memchat-chat-id"] != chat_id
    # without previous_response_id, the input items are grouped like chat messages
    history = [{"role": "user", "content": "I like green tea."},
               {"role": "assistant", "content": "Echo: I like green tea."},
               {"role": "user", "content": "What else?"}]
    again = client.responses.with_raw_response.create(model="fake-gpt", input=history, extra_query=query)
    assert again.headers["x-memchat-chat-id"] == chat_id


def test_a_chained_follow_up_retrieves_with_the_turn_before(server: MemchatServer, fake: FakeUpstream,
                                                            namespace: str) -> None:
    """"What about her?" alone names nobody: as on chat completions, a short message is searched together with
    the user's previous one -- for a chain, the recorded turn its previous_response_id names."""
    created = add_memory(server, "Ana plays the cello in the city orchestra.", namespace)
    client = sdk(server)
    first = client.responses.create(model="fake-gpt", input="Tell me about Ana and the orchestra.",
                                    extra_query={"namespace": namespace})
    follow = client.responses.create(model="fake-gpt", input="What about her?", previous_response_id=first.id,
                                     extra_query={"namespace": namespace})
    assert created["id"] in [r["id"] for r in follow.model_extra["memory"]["refs"]]
    body = responses_requests(fake)[-1]["body"]
    assert body["input"] == "What about her?" and body["previous_response_id"] == first.id
    assert "cello" in body["instructions"]


@pytest.mark.timeout(60)
def test_memory_loop_closes_through_responses(server: MemchatServer, fake: FakeUpstream, namespace: str) -> None:
    """retrieve -> stream -> record -> idle commit -> retrieve, all through responses.create(stream=True)."""
    client = sdk(server)
    query = {"namespace": namespace, "commit_after": 1}
    first = client.responses.with_raw_response.create(model="fake-gpt", input="My dog's name is Bruno.",
                                                      stream=True, extra_query=query)
    assert "".join(e.delta for e in first.parse() if e.type == "response.output_text.delta")
    first_chat = first.headers["x-memchat-chat-id"]
    found = FakeUpstream.wait_for(lambda: memories(server, namespace), timeout=30, interval=0.2)
    assert any("Bruno" in m["content"] for m in found)
    assert all(m["sourceThreadId"] == first_chat for m in found)
    assert any(m["sourceTurnId"].startswith("resp_") for m in found)   # the turn id is the response id
    second = client.responses.with_raw_response.create(model="fake-gpt", input="What's my dog called?",
                                                       stream=True, extra_query=query)
    events = list(second.parse())
    assert second.headers["x-memchat-chat-id"] != first_chat
    refs = events[0].response.model_extra["memory"]["refs"]
    assert refs and "Bruno" in refs[0]["content"]
    instructions = responses_requests(fake)[-1]["body"]["instructions"]
    assert instructions.startswith("<memchat-memory>") and "Bruno" in instructions
    assert responses_requests(fake)[-1]["body"]["input"] == "What's my dog called?"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_without_responses_is_502(server: MemchatServer, fake: FakeUpstream, stream: bool) -> None:
    fake.set_config(responses_api=False)
    with pytest.raises(openai.APIStatusError) as info:
        result = sdk(server).responses.create(model="fake-gpt", input="hi", stream=stream)
        list(result) if stream else None
    assert info.value.status_code == 502
    body = info.value.body
    assert body["type"] == "upstream_error" and body["code"] == "responses_unsupported"
    assert "404" in body["message"] and "Invalid URL" in body["message"]


def test_upstream_429_and_400_pass_through(server: MemchatServer, fake: FakeUpstream) -> None:
    with pytest.raises(openai.RateLimitError):
        sdk(server).responses.create(model="fake-gpt", input="hi", extra_body={"fake": {"fault": {"status": 429}}})
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server).responses.create(model="fake-gpt", input="hi",
                                     extra_body={"fake": {"fault": {"status": 400, "message": "bad thing"}}})
    assert "bad thing" in info.value.message


@pytest.mark.timeout(30)
def test_mid_stream_drop_is_an_error_event(server: MemchatServer, fake: FakeUpstream) -> None:
    events = list(sdk(server).responses.create(
        model="fake-gpt", input="hi", stream=True,
        extra_body={"fake": {"reply": "a b c d e f", "fault": {"drop_after": 6}}}))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["a ", "b "]
    error = events[-1]
    assert error.type == "error" and error.code == "upstream_error" and "upstream" in error.message
    assert error.sequence_number == events[-2].sequence_number + 1


def test_client_disconnect_closes_upstream(server: MemchatServer, fake: FakeUpstream) -> None:
    body = {"model": "fake-gpt", "input": "hi", "stream": True, "fake": {"tokens": 50, "token_delay": 0.2}}
    with httpx2.Client(timeout=10) as client:
        with client.stream("POST", f"{server.openai_base_url}/responses", json=body, headers=H1) as resp:
            assert resp.status_code == 200
            deltas = 0
            for line in resp.iter_lines():
                deltas += line == "event: response.output_text.delta"
                if deltas >= 2:
                    break
    closed_at = time.monotonic()
    streams = fake.wait_for(lambda: (s := fake.streams())["open"] == 0 and s["closed_early"] >= 1 and s, timeout=3)
    assert time.monotonic() - closed_at < 1.5
    assert streams["streams"][-1]["state"] == "client_closed" and streams["streams"][-1]["chunks_sent"] < 50


def test_raw_frames_are_the_upstreams(server: MemchatServer, fake: FakeUpstream) -> None:
    """Every frame but response.created is the upstream's own bytes; each has event: and data: lines."""
    body = {"model": "fake-gpt", "input": "hi there", "stream": True}
    resp = httpx2.post(f"{server.openai_base_url}/responses", json=body, headers=H1)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in resp.text.split("\n\n") if f.strip()]
    assert all(f.startswith("event: response.") and "\ndata: {" in f for f in frames)
    assert "[DONE]" not in resp.text


@pytest.mark.parametrize("raw,param", [
    (b"{not json", None),
    (b"", None),
    (b"[1]", None),
    (b'{"input": "hi"}', "model"),
    (b'{"model": 3, "input": "hi"}', "model"),
    (b'{"model": "m", "input": 5}', "input"),
    (b'{"model": "m", "input": {"role": "user"}}', "input"),
    (b'{"model": "m", "input": [5]}', "input[0]"),
    (b'{"model": "m", "input": [{"content": "x"}]}', "input[0]"),
    (b'{"model": "m", "input": [{"role": "wizard", "content": "x"}]}', "input[0].role"),
    (b'{"model": "m", "input": [{"role": "user", "content": 5}]}', "input[0].content"),
    (b'{"model": "m", "input": [{"role": "user", "content": [1]}]}', "input[0].content[0]"),
    (b'{"model": "m", "input": "x", "instructions": ["a"]}', "instructions"),
    (b'{"model": "m", "input": "x", "stream": "yes"}', "stream"),
    (b'{"model": "m", "input": "x", "store": 1}', "store"),
    (b'{"model": "m", "input": "x", "previous_response_id": 7}', "previous_response_id"),
    (b'{"model": "m", "input": "x", "previous_response_id": ""}', "previous_response_id"),
    (b'{"model": "m", "input": "x", "previous_response_id": "resp\\u0000"}', "previous_response_id"),
    (b'{"model": "m", "input": "x", "previous_response_id": "' + b"r" * 300 + b'"}', "previous_response_id"),
])
def test_invalid_bodies_are_400(server: MemchatServer, fake: FakeUpstream, raw: bytes, param: str | None) -> None:
    resp = httpx2.post(f"{server.openai_base_url}/responses", content=raw,
                       headers={**H1, "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert not responses_requests(fake)


@pytest.mark.parametrize("query,param", [
    ("commit_after=abc", "commit_after"),
    ("commit_after=-1", "commit_after"),
    ("namespace=a%00b", "namespace"),
    ("chat_id=" + "c" * 200, "chat_id"),
])
def test_invalid_query_params_are_400(server: MemchatServer, query: str, param: str) -> None:
    resp = httpx2.post(f"{server.url}/v1/responses?{query}", headers=H1, json={"model": "m", "input": "hi"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_needs_a_key(server: MemchatServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(server, key="nope").responses.create(model="fake-gpt", input="hi")


def test_offline_mode_answers_responses(offline_server: MemchatServer) -> None:
    client = sdk(offline_server)
    events = list(client.responses.create(model="anything", input="hello brave new world", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("[offline mode]") and "hello brave new world" in text
    assert events[-1].response.output_text == text
    response = client.responses.create(model="anything", input="hello brave new world")
    assert response.output_text == text and response.model == "memchat-offline"
    with client.responses.stream(model="anything", input="hello brave new world") as helper:
        assert helper.get_final_response().output_text == text
