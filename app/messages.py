"""Reading OpenAI-style chat messages: the one place that knows where a message's text lives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message: string content, or the text parts of a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: Sequence[Any]) -> str:
    """The text of the last user message ("" when there is none)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


def completion_text(response: Any) -> str | None:
    """The assistant text of a Chat Completions response (``choices[0].message.content``), if any."""
    choices = response.get("choices") if isinstance(response, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return message["content"]
    return None


RESPONSES_ROLES = frozenset({"system", "developer", "user", "assistant"})
_TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})


def responses_input_messages(input_: Any) -> list[dict[str, Any]]:
    """The Responses API ``input`` (a string, or a list of items) as chat-style ``{"role", "content"}``
    messages with plain-text content: a string is one user message; message items (with a ``role``) keep
    their role and the text of their ``input_text`` / ``output_text`` parts; other items (function calls,
    their outputs, reasoning, item references) carry no conversation text and are left out."""
    if isinstance(input_, str):
        return [{"role": "user", "content": input_}]
    out: list[dict[str, Any]] = []
    for item in input_ if isinstance(input_, list) else ():
        if not isinstance(item, dict) or item.get("role") not in RESPONSES_ROLES:
            continue
        if item.get("type", "message") != "message":
            continue
        content = item.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content
                               if isinstance(p, dict) and p.get("type") in _TEXT_PART_TYPES)
        out.append({"role": item["role"], "content": content if isinstance(content, str) else ""})
    return out


def response_output_text(response: Any) -> str | None:
    """The assistant text of a Responses API response object (its ``output_text`` parts), if any."""
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list):
        return None
    texts = [part["text"] for item in output if isinstance(item, dict) and item.get("type") == "message"
             for part in item.get("content") or () if isinstance(part, dict)
             and part.get("type") == "output_text" and isinstance(part.get("text"), str)]
    return "".join(texts) if texts else None
