"""`app.chat.stream`: the Relay's parsing of upstream SSE and ChatStream's events, closing and recording."""

from __future__ import annotations

import json

import anyio
import pytest

from app.chat.stream import ChatStream, Chunk, Done, Failure, Relay, error_body
from app.errors import UpstreamError
from tests.unit.chat.fakes import DONE, FakeUpstream, Recorder, chunk


def frames(out: bytes) -> list[dict]:
    return [json.loads(part[6:]) for part in out.split(b"\n\n") if part.startswith(b"data: {")]


# -- Relay ------------------------------------------------------------------------------------------------

def test_deltas_finish_reason_and_usage() -> None:
    relay = Relay()
    out, delta = relay.feed(chunk("Hel") + chunk("lo"))
    assert delta == "Hello" and len(frames(out)) == 2
    assert relay.feed(chunk(None, finish="stop"))[1] == ""
    relay.feed(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n')
    assert relay.outcome.text == "Hello" and relay.outcome.text_parts == ["Hello"]
    assert relay.outcome.finish_reason == "stop"
    assert relay.outcome.usage == {"prompt_tokens": 3, "completion_tokens": 2}
    assert relay.ended_cleanly and not relay.saw_done


def test_only_choice_zero_counts_as_the_reply() -> None:
    relay = Relay()
    _, delta = relay.feed(chunk("other", index=1, finish="length") + chunk("mine"))
    assert delta == "mine" and relay.outcome.finish_reason is None


def test_unchanged_frames_are_forwarded_byte_for_byte() -> None:
    raw = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}],  "extra": 1}\n\n'
    out, delta = Relay().feed(raw)
    assert out == raw and delta == "x"


def test_first_chunk_fields_go_once_and_only_into_a_chunk_with_choices() -> None:
    relay = Relay({"memory": {"refs": [], "chat_id": "c9"}})
    no_choices = b'data: {"id":"x","object":"chat.completion.chunk"}\n\n'
    out, _ = relay.feed(b": ping\n\n" + no_choices)
    assert out == b": ping\n\n" + no_choices
    out, delta = relay.feed(chunk("a") + chunk("b"))
    first, second = frames(out)
    assert first["memory"] == {"refs": [], "chat_id": "c9"} and first["choices"][0]["delta"] == {"content": "a"}
    assert "memory" not in second and delta == "ab"
    out, _ = relay.feed(chunk("c"))
    assert "memory" not in frames(out)[0]


def test_without_first_chunk_fields_nothing_is_added() -> None:
    out, _ = Relay().feed(chunk("a"))
    assert set(frames(out)[0]) == {"id", "object", "choices"}


def test_an_upstream_error_object_in_a_data_frame_is_kept_and_forwarded() -> None:
    relay = Relay()
    raw = b'data: {"error":{"message":"overloaded","type":"server_error","code":"x"}}\n\n'
    out, delta = relay.feed(chunk("par") + raw)
    assert out.endswith(raw) and delta == "par"
    assert relay.outcome.error == {"message": "overloaded", "type": "server_error", "code": "x"}
    assert relay.ended_cleanly


def test_a_string_error_becomes_an_error_object() -> None:
    relay = Relay()
    relay.feed(b'data: {"error":"boom"}\n\n')
    assert relay.outcome.error == {"message": "boom"}


def test_non_json_data_and_comments_are_forwarded_untouched() -> None:
    relay = Relay({"memory": 1})
    out, delta = relay.feed(b": keep-alive\n\ndata: hello world\n\ndata: {not json\n\n")
    assert out == b": keep-alive\n\ndata: hello world\n\ndata: {not json\n\n" and delta == ""
    assert relay.outcome.text == "" and not relay.ended_cleanly
    assert frames(relay.feed(chunk("x"))[0])[0]["memory"] == 1   # the fields still wait for a real chunk


def test_done_is_noted_and_not_forwarded() -> None:
    relay = Relay()
    out, delta = relay.feed(chunk("a") + DONE)
    assert relay.saw_done and relay.ended_cleanly and DONE not in out and delta == "a"
    assert relay.feed(b"data: [DONE]\r\n\r\n") == (b"", "")


def test_frames_split_across_reads_are_reassembled() -> None:
    relay = Relay()
    wire = chunk("Hé") + chunk("llo") + DONE
    pieces = [relay.feed(wire[i:i + 7]) for i in range(0, len(wire), 7)]
    assert "".join(d for _, d in pieces) == "Hé" + "llo"
    assert b"".join(o for o, _ in pieces) == chunk("Hé") + chunk("llo")
    assert relay.saw_done


# -- ChatStream -------------------------------------------------------------------------------------------

async def run(upstream: FakeUpstream, recorder: Recorder, **kw) -> list:
    events = []
    async with ChatStream(upstream, recorder, **kw) as stream:
        async for event in stream:
            events.append(event)
            recorder.log.append(type(event).__name__)
    return events


async def test_a_complete_stream_is_chunks_then_done_after_the_turn_is_recorded() -> None:
    log: list[str] = []
    upstream, recorder = FakeUpstream([chunk("Hi "), chunk("there", finish="stop"), DONE], log=log), Recorder(log)
    events = await run(upstream, recorder)
    assert [type(e) for e in events] == [Chunk, Chunk, Done]
    assert [e.delta for e in events[:2]] == ["Hi ", "there"]
    assert events[0].raw == chunk("Hi ")
    assert log == ["Chunk", "Chunk", "aclose", "finish", "Done"]
    outcome = events[-1].outcome
    assert outcome.completed and outcome.text == "Hi there" and outcome.finish_reason == "stop"
    assert recorder.outcomes == [outcome] and upstream.closed == 1


async def test_a_read_with_nothing_to_forward_gives_no_chunk() -> None:
    log: list[str] = []
    events = await run(FakeUpstream([b"data: [DO", b"NE]\n\n"], log=log), Recorder(log))
    assert [type(e) for e in events] == [Done] and events[0].outcome.completed


async def test_first_chunk_fields_reach_the_first_chunk() -> None:
    log: list[str] = []
    events = await run(FakeUpstream([chunk("a"), chunk("b"), DONE], log=log), Recorder(log),
                       first_chunk_fields={"memory": {"chat_id": "c1"}})
    assert frames(events[0].raw)[0]["memory"] == {"chat_id": "c1"}
    assert "memory" not in frames(events[1].raw)[0]


async def test_an_upstream_that_stops_without_done_or_finish_reason_is_a_failure() -> None:
    log: list[str] = []
    recorder = Recorder(log)
    events = await run(FakeUpstream([chunk("half")], log=log), recorder)
    assert [type(e) for e in events] == [Chunk, Failure, Done]
    assert events[1].error["type"] == "upstream_error" and "ended before" in events[1].error["message"]
    outcome = events[2].outcome
    assert not outcome.completed and outcome.text == "half" and outcome.error == events[1].error
    assert log == ["Chunk", "Failure", "aclose", "finish", "Done"]
    assert recorder.outcomes == [outcome]


async def test_a_finish_reason_without_done_is_complete() -> None:
    log: list[str] = []
    events = await run(FakeUpstream([chunk("ok", finish="stop")], log=log), Recorder(log))
    assert [type(e) for e in events] == [Chunk, Done] and events[-1].outcome.completed


async def test_an_upstream_error_mid_stream_gives_failure_then_done() -> None:
    log: list[str] = []
    recorder = Recorder(log)
    error = UpstreamError("connection reset", code="upstream_reset")
    events = await run(FakeUpstream([chunk("par"), chunk("tial")], error=error, log=log), recorder)
    assert [type(e) for e in events] == [Chunk, Chunk, Failure, Done]
    assert events[2].error == error_body("connection reset", code="upstream_reset")
    assert events[3].outcome.text == "partial" and not events[3].outcome.completed
    assert len(recorder.outcomes) == 1 and log.count("aclose") == 1


async def test_an_error_frame_from_upstream_ends_without_a_failure_event() -> None:
    log: list[str] = []
    raw = b'data: {"error":{"message":"quota","type":"insufficient_quota"}}\n\n'
    events = await run(FakeUpstream([chunk("a"), raw], log=log), Recorder(log))
    assert [type(e) for e in events] == [Chunk, Chunk, Done]
    assert events[1].raw == raw   # forwarded as the upstream sent it
    assert events[-1].outcome.error == {"message": "quota", "type": "insufficient_quota"}
    assert not events[-1].outcome.completed


async def test_leaving_early_closes_the_upstream_and_records_the_partial_text_once() -> None:
    log: list[str] = []
    recorder = Recorder(log)
    upstream = FakeUpstream([chunk("one "), chunk("two "), chunk("three"), DONE], log=log)
    async with ChatStream(upstream, recorder) as stream:
        async for event in stream:
            assert isinstance(event, Chunk)
            if event.delta == "two ":
                break
        assert log == []   # nothing happens until the block is left
    assert log == ["aclose", "finish"]
    [outcome] = recorder.outcomes
    assert outcome.text == "one two " and not outcome.completed and outcome.error is None


async def test_an_exception_in_the_block_still_closes_and_records_once() -> None:
    log: list[str] = []
    recorder = Recorder(log)
    with pytest.raises(ZeroDivisionError):
        async with ChatStream(FakeUpstream([chunk("x"), DONE], log=log), recorder) as stream:
            async for _ in stream:
                1 / 0
    assert log == ["aclose", "finish"] and recorder.outcomes[0].text == "x"


async def test_cancellation_while_waiting_on_the_upstream_closes_and_records_once() -> None:
    log: list[str] = []
    recorder = Recorder(log)
    upstream = FakeUpstream([chunk("so far")], hang=True, log=log)
    seen: list[object] = []
    with anyio.CancelScope() as scope:
        async with ChatStream(upstream, recorder) as stream:
            async for event in stream:
                seen.append(event)
                scope.cancel()   # the client went away; the next read is cancelled
    assert scope.cancelled_caught
    assert [type(e) for e in seen] == [Chunk]
    assert log == ["aclose", "finish"] and upstream.closed == 1
    [outcome] = recorder.outcomes
    assert outcome.text == "so far" and not outcome.completed


async def test_cancellation_from_a_deadline_records_once() -> None:
    log: list[str] = []
    recorder = Recorder(log)
    with anyio.move_on_after(0.05):
        async with ChatStream(FakeUpstream([], hang=True, log=log), recorder) as stream:
            async for _ in stream:
                pass
    assert log == ["aclose", "finish"] and recorder.outcomes[0].text == ""


async def test_leaving_after_done_does_not_record_again() -> None:
    log: list[str] = []
    recorder = Recorder(log)
    stream = ChatStream(FakeUpstream([chunk("a", finish="stop")], log=log), recorder)
    async with stream:
        events = [e async for e in stream]
    assert type(events[-1]) is Done and log == ["aclose", "finish"] and len(recorder.outcomes) == 1
    assert stream.outcome is events[-1].outcome


async def test_a_cr_only_upstream_ends_cleanly() -> None:
    log: list[str] = []
    wire = (chunk("a", finish="stop") + DONE).replace(b"\n", b"\r")
    events = await run(FakeUpstream([wire[:-1], wire[-1:]], log=log), Recorder(log))
    assert [type(e) for e in events] == [Chunk, Done] and events[-1].outcome.completed
