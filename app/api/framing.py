"""How each surface frames a chat stream's events (`app.chat.stream`): the one place that turns
`Chunk` / `Failure` / `Done` into bytes or messages.

- OpenAI SSE: the upstream's own frames, an error frame on a failure, ``data: [DONE]`` at the end.
- Responses API SSE: the upstream's own typed events (``response.created`` gains ``memory``), a
  failure as the API's own ``error`` event; no ``[DONE]`` (the API has none).
- Personal chat SSE (memories.ai style): ``{"token": ...}`` frames after the session and refs frames;
  every frame has ``token``, so a line-by-line client never meets a frame without one.
- Websocket JSON: ``token`` messages; the session decides what follows ``Done``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from app.api.wire import memory_refs
from app.chat.responses import ResponsesRelay, error_event
from app.chat.service import PreparedChat
from app.chat.stream import ChatStream, Chunk, Done, Failure
from app.llm.sse import DONE_FRAME, data_frame


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def id_header(chat_id: str) -> str:
    """A chat or session id as a header value: unchanged when it is printable ASCII without ``%``, else
    percent-encoded (UTF-8), since a header cannot carry other characters (the body has the id as is)."""
    return quote(chat_id, safe=_HEADER_SAFE)


def chat_headers(chat: PreparedChat) -> dict[str, str]:
    return {"x-memchat-chat-id": id_header(chat.chat_id), "x-memchat-memories": str(len(chat.retrieved.used))}


def memory_field(chat: PreparedChat) -> dict[str, Any]:
    """The ``memory`` object of the OpenAI surface (first streamed chunk, non-stream body)."""
    return {"refs": memory_refs(chat.retrieved.used), "chat_id": chat.chat_id}


async def openai_frames(stream: ChatStream) -> AsyncIterator[bytes]:
    """OpenAI-framed SSE bytes. One generator layer over the stream: this loop runs per token.
    (The response that sends these has entered ``stream`` before its first send: `app.api.streaming`.)"""
    async for event in stream:
        if type(event) is Chunk:
            yield event.raw
        elif type(event) is Failure:
            yield data_frame({"error": event.error})
    yield DONE_FRAME


async def responses_frames(stream: ChatStream) -> AsyncIterator[bytes]:
    """Responses-API SSE bytes: the upstream's events as they come, an ``error`` event on a failure."""
    async for event in stream:
        if type(event) is Chunk:
            yield event.raw
        elif type(event) is Failure:
            relay = stream.relay
            yield error_event(event.error, relay.next_sequence if isinstance(relay, ResponsesRelay) else 0)


def thinkings(chat: PreparedChat) -> list[str]:
    used = len(chat.retrieved.used)
    where = f"the memories of '{chat.params.namespace or '(global)'}'"
    if chat.params.include_shared:
        where += " and the organisation's shared memories"
    return [f"searched {where}: {chat.retrieved.searched} candidate(s) found, {used} used"]


async def personal_frames(stream: ChatStream, chat: PreparedChat, refs: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Personal-chat SSE bytes: session frame, refs frame, token frames, an error frame, ``[DONE]``."""
    yield data_frame({"token": "", "session_id": chat.chat_id})
    yield data_frame({"token": "", "refs": refs, "thinkings": thinkings(chat)})
    async for event in stream:
        if type(event) is Chunk:
            if event.delta:
                yield data_frame({"token": event.delta})
        elif type(event) is Done and event.outcome.error is not None:
            yield data_frame({"token": "", "error": event.outcome.error})
    yield DONE_FRAME


def websocket_message(event: Chunk | Failure | Done) -> dict[str, Any] | None:
    """The websocket message for a stream event (``None``: nothing to send for it)."""
    if type(event) is Chunk and event.delta:
        return {"type": "token", "token": event.delta}
    return None
