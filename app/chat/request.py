"""Validation of what a chat request carries: its query parameters and the OpenAI body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from app.errors import InvalidRequest
from app.tenancy import validate_chat_id, validate_namespace

MAX_COMMIT_AFTER = 30 * 24 * 3600
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_decode = msgspec.json.Decoder().decode


class ChatParams(msgspec.Struct, frozen=True):
    namespace: str = ""
    commit_after: int | None = None
    chat_id: str | None = None
    include_shared: bool = False   # also search the organisation's shared scope (`app.tenancy`)


_FLAGS = {"": False, "false": False, "0": False, "true": True, "1": True}


def parse_flag(value: str | None, param: str) -> bool:
    """A boolean query parameter: ``true``/``1`` or ``false``/``0`` (absent or empty: false)."""
    flag = _FLAGS.get((value or "").lower())
    if flag is None:
        raise InvalidRequest(f"'{param}' must be true or false", param=param)
    return flag


def parse_chat_params(get: Callable[[str], str | None]) -> ChatParams:
    """Read ``namespace``, ``commit_after``, ``chat_id`` and ``include_shared`` from the query string."""
    raw_commit = get("commit_after")
    commit_after: int | None = None
    if raw_commit is not None and raw_commit != "":
        try:
            commit_after = int(raw_commit)
        except ValueError:
            raise InvalidRequest("'commit_after' must be an integer number of seconds", param="commit_after") from None
        if not 0 <= commit_after <= MAX_COMMIT_AFTER:
            raise InvalidRequest(
                f"'commit_after' must be between 0 and {MAX_COMMIT_AFTER} seconds", param="commit_after"
            )
    return ChatParams(
        namespace=validate_namespace(get("namespace")),
        commit_after=commit_after,
        chat_id=validate_chat_id(get("chat_id")),
        include_shared=parse_flag(get("include_shared"), "include_shared"),
    )


def _check_message(index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"'{where}' must be an object", param=where)
    role = message.get("role")
    if not isinstance(role, str):
        raise InvalidRequest(f"'{where}.role' is required and must be a string", param=f"{where}.role")
    if role not in ROLES:
        raise InvalidRequest(
            f"'{where}.role' must be one of {sorted(ROLES)}, got {role[:40]!r}", param=f"{where}.role"
        )
    content = message.get("content")
    if content is None:
        if role != "assistant":  # only an assistant turn (e.g. one with tool_calls) may omit content
            raise InvalidRequest(f"'{where}.content' is required", param=f"{where}.content")
        return
    if isinstance(content, str):
        return
    if isinstance(content, list):
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequest(
                    f"'{where}.content[{part_index}]' must be an object with a 'type'",
                    param=f"{where}.content[{part_index}]",
                )
        return
    raise InvalidRequest(f"'{where}.content' must be a string or an array of parts", param=f"{where}.content")


def decode_model_body(raw: bytes) -> dict[str, Any]:
    """Decode an OpenAI request body: a JSON object with a non-empty ``model`` (any API)."""
    if not raw.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object", code="invalid_json")
    try:
        body = _decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    return body


def parse_openai_body(raw: bytes) -> dict[str, Any]:
    """Decode and check a Chat Completions body; returns it unchanged (every field is forwarded)."""
    body = decode_model_body(raw)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        _check_message(index, message)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    return body
