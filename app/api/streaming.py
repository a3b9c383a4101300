"""SSE responses for every surface: sse-starlette's ``EventSourceResponse`` carrying bytes framed by
``app.chat.sse`` (passed through verbatim), with keep-alive comment pings while the upstream is slow.
It listens for the client's disconnect and ``aclose()``s the iterator, which closes the upstream request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from litestar import Response
from sse_starlette import EventSourceResponse, ServerSentEvent

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def comment_ping() -> ServerSentEvent:
    """OpenAI surface: an SSE comment, which every SSE client ignores."""
    return ServerSentEvent(comment="ping")


def token_ping() -> ServerSentEvent:
    """Personal-chat surface: ``data: {"token": ""}``, so a client that parses every non-empty line as
    ``json.loads(line[6:])["token"]`` keeps working while the upstream is slow."""
    return ServerSentEvent(data='{"token": ""}')


class StreamingEventSourceResponse(EventSourceResponse):
    """sse-starlette's response without a cancel scope around every send when no ``send_timeout`` is set.

    ``EventSourceResponse._send_with_timeout`` wraps each chunk in ``anyio.move_on_after(None)``: a
    cancel scope (and an async-library lookup) per streamed token, about a fifth of memchat's CPU per
    relayed chunk (docs/benchmarks.md, "Proxy overhead"). Without a timeout the scope can never fire, so
    the send is made directly; with one, sse-starlette's own method runs.
    ``tests/test_openai_proxy.py`` checks the hook still exists in the installed sse-starlette."""

    async def _send_with_timeout(self, send: Any, message: Any) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


class ASGIAppResponse(Response[None]):
    """Lets a Litestar handler return a plain ASGI application (here: sse-starlette's response)."""

    def __init__(self, asgi_app: Any) -> None:
        super().__init__(content=None)
        self._asgi_app = asgi_app

    def to_asgi_response(self, app: Any, request: Any, **kwargs: Any) -> Any:
        return self._asgi_app


def sse_response(frames: AsyncIterator[bytes], *, headers: dict[str, str] | None = None,
                 ping_interval: float = 15.0, ping: Callable[[], ServerSentEvent] = comment_ping) -> ASGIAppResponse:
    return ASGIAppResponse(StreamingEventSourceResponse(frames, headers={**SSE_HEADERS, **(headers or {})},
                                               ping=ping_interval, ping_message_factory=ping))
