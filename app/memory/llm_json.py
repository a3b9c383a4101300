"""Reading a JSON-mode chat completion: the model's text, and the JSON in it (bare, fenced, or after a
preamble). Shared by the memory and entity extractors."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from app.messages import message_text


class ExtractionParseError(ValueError):
    """The model's output is not a usable facts document."""


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)


def response_text(response: Any) -> str:
    """The text of a JSON-mode completion (``choices[0].message``); `ExtractionParseError` when it has none."""
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ExtractionParseError("response has no choices[0].message") from exc
    content = message_text(message) if isinstance(message, dict) else ""
    if not content.strip():
        raise ExtractionParseError("response message has no text content")
    return content


def decode_payload(text: str) -> Any:
    text = text.strip().lstrip("\ufeff")
    candidates = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = max(text.rfind("}"), text.rfind("]"))
        if end > start:
            candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return msgspec.json.decode(candidate)
        except msgspec.DecodeError:
            continue
    raise ExtractionParseError("output is not valid JSON")
