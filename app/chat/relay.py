"""Relays an upstream SSE byte stream: forwards bytes untouched, decodes only what memchat needs.

Each upstream read becomes one downstream write (frames joined), so a chunk is forwarded the moment it
arrives. The only frame memchat rewrites is the first data frame, which gains the ``memory`` field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec

from app.chat.sse import EventSplitter, data_frame, error_payload, event_data
from app.errors import UpstreamError


class ByteStream(Protocol):
    def iter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class StreamOutcome(msgspec.Struct):
    """What happened: the assistant text so far and how the stream ended."""

    text_parts: list[str] = msgspec.field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    completed: bool = False

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class Relay:
    """Iterate ``frames()`` for (bytes to forward, assistant text delta) pairs; read ``outcome`` after.

    The caller writes the final ``data: [DONE]`` itself, after it has recorded the turn.
    """

    def __init__(self, stream: ByteStream, first_chunk_fields: dict[str, Any] | None = None) -> None:
        self._stream = stream
        self._first_fields = first_chunk_fields
        self.outcome = StreamOutcome()

    def _handle_data(self, data: bytes, out: list[bytes], deltas: list[str]) -> None:
        try:
            chunk = _decode_chunk(data)
        except msgspec.DecodeError:
            out.append(b"data: " + data + b"\n\n")
            return
        if chunk.error is not None:
            self.outcome.error = chunk.error if isinstance(chunk.error, dict) else {"message": str(chunk.error)}
        for choice in chunk.choices or ():
            if choice.index == 0:
                if choice.delta is not None and choice.delta.content:
                    deltas.append(choice.delta.content)
                if choice.finish_reason:
                    self.outcome.finish_reason = choice.finish_reason
        if chunk.usage:
            self.outcome.usage = chunk.usage
        if self._first_fields is not None and chunk.choices is not None:
            decoded = _decode_any(data)
            decoded.update(self._first_fields)
            self._first_fields = None
            out.append(b"data: " + _encode(decoded) + b"\n\n")
            return
        out.append(b"data: " + data + b"\n\n")

    async def frames(self) -> AsyncIterator[tuple[bytes, str]]:
        splitter = EventSplitter()
        saw_done = False
        try:
            async for raw in self._stream.iter_bytes():
                out: list[bytes] = []
                deltas: list[str] = []
                for event in splitter.feed(raw):
                    data = event_data(event)
                    if data is None:
                        out.append(event + b"\n\n")  # comment / keep-alive from upstream
                    elif data == b"[DONE]":
                        saw_done = True
                    else:
                        self._handle_data(data, out, deltas)
                delta = "".join(deltas)
                if delta:
                    self.outcome.text_parts.append(delta)
                if out:
                    yield b"".join(out), delta
            if not saw_done and self.outcome.finish_reason is None and self.outcome.error is None:
                raise UpstreamError("the upstream stream ended before it was complete")
        except UpstreamError as exc:
            self.outcome.error = error_payload(exc.message, code=exc.code)["error"]
            yield data_frame(error_payload(exc.message, code=exc.code)), ""
        finally:
            await self._stream.aclose()
        self.outcome.completed = self.outcome.error is None
