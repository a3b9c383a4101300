"""The Responses API (``POST /v1/responses``) as another framing of the one chat path.

- ``parse_responses_body``: validation of what memchat reads from the body (everything is forwarded).
- ``inject_instructions``: the memory section goes into ``instructions``, after the client's own. The
  Responses API does not carry ``instructions`` over from a ``previous_response_id``, so each request gets
  the memories retrieved for it and the upstream's stored conversation never accumulates stale memory
  blocks -- an injected *input item* would be stored by the upstream (``store: true``) and replayed in every
  later turn of the chain. The user's input items are never touched.
- ``ResponsesRelay``: the relay for the upstream's typed events (``event:`` + ``data:`` frames). Text comes
  from ``response.output_text.delta``, the end from ``response.completed`` / ``response.incomplete``, a
  failure from ``response.failed`` / ``error``. Frames are forwarded as they arrive, untouched except for
  ``response.created``, whose ``response`` object gains memchat's ``memory`` field. The terminal event is
  held until the turn is recorded (``release``), so a client that has ``response.completed`` knows its turn
  is durable -- the Responses counterpart of chat completions' ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from app.chat.request import decode_model_body
from app.chat.stream import StreamOutcome
from app.errors import InvalidRequest
from app.llm.sse import EventSplitter, event_data
from app.messages import RESPONSES_ROLES
from app.tenancy import has_control

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
MAX_RESPONSE_ID_LENGTH = 256
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _check_item(index: int, item: Any) -> None:
    where = f"input[{index}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{where}' must be an object", param=where)
    role = item.get("role")
    if role is None:
        if not isinstance(item.get("type"), str):
            raise InvalidRequest(f"'{where}' needs a 'role' (a message) or a 'type'", param=where)
        return
    if role not in RESPONSES_ROLES:
        raise InvalidRequest(f"'{where}.role' must be one of {sorted(RESPONSES_ROLES)}", param=f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of parts", param=f"{where}.content")
    for part_index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"'{where}.content[{part_index}]' must be an object with a 'type'",
                                 param=f"{where}.content[{part_index}]")


def parse_responses_body(raw: bytes) -> dict[str, Any]:
    """Decode and check a Responses API body; returns it unchanged (every field is forwarded)."""
    body = decode_model_body(raw)
    input_ = body.get("input")
    if input_ is not None:
        if isinstance(input_, list):
            for index, item in enumerate(input_):
                _check_item(index, item)
        elif not isinstance(input_, str):
            raise InvalidRequest("'input' must be a string or an array of input items", param="input")
    for name, kind, label in (("instructions", str, "a string"), ("previous_response_id", str, "a string"),
                              ("stream", bool, "a boolean"), ("store", bool, "a boolean")):
        value = body.get(name)
        if value is not None and not isinstance(value, kind):
            raise InvalidRequest(f"'{name}' must be {label}", param=name)
    previous = body.get("previous_response_id")
    if previous is not None and not (0 < len(previous) <= MAX_RESPONSE_ID_LENGTH and not has_control(previous)):
        raise InvalidRequest(f"'previous_response_id' must be 1-{MAX_RESPONSE_ID_LENGTH} printable characters",
                             param="previous_response_id")
    return body


def inject_instructions(body: dict[str, Any], section: str) -> dict[str, Any]:
    """The body with the memory section appended to the client's ``instructions`` (or as them)."""
    own = body.get("instructions")
    return {**body, "instructions": f"{own}\n\n{section}" if own else section}


def error_event(error: dict[str, Any], sequence_number: int) -> bytes:
    """The Responses API's stream error event for an OpenAI-style error object."""
    payload = {"type": "error", "code": error.get("code") or error.get("type") or "upstream_error",
               "message": str(error.get("message") or "the upstream failed"), "param": error.get("param"),
               "sequence_number": sequence_number}
    return b"event: error\ndata: " + _encode(payload) + b"\n\n"


class _Response(msgspec.Struct):
    id: str | None = None
    status: str | None = None
    error: Any = None
    incomplete_details: Any = None
    usage: dict[str, Any] | None = None


class _Event(msgspec.Struct):
    type: str = ""
    delta: Any = None
    sequence_number: int | None = None
    response: _Response | None = None
    code: Any = None
    message: Any = None
    param: Any = None


_decode_event = msgspec.json.Decoder(_Event).decode


class ResponsesRelay:
    """Parses upstream Responses SSE bytes into (bytes to forward, text delta), keeping the outcome."""

    def __init__(self, created_fields: dict[str, Any] | None = None) -> None:
        self._splitter = EventSplitter()
        self._created_fields = created_fields
        self.outcome = StreamOutcome()
        self.next_sequence = 0
        self._held: list[bytes] = []
        self._terminal = False

    @property
    def ended_cleanly(self) -> bool:
        return self._terminal or self.outcome.error is not None

    def release(self) -> bytes:
        """The frames held back since the terminal event (sent once the turn is recorded)."""
        held, self._held = b"".join(self._held), []
        return held

    def feed(self, raw: bytes) -> tuple[bytes, str]:
        out: list[bytes] = []
        deltas: list[str] = []
        for event in self._splitter.feed(raw):
            frame = self._handle(event, deltas)
            (self._held if self._terminal else out).append(frame)
        delta = "".join(deltas)
        if delta:
            self.outcome.text_parts.append(delta)
        return b"".join(out), delta

    def _handle(self, event: bytes, deltas: list[str]) -> bytes:
        data = event_data(event)
        if data is None or data == b"[DONE]":
            return event + b"\n\n"
        try:
            parsed = _decode_event(data)
        except msgspec.DecodeError:
            return event + b"\n\n"
        if parsed.sequence_number is not None:
            self.next_sequence = parsed.sequence_number + 1
        kind = parsed.type
        if kind == "response.output_text.delta":
            if isinstance(parsed.delta, str):
                deltas.append(parsed.delta)
            return event + b"\n\n"
        if parsed.response is not None and parsed.response.id and self.outcome.response_id is None:
            self.outcome.response_id = parsed.response.id
        if kind == "response.created" and self._created_fields is not None:
            fields, self._created_fields = self._created_fields, None
            return self._with_fields(event, data, fields)
        if kind in TERMINAL:
            self._terminal = True
            self._end(kind, parsed.response)
        elif kind == "error":
            self.outcome.error = {"message": str(parsed.message or "the upstream reported an error"),
                                  "type": "upstream_error", "param": parsed.param, "code": parsed.code}
        return event + b"\n\n"

    def _end(self, kind: str, response: _Response | None) -> None:
        if response is not None and response.usage:
            self.outcome.usage = response.usage
        if kind == "response.completed":
            self.outcome.finish_reason = "stop"
        elif kind == "response.incomplete":
            details = response.incomplete_details if response is not None else None
            reason = details.get("reason") if isinstance(details, dict) else None
            self.outcome.finish_reason = reason if isinstance(reason, str) else "incomplete"
        else:
            error = response.error if response is not None else None
            self.outcome.error = error if isinstance(error, dict) else {"message": "the response failed"}

    @staticmethod
    def _with_fields(event: bytes, data: bytes, fields: dict[str, Any]) -> bytes:
        decoded = _decode(data)
        if isinstance(decoded, dict) and isinstance(decoded.get("response"), dict):
            decoded["response"].update(fields)
        lines = [line for line in event.split(b"\n") if not line.startswith(b"data:")]
        return b"\n".join([*lines, b"data: " + _encode(decoded)]) + b"\n\n"
