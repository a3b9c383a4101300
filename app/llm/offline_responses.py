"""The offline responder's Responses API answers: the same typed events a real upstream streams
(``event:`` + ``data:`` frames with a ``sequence_number``), and the non-streamed response object."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


def _usage(body: dict[str, Any], reply: str) -> dict[str, Any]:
    instructions = body.get("instructions")
    prompt = len(str(body.get("input") or "").split()) + len(str(instructions or "").split())
    completion = len(reply.split())
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def response_object(body: dict[str, Any], reply: str, model: str, *, response_id: str | None = None,
                    item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": response_id or f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
        "status": status, "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
        "model": model, "output": [_message(item_id or f"msg_{uuid.uuid4().hex}", reply, status)] if done else [],
        "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True), "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "usage": _usage(body, reply) if done else None, "metadata": {},
    }


def response_frames(body: dict[str, Any], tokens: Sequence[str], model: str) -> list[bytes]:
    """Every SSE frame of a streamed text answer made of ``tokens``."""
    reply = "".join(tokens)
    response_id, item_id = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
    started = response_object(body, reply, model, response_id=response_id, item_id=item_id, status="in_progress")
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": reply, "annotations": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": _message(item_id, "", "in_progress")},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **where, "delta": token, "logprobs": []} for token in tokens),
        {"type": "response.output_text.done", **where, "text": reply, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": _message(item_id, reply, "completed")},
        {"type": "response.completed",
         "response": response_object(body, reply, model, response_id=response_id, item_id=item_id)},
    ]
    return [b"event: " + event["type"].encode() + b"\ndata: " + _encode({**event, "sequence_number": n}) + b"\n\n"
            for n, event in enumerate(events)]
