"""Server-sent events: incremental splitting of upstream bytes and framing of our own frames."""

from __future__ import annotations

from typing import Any

import msgspec

DONE_FRAME = b"data: [DONE]\n\n"
_encoder = msgspec.json.Encoder()


def data_frame(payload: Any) -> bytes:
    """``data: <json>\\n\\n`` for one JSON payload."""
    return b"data: " + _encoder.encode(payload) + b"\n\n"


def comment_frame(text: str = "ping") -> bytes:
    return b": " + text.encode() + b"\n\n"


def error_payload(message: str, *, type_: str = "upstream_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class EventSplitter:
    """Splits a byte stream into complete SSE events (each without its terminating blank line)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        return [e for e in events if e]

    @property
    def pending(self) -> bytes:
        return self._buffer


def event_data(event: bytes) -> bytes | None:
    """The data of one event (multi-line data joined by newlines); None for comment-only events."""
    if event.startswith(b"data:") and b"\n" not in event:
        value = event[5:]
        return value[1:] if value.startswith(b" ") else value
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None
