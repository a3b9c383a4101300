"""`app.api.framing`: OpenAI SSE, personal-chat SSE and websocket messages over a ChatStream on a fake upstream."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from app.api.framing import (chat_headers, id_header, memory_field, openai_frames, personal_frames, thinkings,
                             websocket_message)
from app.auth import Principal
from app.chat.request import ChatParams
from app.chat.service import PreparedChat
from app.chat.stream import ChatStream, Chunk, Done, Failure, StreamOutcome
from app.errors import UpstreamError
from app.llm.sse import EventSplitter, event_data
from app.memory.models import Memory, ScoredMemory
from app.memory.retrieval import Retrieved
from app.turns.conversations import ChatSlot
from tests.unit.chat.fakes import DONE, FakeUpstream, Recorder, chunk

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def prepared(namespace: str = "alice", used: int = 1, searched: int = 4) -> PreparedChat:
    memories = [ScoredMemory(memory=Memory(id=f"m{i}", org_id="org1", namespace=namespace, content=f"fact {i}",
                                           created_at=WHEN, updated_at=WHEN, source_thread_id="t0",
                                           source_turn_id="u0"), score=0.1234567)
                for i in range(used)]
    return PreparedChat(principal=Principal(org_id="org1", key_id="env:0"), params=ChatParams(namespace=namespace),
                        body={"model": "m", "messages": []}, client_messages=[{"role": "user", "content": "hi"}],
                        slot=ChatSlot(chat_id="chat-7"), retrieved=Retrieved(used=memories, searched=searched))


def events_of(wire: bytes) -> list[bytes | None]:
    """The data of each SSE event in ``wire``."""
    return [event_data(e) for e in EventSplitter().feed(wire)]


async def collect(frames) -> bytes:
    return b"".join([frame async for frame in frames])


def test_headers_memory_field_and_thinkings() -> None:
    chat = prepared(used=1, searched=4)
    assert chat_headers(chat) == {"x-memchat-chat-id": "chat-7", "x-memchat-memories": "1"}
    assert memory_field(chat) == {"chat_id": "chat-7", "refs": [{
        "id": "m0", "content": "fact 0", "score": 0.123457, "createdAt": "2026-03-04T05:06:07Z",
        "source": "conversation", "sourceThreadId": "t0", "sourceTurnId": "u0", "scope": "user"}]}
    assert thinkings(chat) == ["searched the memories of 'alice': 4 candidate(s) found, 1 used"]
    assert thinkings(prepared(namespace="", used=0, searched=0)) == [
        "searched the memories of '(global)': 0 candidate(s) found, 0 used"]
    shared = prepared(used=0, searched=2)
    shared.params = ChatParams(namespace="alice", include_shared=True)
    assert thinkings(shared) == [
        "searched the memories of 'alice' and the organisation's shared memories: 2 candidate(s) found, 0 used"]


def test_id_header_keeps_printable_ascii_and_percent_encodes_the_rest() -> None:
    assert id_header("chat-7 ' OR 1=1 --") == "chat-7 ' OR 1=1 --"
    assert id_header("a%b") == "a%25b"
    assert id_header("é🎈") == "%C3%A9%F0%9F%8E%88"


async def test_openai_frames_forward_the_upstream_frames_and_end_with_one_done() -> None:
    log: list[str] = []
    chat = prepared()
    stream = ChatStream(FakeUpstream([chunk("Hi"), chunk("!", finish="stop"), DONE], log=log), Recorder(log),
                        first_chunk_fields={"memory": memory_field(chat)})
    async with stream:
        wire = await collect(openai_frames(stream))
    data = events_of(wire)
    assert data[-1] == b"[DONE]" and data.count(b"[DONE]") == 1
    first, second = (json.loads(d) for d in data[:-1])
    assert first["memory"]["chat_id"] == "chat-7" and first["choices"][0]["delta"]["content"] == "Hi"
    assert "memory" not in second
    assert wire.endswith(b"data: [DONE]\n\n") and log == ["aclose", "finish"]


async def test_openai_frames_add_an_error_frame_on_failure() -> None:
    log: list[str] = []
    stream = ChatStream(FakeUpstream([chunk("par")], error=UpstreamError("reset", code="upstream_reset"), log=log),
                        Recorder(log))
    async with stream:
        data = events_of(await collect(openai_frames(stream)))
    assert json.loads(data[0])["choices"][0]["delta"]["content"] == "par"
    assert json.loads(data[1]) == {"error": {"message": "reset", "type": "upstream_error", "param": None,
                                             "code": "upstream_reset"}}
    assert data[2:] == [b"[DONE]"]


async def test_openai_frames_keep_upstream_comments() -> None:
    log: list[str] = []
    stream = ChatStream(FakeUpstream([b": processing\n\n", chunk("a", finish="stop")], log=log), Recorder(log))
    async with stream:
        wire = await collect(openai_frames(stream))
    assert wire.startswith(b": processing\n\n") and events_of(wire)[0] is None


async def test_personal_frames_session_refs_tokens_then_done() -> None:
    log: list[str] = []
    chat = prepared()
    refs = [{"id": "m0"}]
    stream = ChatStream(FakeUpstream([b": ping\n\n", chunk("Hel"), chunk(None), chunk("lo", finish="stop"), DONE],
                                     log=log), Recorder(log))
    async with stream:
        data = events_of(await collect(personal_frames(stream, chat, refs)))
    assert data[-1] == b"[DONE]"
    frames = [json.loads(d) for d in data[:-1]]
    assert frames[0] == {"token": "", "session_id": "chat-7"}
    assert frames[1] == {"token": "", "refs": refs, "thinkings": thinkings(chat)}
    assert frames[2:] == [{"token": "Hel"}, {"token": "lo"}]   # no empty tokens, no upstream comments
    assert all("token" in f for f in frames)


async def test_personal_frames_end_with_an_error_frame_when_the_upstream_fails() -> None:
    log: list[str] = []
    stream = ChatStream(FakeUpstream([chunk("par")], log=log), Recorder(log))   # ends without [DONE]
    async with stream:
        data = events_of(await collect(personal_frames(stream, prepared(), [])))
    frames = [json.loads(d) for d in data[:-1]]
    assert frames[2] == {"token": "par"}
    assert frames[3]["token"] == "" and frames[3]["error"]["type"] == "upstream_error"
    assert len(frames) == 4 and data[-1] == b"[DONE]"


async def test_personal_frames_report_an_upstream_error_object() -> None:
    log: list[str] = []
    raw = b'data: {"error":{"message":"quota","type":"insufficient_quota"}}\n\n'
    stream = ChatStream(FakeUpstream([raw], log=log), Recorder(log))
    async with stream:
        data = events_of(await collect(personal_frames(stream, prepared(), [])))
    assert json.loads(data[2]) == {"token": "", "error": {"message": "quota", "type": "insufficient_quota"}}


def test_websocket_message() -> None:
    assert websocket_message(Chunk(b"data: x\n\n", "tok")) == {"type": "token", "token": "tok"}
    assert websocket_message(Chunk(b": ping\n\n", "")) is None
    assert websocket_message(Failure({"message": "x"})) is None
    assert websocket_message(Done(StreamOutcome(completed=True))) is None


async def test_websocket_messages_over_a_stream() -> None:
    log: list[str] = []
    stream = ChatStream(FakeUpstream([chunk("a"), b": ka\n\n", chunk("b", finish="stop")], log=log), Recorder(log))
    async with stream:
        messages = [m async for e in stream if (m := websocket_message(e)) is not None]
    assert messages == [{"type": "token", "token": "a"}, {"type": "token", "token": "b"}]
