"""`app.chat.responses`: the Responses body check, the memory section in ``instructions``, and the relay of
typed events (text, end, failure, the ``memory`` field on ``response.created``, the held terminal event)."""

from __future__ import annotations

import json

import pytest

from app.chat.responses import ResponsesRelay, error_event, inject_instructions, parse_responses_body
from app.chat.stream import ChatStream, Chunk, Done, Failure
from app.errors import InvalidRequest, UpstreamError
from app.llm.offline_responses import response_frames
from tests.unit.chat.fakes import FakeUpstream, Recorder

BODY = {"model": "m", "input": "hi"}


def frames_of(tokens: list[str]) -> list[bytes]:
    return response_frames(BODY, tokens, "m")


def events(out: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: {")]


def test_relay_text_end_and_response_id() -> None:
    relay = ResponsesRelay()
    frames = frames_of(["Hel", "lo"])
    out, delta = relay.feed(b"".join(frames))
    assert delta == "Hello" and relay.outcome.text == "Hello"
    assert relay.ended_cleanly and relay.outcome.finish_reason == "stop" and relay.outcome.error is None
    assert relay.outcome.response_id and relay.outcome.response_id.startswith("resp_")
    assert relay.outcome.usage and relay.outcome.usage["output_tokens"] == 1
    # every frame but the terminal one is forwarded at once, byte for byte; the terminal is held
    assert out == b"".join(frames[:-1])
    assert relay.release() == frames[-1] and relay.release() == b""
    assert relay.next_sequence == len(frames)


def test_frames_split_across_reads_and_crlf() -> None:
    relay = ResponsesRelay()
    raw = b"".join(frames_of(["a ", "b"])).replace(b"\n", b"\r\n")
    texts = [relay.feed(raw[i:i + 7])[1] for i in range(0, len(raw), 7)]
    assert "".join(texts) == "a b" and relay.ended_cleanly


def test_memory_field_goes_on_the_created_response_only() -> None:
    relay = ResponsesRelay({"memory": {"refs": [], "chat_id": "c1"}})
    frames = frames_of(["x"])
    out, _ = relay.feed(b"".join(frames))
    first = out.split(b"\n\n")[0]
    assert first.startswith(b"event: response.created\ndata: ")
    created = events(first)[0]
    assert created["response"]["memory"] == {"refs": [], "chat_id": "c1"}
    assert created["sequence_number"] == 0 and created["type"] == "response.created"
    assert out[len(first) + 2:] == b"".join(frames[1:-1])  # the rest untouched


@pytest.mark.parametrize("event,error", [
    ({"type": "response.failed", "response": {"id": "r", "status": "failed",
                                              "error": {"code": "server_error", "message": "boom"}}},
     {"code": "server_error", "message": "boom"}),
    ({"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None},
     {"message": "slow down", "type": "upstream_error", "param": None, "code": "rate_limit_exceeded"}),
])
def test_failures_are_recorded(event: dict, error: dict) -> None:
    relay = ResponsesRelay()
    kind = event["type"].encode()
    relay.feed(b"event: " + kind + b"\ndata: " + json.dumps({**event, "sequence_number": 3}).encode() + b"\n\n")
    assert relay.outcome.error == error and relay.ended_cleanly and relay.next_sequence == 4


def test_incomplete_and_unknown_frames() -> None:
    relay = ResponsesRelay()
    incomplete = {"type": "response.incomplete", "sequence_number": 0,
                  "response": {"id": "r", "incomplete_details": {"reason": "max_output_tokens"}}}
    out, _ = relay.feed(b": ping\n\ndata: not json\n\n")
    assert out == b": ping\n\ndata: not json\n\n" and not relay.ended_cleanly
    relay.feed(b"data: " + json.dumps(incomplete).encode() + b"\n\n")
    assert relay.outcome.finish_reason == "max_output_tokens" and relay.ended_cleanly


def test_error_event_shape() -> None:
    frame = error_event({"message": "gone", "type": "upstream_error", "code": None}, 7)
    assert frame.startswith(b"event: error\ndata: ")
    assert events(frame)[0] == {"type": "error", "code": "upstream_error", "message": "gone", "param": None,
                                "sequence_number": 7}


async def test_chat_stream_sends_the_terminal_event_after_recording() -> None:
    log: list[str] = []
    recorder = Recorder(log)
    frames = frames_of(["a", "b"])
    stream = ChatStream(FakeUpstream([b"".join(frames)], log=log), recorder, relay=ResponsesRelay())
    seen = []
    async with stream:
        async for event in stream:
            seen.append(event)
            if type(event) is Chunk and b"response.completed" in event.raw:
                assert recorder.outcomes, "the terminal event must follow the turn's record"
    assert type(seen[-1]) is Done and seen[-1].outcome.response_id
    assert b"".join(e.raw for e in seen if type(e) is Chunk) == b"".join(frames)
    assert recorder.outcomes[0].text == "ab" and recorder.outcomes[0].completed


async def test_chat_stream_upstream_drop_is_a_failure() -> None:
    frames = frames_of(["a", "b"])
    stream = ChatStream(FakeUpstream([b"".join(frames[:5])], error=UpstreamError("dropped")), Recorder([]),
                        relay=ResponsesRelay())
    async with stream:
        seen = [event async for event in stream]
    assert [type(e) for e in seen][-2:] == [Failure, Done]
    assert seen[-1].outcome.text == "a" and not seen[-1].outcome.completed
    assert isinstance(stream.relay, ResponsesRelay) and stream.relay.next_sequence == 5


def test_instructions_get_the_section_after_the_clients() -> None:
    assert inject_instructions({"instructions": "Be terse."}, "<m>")["instructions"] == "Be terse.\n\n<m>"
    assert inject_instructions({"instructions": None}, "<m>")["instructions"] == "<m>"
    body = {"model": "m", "input": [{"role": "user", "content": "hi"}]}
    assert inject_instructions(body, "<m>")["input"] is body["input"] and "instructions" not in body


@pytest.mark.parametrize("raw,param", [
    (b'{"model": "m"}', None),
    (b'{"model": "m", "input": "x", "previous_response_id": "resp_1", "store": true, "stream": false}', None),
    (b'{"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "{}"}]}', None),
    (b'{"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]}', None),
    (b'{"model": "", "input": "x"}', "model"),
    (b'{"model": "m", "input": true}', "input"),
    (b'{"model": "m", "input": [{"type": 1}]}', "input[0]"),
])
def test_body_check(raw: bytes, param: str | None) -> None:
    if param is None:
        assert parse_responses_body(raw) == json.loads(raw)
    else:
        with pytest.raises(InvalidRequest) as info:
            parse_responses_body(raw)
        assert info.value.param == param
