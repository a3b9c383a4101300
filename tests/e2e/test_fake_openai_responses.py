"""The fake upstream's ``/v1/responses`` against the real openai SDK: typed events like the real API, the
chat reply rules and faults, and the switch that makes it an upstream without the endpoint."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
from openai import OpenAI

from app.testkit import FakeUpstream

MODEL = "fake-gpt"
EVENTS = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
          "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
          "response.content_part.done", "response.output_item.done", "response.completed"]


@pytest.fixture(autouse=True)
def _reset(fake: FakeUpstream) -> None:
    fake.reset()


@pytest.fixture
def client(fake: FakeUpstream) -> OpenAI:
    return OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=10)


def test_non_stream_echoes_the_last_user_text(client: OpenAI) -> None:
    items = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "Echo: first"},
             {"role": "user", "content": [{"type": "input_text", "text": "second one"}]}]
    response = client.responses.create(model=MODEL, input=items, instructions="be nice")
    assert response.output_text == "Echo: second one" and response.status == "completed"
    assert response.instructions == "be nice" and response.usage.output_tokens == 3


def test_stream_frames_and_sequence_numbers(fake: FakeUpstream) -> None:
    resp = httpx2.post(f"{fake.base_url}/responses", json={"model": MODEL, "input": "hi you", "stream": True})
    frames = [f for f in resp.text.split("\n\n") if f]
    kinds = []
    for n, frame in enumerate(frames):
        event_line, data_line = frame.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}" and data["sequence_number"] == n
        kinds.append(data["type"])
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
                     "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert "[DONE]" not in resp.text


def test_sdk_stream_helper_and_rules(client: OpenAI, fake: FakeUpstream) -> None:
    fake.add_rule(endpoint="responses", match="weather", reply="sunny today", times=1)
    with client.responses.stream(model=MODEL, input="weather?") as stream:
        assert [e.type for e in stream] == EVENTS
        assert stream.get_final_response().output_text == "sunny today"
    assert fake.rules() == []


def test_max_output_tokens_is_incomplete(client: OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input="a b c d", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_faults(client: OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model=MODEL, input="x", extra_body={"fake": {"fault": {"status": 429}}})
    events = list(client.responses.create(model=MODEL, input="x y z", stream=True,
                                          extra_body={"fake": {"fault": {"end_after": 5}}}))
    assert len(events) == 5 and fake.streams()["ended_early"] == 1
    with pytest.raises(openai.APIError):
        list(client.responses.create(model=MODEL, input="x y z", stream=True,
                                     extra_body={"fake": {"fault": {"drop_after": 5}}}))
    assert fake.wait_for(lambda: fake.streams()["dropped"] == 1)


def test_bad_bodies_are_400(fake: FakeUpstream) -> None:
    for body in ({"input": "x"}, {"model": MODEL, "input": 5}):
        resp = httpx2.post(f"{fake.base_url}/responses", json=body)
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_switch_makes_it_an_upstream_without_the_endpoint(client: OpenAI, fake: FakeUpstream) -> None:
    fake.set_config(responses_api=False)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input="x")
    assert info.value.body["message"] == "Invalid URL (POST /v1/responses)" and info.value.body["code"] is None
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}]).choices
    fake.reset()
    assert client.responses.create(model=MODEL, input="x").output_text == "Echo: x"
