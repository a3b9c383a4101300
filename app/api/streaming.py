"""SSE responses for every surface: a lean ASGI response streaming bytes framed by `app.api.framing`.

The response enters the chat stream's context (``owner``) before its first send, so the upstream request
is closed and the turn recorded on every path -- also when the client is gone before the first byte.

Per streamed chunk it does one ``send`` and nothing else. One helper task per response watches for the
client's disconnect -- then the stream is cancelled, which ``aclose()``s the frame iterator and with it
the upstream request -- and, while the stream is idle for ``ping_interval`` seconds (a slow upstream),
sends a keep-alive ping. After the last frame no ping can follow.

This replaces sse-starlette's ``EventSourceResponse`` on the chat paths: that one spawns four tasks per
response and wraps every send in a cancel scope, which measured ~1 ms of CPU per request and ~20 µs per
chunk here (docs/benchmarks.md, "Proxy overhead"); memchat's frames are already SSE bytes, so none of
its event formatting is needed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from typing import Any

import anyio
from anyio import CancelScope
from litestar import Response

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
COMMENT_PING = b": ping\n\n"            # OpenAI surface: an SSE comment, which every SSE client ignores
# Personal-chat surface: ``data: {"token": ""}``, so a client that parses every non-empty line as
# ``json.loads(line[6:])["token"]`` keeps working while the upstream is slow.
TOKEN_PING = b'data: {"token": ""}\n\n'


class SSEStream:
    """An ASGI application streaming ``frames`` (complete SSE events as bytes) as ``text/event-stream``."""

    def __init__(self, frames: AsyncIterator[bytes], *, headers: dict[str, str] | None = None,
                 ping_interval: float = 15.0, ping: bytes = COMMENT_PING,
                 owner: AbstractAsyncContextManager[Any] | None = None) -> None:
        self._frames = frames
        self._owner = owner
        merged = {"content-type": "text/event-stream; charset=utf-8", **SSE_HEADERS, **(headers or {})}
        self._raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()]
        self._ping_interval = ping_interval
        self._ping = ping
        self._last_send = 0.0
        self._finished = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async with self._owner or nullcontext(), aclosing(self._frames) as frames:
            await send({"type": "http.response.start", "status": 200, "headers": self._raw_headers})
            self._last_send = time.monotonic()
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch, receive, send, group.cancel_scope)
                async for chunk in frames:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    self._last_send = time.monotonic()
                self._finished = True  # before the final send: the watcher must not ping after it
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()

    async def _watch(self, receive: Any, send: Any, stream_scope: CancelScope) -> None:
        """Cancel the stream when the client leaves; ping while it is idle."""
        while True:
            idle_for = time.monotonic() - self._last_send
            with anyio.move_on_after(max(0.0, self._ping_interval - idle_for)):
                message = await receive()
                if message["type"] == "http.disconnect":
                    stream_scope.cancel()
                    return
                continue
            if not self._finished and time.monotonic() - self._last_send >= self._ping_interval:
                self._last_send = time.monotonic()
                await send({"type": "http.response.body", "body": self._ping, "more_body": True})


class ASGIAppResponse(Response[None]):
    """Lets a Litestar handler return a plain ASGI application."""

    def __init__(self, asgi_app: Any) -> None:
        super().__init__(content=None)
        self._asgi_app = asgi_app

    def to_asgi_response(self, app: Any, request: Any, **kwargs: Any) -> Any:
        return self._asgi_app


def sse_response(frames: AsyncIterator[bytes], *, headers: dict[str, str] | None = None,
                 ping_interval: float = 15.0, ping: bytes = COMMENT_PING,
                 owner: AbstractAsyncContextManager[Any] | None = None) -> ASGIAppResponse:
    """``owner``: what the frames come from (a `ChatStream`); entered before the first send."""
    return ASGIAppResponse(SSEStream(frames, headers=headers, ping_interval=ping_interval, ping=ping, owner=owner))
