"""One streaming path for every surface: the upstream response as an async context manager that yields
typed events.

``ChatStream`` owns the open upstream response. A surface enters it (``async with stream:``) before it
sends anything, then iterates it for events -- `Chunk` (the upstream's bytes to forward, with the
assistant text they carry), `Failure` (the upstream broke mid-stream), and `Done` (the outcome, sent
after the turn is recorded). Leaving the ``async with`` block -- at the end, on an error, or because the
client went away and the surface's task was cancelled -- closes the upstream request and records the
turn (with the partial reply) exactly once. `app.api.framing` turns the events into each surface's bytes.

The relay part forwards upstream bytes untouched and decodes only what memchat needs; each upstream read
becomes one event (frames joined), so a chunk is forwarded the moment it arrives. The only frame
rewritten is the first data frame, which may gain extra fields (the OpenAI surface's ``memory``).
`Relay` reads chat-completion chunks; `app.chat.responses.ResponsesRelay` reads the Responses API's typed
events (any `StreamRelay` will do). Bytes a relay holds back (``release``) go out after the turn is
recorded, right before `Done`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

import anyio
import msgspec

from app.errors import UpstreamError
from app.llm.backend import ByteStream
from app.llm.sse import EventSplitter, event_data
from app.obs.metrics import StreamMeter


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


def error_body(message: str, *, type_: str = "upstream_error", code: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object (the ``error`` member of an error frame)."""
    return {"message": message, "type": type_, "param": None, "code": code}


class StreamOutcome(msgspec.Struct):
    """What happened: the assistant text so far and how the stream ended."""

    text_parts: list[str] = msgspec.field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    completed: bool = False
    response_id: str | None = None  # the Responses API's response id (recorded as the turn's id)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class Chunk(msgspec.Struct, frozen=True):
    """Upstream SSE bytes to forward as they are (complete events) and the assistant text in them."""

    raw: bytes
    delta: str


class Failure(msgspec.Struct, frozen=True):
    """The upstream failed after the response started; ``error`` is an OpenAI-style error object."""

    error: dict[str, Any]


class Done(msgspec.Struct, frozen=True):
    """The stream is over and its turn is recorded."""

    outcome: StreamOutcome


StreamEvent = Chunk | Failure | Done


class StreamRelay(Protocol):
    """What `ChatStream` needs of a relay: `Relay` (chat completions) or `app.chat.responses.ResponsesRelay`."""

    outcome: StreamOutcome

    @property
    def ended_cleanly(self) -> bool: ...

    def feed(self, raw: bytes) -> tuple[bytes, str]: ...

    def release(self) -> bytes:
        """Bytes held back until the turn is recorded (sent right before `Done`)."""
        ...


class Relay:
    """Parses upstream SSE bytes into (bytes to forward, text delta), keeping the `StreamOutcome`."""

    def __init__(self, first_chunk_fields: dict[str, Any] | None = None) -> None:
        self._splitter = EventSplitter()
        self._first_fields = first_chunk_fields
        self.outcome = StreamOutcome()
        self.saw_done = False

    def feed(self, raw: bytes) -> tuple[bytes, str]:
        out: list[bytes] = []
        deltas: list[str] = []
        for event in self._splitter.feed(raw):
            data = event_data(event)
            if data is None:
                out.append(event + b"\n\n")  # comment / keep-alive from upstream
            elif data == b"[DONE]":
                self.saw_done = True
            else:
                self._handle_data(data, out, deltas)
        delta = "".join(deltas)
        if delta:
            self.outcome.text_parts.append(delta)
        return b"".join(out), delta

    @property
    def ended_cleanly(self) -> bool:
        return self.saw_done or self.outcome.finish_reason is not None or self.outcome.error is not None

    def release(self) -> bytes:
        return b""  # the surface frames its own ``[DONE]`` after `Done`

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


class ChatStream:
    """The open upstream response of one chat request; see the module docstring for the protocol."""

    def __init__(self, upstream: ByteStream, on_finish: Callable[[StreamOutcome], Awaitable[None]], *,
                 first_chunk_fields: dict[str, Any] | None = None, relay: StreamRelay | None = None,
                 meter: StreamMeter | None = None, opened_at: float | None = None) -> None:
        self._upstream = upstream
        self._meter = meter
        self._opened_at = time.perf_counter() if opened_at is None else opened_at
        self._first_byte_at: float | None = None
        self._first_sent_at: float | None = None
        self._chunks = 0
        self._broken = False
        self._on_finish = on_finish
        self._relay: StreamRelay = relay if relay is not None else Relay(first_chunk_fields)
        self._events = self._run()
        self._finished = False

    @property
    def outcome(self) -> StreamOutcome:
        return self._relay.outcome

    @property
    def relay(self) -> StreamRelay:
        return self._relay

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        with anyio.CancelScope(shield=True):
            await self._events.aclose()
            await self._finish()

    def __aiter__(self) -> AsyncGenerator[StreamEvent, None]:
        return self._events

    async def _finish(self) -> None:
        """Close the upstream request, then record the turn: once, whichever path gets here first."""
        if self._finished:
            return
        self._finished = True
        if self._meter is not None:
            self._meter.finished(self._opened_at, self._first_byte_at, self._first_sent_at, self._chunks,
                                 self.outcome.usage, self._broken)
        with anyio.CancelScope(shield=True):
            try:
                await self._upstream.aclose()
            finally:
                await self._on_finish(self.outcome)

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        relay = self._relay
        chunks = self._upstream.iter_bytes()
        chunks_sent = 0
        try:
            try:
                async for raw in chunks:
                    if self._first_byte_at is None:
                        self._first_byte_at = time.perf_counter()
                    out, delta = relay.feed(raw)
                    if out:
                        yield Chunk(out, delta)
                        chunks_sent += 1
                        if chunks_sent == 1:  # the consumer is back: the first chunk went out
                            self._first_sent_at = time.perf_counter()
            finally:
                self._chunks = chunks_sent
                # closed here and now, not later by the event loop's generator finaliser
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()
            if not relay.ended_cleanly:
                raise UpstreamError("the upstream stream ended before it was complete")
        except UpstreamError as exc:
            self._broken = True
            relay.outcome.error = error_body(exc.message, code=exc.code)
            yield Failure(relay.outcome.error)
        relay.outcome.completed = relay.outcome.error is None
        await self._finish()
        held = relay.release()
        if held:
            yield Chunk(held, "")
        yield Done(relay.outcome)
