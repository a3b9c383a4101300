"""Raw ASGI plumbing shared by the fake's endpoints: reading a body, JSON and error responses, watching for
a client that goes away, and the faults that strike before any response byte is sent.

The fake is a bare ASGI app (no framework) so that its cost per streamed chunk stays tiny: it is also the
"direct" baseline of the proxy benchmarks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from .config import ApiError, error_body, fault_error

JSON_HEADERS = ((b"content-type", b"application/json"),)
SSE_HEADERS = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
)


class Dropped(Exception):
    """A ``drop_after`` fault fired: the response is abandoned mid-body."""


class ClientGone(Exception):
    """Sending failed because the client closed the connection."""


async def read_body(receive: Any) -> bytes | None:
    """Read the whole request body; None if the client went away."""
    chunks = []
    while True:
        msg = await receive()
        t = msg["type"]
        if t == "http.request":
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                return b"".join(chunks)
        elif t == "http.disconnect":
            return None


async def send_json(send: Any, status: int, obj: Any, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = msgspec.json.encode(obj)
    headers = [*JSON_HEADERS, (b"content-length", str(len(data)).encode())]
    if extra_headers:
        headers += extra_headers
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def send_error(send: Any, e: ApiError) -> None:
    await send_json(send, e.status, error_body(e.status, e.message, e.type, e.code, e.param), e.headers)


async def send_partial_and_drop(send: Any, status: int, data: bytes) -> None:
    """Headers and half the body, then return without completing the response: uvicorn closes the
    connection and the chunked body is never terminated (a ``drop_after`` fault on a JSON response)."""
    await send({"type": "http.response.start", "status": status, "headers": list(JSON_HEADERS)})
    await send({"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True})


async def guard(receive: Any, fn: Callable[[], Awaitable[Any]]) -> bool:
    """Run ``fn()`` while watching for client disconnect.

    Returns True if fn completed, False if the client disconnected first.
    """
    done = False
    error: BaseException | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    break
            if not done:
                tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            await fn()
            done = True
        except Exception as e:  # re-raised below, unwrapped (no ExceptionGroup)
            error = e
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return done


async def pre_response_faults(fault: dict[str, Any] | None, receive: Any) -> bool:
    """Apply stall-before-headers and status faults. False if client left."""
    if not fault:
        return True
    stall = fault.get("stall")
    if stall and fault.get("stall_after") is None:
        if not await guard(receive, lambda: anyio.sleep(stall)):
            return False
    if fault.get("status") is not None:
        raise fault_error(fault)
    return True
