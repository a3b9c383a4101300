"""``POST /v1/chat/completions``: from a request to a ``ChatPlan`` (what to answer, token by token), then
either one JSON completion here or a stream (``streaming.py``).

Reply selection: no reply configured -> ``"Echo: " + <last user message>``; ``tokens=N`` cycles or trims
the reply to N tokens (``tok0 tok1 ...`` without a reply); ``max_completion_tokens`` / ``max_tokens``
truncate (finish_reason ``"length"``). A configured ``tool_call``, or a ``tool_choice`` naming a function
(or ``"required"``: the first tool), makes the model "call" it instead.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

from . import io
from .config import OVERRIDE_KEYS, bad, is_int, validate_overrides
from .state import FakeState
from .streaming import stream_completion
from .text import cycle_tokens, message_text, numbered_tokens, split_fragments, tokenize


@dataclass
class ChatPlan:
    """Everything needed to send one completion, streamed or not."""

    path: str
    cid: str
    created: int
    model: str
    pieces: list[str]                   # content tokens, or tool-call argument fragments
    tool: dict[str, Any] | None
    finish: str
    usage: dict[str, Any]
    include_usage: bool
    first_delay: float
    token_delay: float
    fault: dict[str, Any]

    @property
    def request_id(self) -> bytes:
        return ("req_" + self.cid[9:]).encode()


def _parse(body: Any) -> tuple[str, list[Any], dict[str, Any]]:
    """(model, messages, the request's ``fake`` overrides), or a 400."""
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty array", param="messages")
    return model, messages, validate_overrides(body.get("fake"), OVERRIDE_KEYS, "fake")


def _texts(messages: list[Any]) -> tuple[list[str], str]:
    """Text of every message, and of the last user message."""
    texts: list[str] = []
    last_user = ""
    for m in messages:
        if not isinstance(m, dict):
            raise bad("each message must be an object", param="messages")
        t = message_text(m.get("content"))
        texts.append(t)
        if m.get("role") == "user":
            last_user = t
    return texts, last_user


def _tool_named_by_choice(tools: Any, tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        if isinstance(fn, dict):
            return fn.get("name")
    elif tool_choice == "required" and isinstance(tools, list):
        first = tools[0] if tools else None
        if isinstance(first, dict) and isinstance(first.get("function"), dict):
            return first["function"].get("name")
    return None


def _choose_tool(body: dict[str, Any], eff: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    tool_choice = body.get("tool_choice")
    if not tools or tool_choice == "none":
        return None
    tc = eff.get("tool_call")
    if tc is None:
        name = _tool_named_by_choice(tools, tool_choice)
        if isinstance(name, str) and name:
            tc = {"name": name, "arguments": "{}"}
    if tc is None:
        return None
    tool = dict(tc)
    tool.setdefault("id", "call_" + uuid.uuid4().hex[:24])
    return tool


def _reply_pieces(body: dict[str, Any], eff: dict[str, Any], last_user: str) -> tuple[list[str], str]:
    """The reply's tokens and its finish_reason (``"length"`` when the request's token limit cut it)."""
    reply = eff.get("reply")
    n = eff.get("tokens")
    if reply is None:
        pieces = numbered_tokens(n) if n is not None else tokenize("Echo: " + last_user)
    else:
        pieces = tokenize(reply)
        if n is not None:
            pieces = cycle_tokens(pieces, n) if pieces else numbered_tokens(n)
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if is_int(limit) and limit >= 0 and len(pieces) > limit:
        return pieces[:limit], "length"
    return pieces, "stop"


def _plan(body: dict[str, Any], path: str, model: str, texts: list[str], last_user: str,
          eff: dict[str, Any]) -> ChatPlan:
    tool = _choose_tool(body, eff)
    if tool is not None:
        pieces, finish = split_fragments(tool["arguments"]), "tool_calls"
    else:
        pieces, finish = _reply_pieces(body, eff, last_user)
    prompt_tokens = sum(len(tokenize(t)) for t in texts)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(pieces),
        "total_tokens": prompt_tokens + len(pieces),
    }
    so = body.get("stream_options")
    return ChatPlan(
        path=path, cid="chatcmpl-" + uuid.uuid4().hex[:24], created=int(time.time()), model=model,
        pieces=pieces, tool=tool, finish=finish, usage=usage,
        include_usage=isinstance(so, dict) and bool(so.get("include_usage")),
        first_delay=float(eff.get("first_token_delay") or 0.0), token_delay=float(eff.get("token_delay") or 0.0),
        fault=eff.get("fault") or {},
    )


async def handle_chat(state: FakeState, body: Any, path: str, receive: Any, send: Any) -> None:
    model, messages, fake = _parse(body)
    texts, last_user = _texts(messages)
    eff = state.effective("chat", texts, lambda: msgspec.json.encode(messages).decode(), fake)
    if not await io.pre_response_faults(eff.get("fault"), receive):
        return
    plan = _plan(body, path, model, texts, last_user, eff)
    if body.get("stream"):
        await stream_completion(state, plan, receive, send)
    else:
        await _send_completion(plan, receive, send)


async def _send_completion(plan: ChatPlan, receive: Any, send: Any) -> None:
    """The non-streaming answer, after the delay its tokens would have taken."""
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    tool = plan.tool
    if tool is not None:
        message["tool_calls"] = [
            {"id": tool["id"], "type": "function", "function": {"name": tool["name"], "arguments": tool["arguments"]}}
        ]
    else:
        message["content"] = "".join(plan.pieces)
    obj = {
        "id": plan.cid,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish}],
        "usage": plan.usage,
    }
    fault = plan.fault
    total_delay = (plan.first_delay + plan.token_delay * max(0, len(plan.pieces) - 1)) if plan.pieces else 0.0
    if fault.get("stall_after") is not None and fault.get("stall"):
        total_delay += fault["stall"]
    if total_delay > 0:
        if not await io.guard(receive, lambda: anyio.sleep(total_delay)):
            return
    if fault.get("drop_after") is not None:
        await io.send_partial_and_drop(send, 200, msgspec.json.encode(obj))
        return
    await io.send_json(send, 200, obj, [(b"x-request-id", plan.request_id)])
