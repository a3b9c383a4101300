"""Server-sent events as OpenAI-compatible upstreams speak them: splitting a byte stream into events,
reading an event's data, and writing ``data:`` frames (the offline responder produces the same wire
format as a real upstream, and the API surfaces frame their own events with `data_frame`)."""

from __future__ import annotations

from typing import Any

import msgspec

DONE_FRAME = b"data: [DONE]\n\n"
_encoder = msgspec.json.Encoder()


def data_frame(payload: Any) -> bytes:
    """``data: <json>\\n\\n`` for one JSON payload."""
    return b"data: " + _encoder.encode(payload) + b"\n\n"


class EventSplitter:
    """Splits a byte stream into complete SSE events (each without its terminating blank line).

    Line endings may be CRLF, LF or CR, and a read may end between the CR and the LF of one CRLF: a
    read ending in CR counts that CR as a line end at once (so a CR-terminated event is complete
    without waiting for more bytes) and drops an LF that starts the next read (the rest of that CRLF,
    not a second line end)."""

    __slots__ = ("_buffer", "_skip_lf")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False

    def feed(self, data: bytes) -> list[bytes]:
        if self._skip_lf and data:
            self._skip_lf = False
            if data.startswith(b"\n"):
                data = data[1:]
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        return [e for e in events if e]


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
