"""``POST /v1/responses``: the Responses API, streamed as typed events like the real one or answered with one
response object.

Stream: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, one ``response.output_text.delta`` per token, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``, ``response.completed`` -- each frame an
``event:`` line and a ``data:`` line whose JSON carries ``type`` and ``sequence_number``; no ``[DONE]``.

The reply follows the chat rules (``"Echo: " + <last user text of input>``, ``reply``, ``tokens``,
``first_token_delay``, ``token_delay``; ``max_output_tokens`` truncates and the response is
``incomplete``). Faults: ``status`` and ``stall`` before the response; ``drop_after: N`` (abort after N
frames), ``end_after: N`` (end cleanly after N frames, without ``response.completed``). With the config
key ``responses_api: false`` every ``/responses`` request is a 404 like an upstream without the endpoint.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec

from . import io
from .chat import _reply_pieces
from .config import OVERRIDE_KEYS, ApiError, bad, is_int, validate_overrides
from .state import FakeState, StreamRecord
from .text import message_text, tokenize

_encode = msgspec.json.encode


def _input_texts(input_: Any) -> tuple[list[str], str]:
    """Text of every input message, and of the last user message."""
    if isinstance(input_, str):
        return [input_], input_
    texts: list[str] = []
    last_user = ""
    for item in input_ if isinstance(input_, list) else ():
        if isinstance(item, dict) and "role" in item:
            text = message_text(item.get("content"))
            texts.append(text)
            if item.get("role") == "user":
                last_user = text
    return texts, last_user


def _message(item_id: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]
    status = "in_progress" if text is None else "completed"
    return {"id": item_id, "type": "message", "status": status, "content": content, "role": "assistant"}


class _Plan:
    def __init__(self, body: dict[str, Any], path: str, pieces: list[str], incomplete: bool, texts: list[str],
                 eff: dict[str, Any]) -> None:
        self.body, self.path, self.pieces, self.incomplete = body, path, pieces, incomplete
        self.rid, self.item_id = "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex
        self.created = int(time.time())
        prompt = sum(len(tokenize(t)) for t in texts) + len(tokenize(str(body.get("instructions") or "")))
        self.usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": len(pieces), "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": prompt + len(pieces)}
        self.first_delay = float(eff.get("first_token_delay") or 0.0)
        self.token_delay = float(eff.get("token_delay") or 0.0)
        self.fault: dict[str, Any] = eff.get("fault") or {}

    def response(self, status: str) -> dict[str, Any]:
        done = status != "in_progress"
        body = self.body
        return {
            "id": self.rid, "object": "response", "created_at": self.created, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"], "output": [_message(self.item_id, "".join(self.pieces))] if done else [],
            "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0), "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0), "truncation": "disabled", "usage": self.usage if done else None,
            "user": body.get("user"), "metadata": body.get("metadata") or {},
        }

    def frames(self) -> list[bytes]:
        text = "".join(self.pieces)
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        started = self.response("in_progress")
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
            {"type": "response.output_item.added", "output_index": 0, "item": _message(self.item_id, None)},
            {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
            *({"type": "response.output_text.delta", **where, "delta": p, "logprobs": []} for p in self.pieces),
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": _message(self.item_id, text)},
        ]
        final = "incomplete" if self.incomplete else "completed"
        events.append({"type": f"response.{final}", "response": self.response(final)})
        return [b"event: " + e["type"].encode() + b"\ndata: " + _encode({**e, "sequence_number": n}) + b"\n\n"
                for n, e in enumerate(events)]


def _parse(state: FakeState, body: Any, path: str) -> _Plan:
    if not state.config.responses_api:
        raise ApiError(404, f"Invalid URL (POST {path})")
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad("Missing required parameter: 'model'.", param="model")
    input_ = body.get("input")
    if input_ is not None and not isinstance(input_, (str, list)):
        raise bad("Invalid type for 'input': expected a string or an array.", param="input")
    fake = validate_overrides(body.get("fake"), OVERRIDE_KEYS, "fake")
    texts, last_user = _input_texts(input_)
    eff = state.effective("responses", texts, lambda: msgspec.json.encode(input_).decode(), fake)
    pieces, _ = _reply_pieces({}, eff, last_user)
    limit = body.get("max_output_tokens")
    incomplete = is_int(limit) and limit >= 0 and len(pieces) > limit
    return _Plan(body, path, pieces[:limit] if incomplete else pieces, incomplete, texts, eff)


async def handle_responses(state: FakeState, body: Any, path: str, receive: Any, send: Any) -> None:
    plan = _parse(state, body, path)
    if not await io.pre_response_faults(plan.fault, receive):
        return
    if body.get("stream"):
        await _stream(state, plan, receive, send)
        return
    delay = plan.first_delay + plan.token_delay * max(0, len(plan.pieces) - 1) if plan.pieces else 0.0
    if delay > 0 and not await io.guard(receive, lambda: asyncio.sleep(delay)):
        return
    obj = plan.response("incomplete" if plan.incomplete else "completed")
    if plan.fault.get("drop_after") is not None:
        await io.send_partial_and_drop(send, 200, _encode(obj))
        return
    await io.send_json(send, 200, obj, [(b"x-request-id", ("req_" + plan.rid[5:29]).encode())])


async def _stream(state: FakeState, plan: _Plan, receive: Any, send: Any) -> None:
    rec = StreamRecord(plan.rid, state.gen, plan.path, plan.body["model"])
    frames = plan.frames()
    drop_after, end_after = plan.fault.get("drop_after"), plan.fault.get("end_after")
    first_delta, n_deltas = 4, len(plan.pieces)
    outcome = "client_closed"

    async def pump() -> None:
        nonlocal outcome
        await send({"type": "http.response.start", "status": 200, "headers": list(io.SSE_HEADERS)})
        for i, frame in enumerate(frames):
            if drop_after is not None and i >= drop_after:
                raise io.Dropped()
            if end_after is not None and i >= end_after:
                outcome = "ended_early"
                break
            if i == first_delta and plan.first_delay:
                await asyncio.sleep(plan.first_delay)
            elif first_delta < i < first_delta + n_deltas and plan.token_delay:
                await asyncio.sleep(plan.token_delay)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            rec.chunks_sent = i + 1
        else:
            outcome = "completed"
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    state.stream_opened(rec)
    try:
        if not await io.guard(receive, pump):
            outcome = "client_closed"
    except io.Dropped:
        outcome = "dropped"
    except (OSError, RuntimeError):
        outcome = "client_closed"
    finally:
        state.stream_finished(rec, outcome)
