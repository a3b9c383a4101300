"""Streamed chat completions: every SSE frame is pre-encoded (prefix + encoded delta + suffix) so that a
chunk costs the fake almost nothing, then sent on the plan's cadence with the stream faults applied.

Faults: ``stall_after: N`` + ``stall: S`` -> send N chunks, stall, continue; ``drop_after: N`` -> send N
chunks (the role chunk counts) and abort the connection; ``end_after: N`` -> send N chunks then end the
response cleanly without the finish chunk and without ``[DONE]``. Each stream's outcome is recorded
(``completed``, ``client_closed``, ``dropped``, ``ended_early``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from . import io
from .state import FakeState, StreamRecord

if TYPE_CHECKING:
    from .chat import ChatPlan

_encode = msgspec.json.encode
DONE = b"data: [DONE]\n\n"


def _chunk_head(plan: ChatPlan) -> bytes:
    """Every chunk frame up to (and including) the ``"choices":`` key."""
    return (
        b'data: {"id":' + _encode(plan.cid) + b',"object":"chat.completion.chunk","created":'
        + str(plan.created).encode() + b',"model":' + _encode(plan.model) + b',"system_fingerprint":"fp_fake",'
        + b'"choices":'
    )


def _delta_frames(plan: ChatPlan, head: bytes, tail_open: bytes) -> tuple[bytes, list[bytes]]:
    """The first frame (role, or the tool-call header) and one frame per content token / argument fragment."""
    tool = plan.tool
    if tool is None:
        first = head + b'{"role":"assistant","content":"","refusal":null}' + tail_open
        c_head = head + b'{"content":'
        c_tail = b"}" + tail_open
        return first, [c_head + _encode(p) + c_tail for p in plan.pieces]
    header = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"index": 0, "id": tool["id"], "type": "function", "function": {"name": tool["name"], "arguments": ""}}
        ],
    }
    first = head + _encode(header) + tail_open
    a_head = head + b'{"tool_calls":[{"index":0,"function":{"arguments":'
    a_tail = b"}}]}" + tail_open
    return first, [a_head + _encode(p) + a_tail for p in plan.pieces]


def build_frames(plan: ChatPlan) -> tuple[list[bytes], int]:
    """All data frames of the stream except ``[DONE]``, and how many of them carry content."""
    chunk_head = _chunk_head(plan)
    usage_null = b',"usage":null' if plan.include_usage else b""
    head = chunk_head + b'[{"index":0,"delta":'
    tail_open = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    first, content = _delta_frames(plan, head, tail_open)
    final = head + b'{},"logprobs":null,"finish_reason":' + _encode(plan.finish) + b"}]" + usage_null + b"}\n\n"
    frames = [first, *content, final]
    if plan.include_usage:
        frames.append(chunk_head + b'[],"usage":' + _encode(plan.usage) + b"}\n\n")
    return frames, len(content)


class _Pump:
    """Sends one stream's frames on schedule; ``state`` says how it ended."""

    def __init__(self, plan: ChatPlan, send: Any, rec: StreamRecord) -> None:
        self.plan = plan
        self.send = send
        self.rec = rec
        self.frames, self.n_content = build_frames(plan)
        fault = plan.fault
        self.drop_after = fault.get("drop_after")
        self.end_after = fault.get("end_after")
        self.stall_after = fault.get("stall_after")
        self.stall = float(fault.get("stall") or 0.0) if self.stall_after is not None else 0.0
        self.state = "client_closed"

    async def _send(self, msg: dict[str, Any]) -> None:
        try:
            await self.send(msg)
        except (OSError, RuntimeError, anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
            raise io.ClientGone() from e

    async def _frames(self) -> int:
        """Send frames until done or a fault stops them; returns how many were sent."""
        clock = time.monotonic
        sleep = asyncio.sleep  # the server always runs on asyncio (uvicorn)
        due = clock() + self.plan.first_delay
        stalled = False
        sent = 0
        for i, frame in enumerate(self.frames):
            if self.drop_after is not None and sent >= self.drop_after:
                raise io.Dropped()
            if self.end_after is not None and sent >= self.end_after:
                break
            if self.stall_after is not None and not stalled and sent >= self.stall_after:
                stalled = True
                if self.stall > 0:
                    await sleep(self.stall)
                due = max(due, clock())
            if 1 <= i <= self.n_content:
                now = clock()
                if due > now:
                    await sleep(due - now)
                else:
                    if not i & 31:  # yield now and then so other connections progress
                        await asyncio.sleep(0)
                    due = now
                due += self.plan.token_delay
            await self._send({"type": "http.response.body", "body": frame, "more_body": True})
            sent += 1
            self.rec.chunks_sent = sent
        return sent

    async def __call__(self) -> None:
        await self._send({
            "type": "http.response.start",
            "status": 200,
            "headers": [*io.SSE_HEADERS, (b"x-request-id", self.plan.request_id)],
        })
        sent = await self._frames()
        if self.drop_after is not None and sent >= self.drop_after:
            raise io.Dropped()
        if self.end_after is not None and sent >= self.end_after:
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            self.state = "ended_early"
            return
        await self._send({"type": "http.response.body", "body": DONE, "more_body": False})
        self.state = "completed"


async def stream_completion(state: FakeState, plan: ChatPlan, receive: Any, send: Any) -> None:
    rec = StreamRecord(plan.cid, state.gen, plan.path, plan.model)
    pump = _Pump(plan, send, rec)
    state.stream_opened(rec)
    outcome = "client_closed"
    try:
        await io.guard(receive, pump)
        outcome = pump.state
    except io.Dropped:
        outcome = "dropped"
    except io.ClientGone:
        outcome = "client_closed"
    finally:
        state.stream_finished(rec, outcome)
    # When dropped we return without completing the response: uvicorn then
    # closes the transport, leaving the chunked body unterminated.
