"""Server-sent events on the client side: ``SSEDecoder`` cuts ``data:`` payloads out of a byte stream,
``read_frame`` reads one (OpenAI chunk or memories.ai-style frame), and ``SSEClient`` times every frame of a streamed request on a ``RawConnection`` (time to first token,
gaps between tokens, arrival of ``[DONE]``), for OpenAI chunks by default; subclasses read other frames
(the memories.ai-style ones) by overriding the ``on_*`` hooks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .chunks import decode_chunk, decode_message
from .rawhttp import RawConnection, is_chunked

DONE = b"[DONE]"


class SSEDecoder:
    """Feed it bytes as they arrive; it returns the ``data:`` payloads of the events completed so far."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data
        if b"\n\n" not in buf:
            self._buf = buf
            return []
        *frames, self._buf = buf.split(b"\n\n")
        return [line[5:].strip() for frame in frames for line in frame.split(b"\n") if line.startswith(b"data:")]


def read_frame(payload: bytes, memories_style: bool = False) -> tuple[str | None, Any, str | None]:
    """(text, error, session id) of one ``data:`` payload that is not ``[DONE]``: an OpenAI chunk (the
    first choice's delta), or with ``memories_style`` a personal-chat frame (``token``, ``session_id``).
    Raises ``msgspec.DecodeError`` for anything else."""
    if memories_style:
        m = decode_message(payload)
        return m.token, m.error, m.session_id
    c = decode_chunk(payload)
    return c.delta_text(), c.error, None


@dataclass
class StreamResult:
    start: float
    status: int = 0
    ttft: float | None = None              # request sent -> first non-empty content frame (s)
    content_times: list[float] = field(default_factory=list)
    last_data: float | None = None         # arrival of the last data frame before [DONE]
    done: float | None = None              # arrival of ``data: [DONE]``
    end: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200 and self.done is not None

    def gaps(self) -> list[float]:
        t = self.content_times
        return [b - a for a, b in zip(t, t[1:])]


class SSEClient(RawConnection):
    """One keep-alive connection; ``stream(path, body)`` runs one SSE request on it."""

    async def stream(self, path: str, body: bytes, timeout: float = 120.0,
                     res: StreamResult | None = None) -> StreamResult:
        """Run one request. Pass ``res`` to keep what arrived even if the caller cancels mid-stream."""
        clock = time.perf_counter
        if res is None:
            res = StreamResult(start=clock())
        try:
            async with asyncio.timeout(timeout):
                await self._exchange(path, body, res, clock)
        except TimeoutError:
            res.error = "timeout"
            await self.close()
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            res.error = f"{type(exc).__name__}: {exc}"[:200]
            await self.close()
        res.end = clock()
        return res

    async def _exchange(self, path: str, body: bytes, res: StreamResult, clock: Callable[[], float]) -> None:
        await self.connect()
        res.start = clock()
        self.post(path, body)
        res.status, headers = await self.read_head()
        self.on_head(res, headers)
        if not is_chunked(headers):
            self.on_body(res, await self.read_sized(headers), clock())
        else:
            decoder = SSEDecoder()
            while piece := await self.read_chunk():
                now = clock()
                for payload in decoder.feed(piece):
                    self.on_data(res, payload, now)
            self.on_stream_end(res)
        if headers.get("connection", "").lower() == "close":
            await self.close()

    # -- hooks -----------------------------------------------------------------------

    def on_head(self, res: StreamResult, headers: dict[str, str]) -> None:
        """The response head arrived (``res.status`` is set)."""

    def on_body(self, res: StreamResult, payload: bytes, now: float) -> None:
        """A response that is not chunked (an error, or a non-stream answer) arrived whole."""
        if res.status != 200:
            res.error = f"HTTP {res.status}: {payload[:200]!r}"

    def on_data(self, res: StreamResult, payload: bytes, now: float) -> None:
        """One ``data:`` payload of an OpenAI stream."""
        if payload == DONE:
            res.done = now
            return
        res.last_data = now
        try:
            text, error, _session = read_frame(payload)
        except msgspec.DecodeError:
            return
        if error is not None:
            res.error = f"error frame: {str(error)[:150]}"
        if text:
            res.content_times.append(now)
            if res.ttft is None:
                res.ttft = now - res.start

    def on_stream_end(self, res: StreamResult) -> None:
        if res.status != 200 and res.error is None:
            res.error = f"HTTP {res.status}"
