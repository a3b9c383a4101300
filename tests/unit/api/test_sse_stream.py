"""The SSE response every chat surface streams through: frames in order, pings only while idle, and a
client that leaves closes the frame iterator (and with it the upstream request) at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from app.api.streaming import COMMENT_PING, SSEStream


class Client:
    """ASGI receive/send of one request: records what was sent; ``leave()`` disconnects."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.gone.set()

    @property
    def body(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def frames(parts: list[bytes], delay: float = 0.0, log: list[str] | None = None) -> AsyncIterator[bytes]:
    try:
        for part in parts:
            if delay:
                await anyio.sleep(delay)
            yield part
    finally:
        if log is not None:
            log.append("closed")


async def test_frames_in_order_then_the_end() -> None:
    client = Client()
    await SSEStream(frames([b"data: 1\n\n", b"data: 2\n\n"]), headers={"x-memchat-chat-id": "c1"},
                    ping_interval=30)({"type": "http"}, client.receive, client.send)
    start = client.sent[0]
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream") and headers[b"x-memchat-chat-id"] == b"c1"
    assert headers[b"cache-control"] == b"no-cache"
    assert client.body == [b"data: 1\n\n", b"data: 2\n\n", b""]
    assert client.sent[-1]["more_body"] is False


async def test_pings_while_idle_and_never_after_the_end() -> None:
    client = Client()
    with anyio.fail_after(10):
        await SSEStream(frames([b"data: late\n\n", b"data: [DONE]\n\n"], delay=0.35), ping_interval=0.1)(
            {"type": "http"}, client.receive, client.send)
    body = client.body
    assert body[-2:] == [b"data: [DONE]\n\n", b""]
    first = body.index(b"data: late\n\n")
    assert body[:first].count(COMMENT_PING) >= 2       # ~every 0.1 s while the first frame was 0.35 s away
    await anyio.sleep(0.3)
    assert client.body == body                          # nothing after the final message


async def test_no_ping_while_frames_flow() -> None:
    client = Client()
    await SSEStream(frames([b"data: x\n\n"] * 20, delay=0.01), ping_interval=0.1)(
        {"type": "http"}, client.receive, client.send)
    assert COMMENT_PING not in client.body


async def test_disconnect_closes_the_frames_at_once() -> None:
    client, log = Client(), []
    stream = SSEStream(frames([b"data: x\n\n"] * 1000, delay=0.05, log=log), ping_interval=30)
    async with anyio.create_task_group() as group:
        group.start_soon(stream, {"type": "http"}, client.receive, client.send)
        await anyio.sleep(0.2)
        client.leave()
        with anyio.fail_after(1):
            while log != ["closed"]:
                await anyio.sleep(0.01)
    sent = len(client.body)
    assert 1 <= sent < 20 and client.sent[-1].get("more_body") is True   # cut off, not finished
