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
