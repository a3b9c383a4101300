"""What the fake can be told to do: server defaults, per-rule and per-request overrides, and faults.

Every override dict that reaches the fake (CLI, ``POST /_fake/config``, ``POST /_fake/rules``, a request's
``"fake"`` field) goes through ``validate_overrides`` here, so a typo in a test fails loudly with a 400
instead of silently doing nothing. Errors are OpenAI-shaped (``error_body``) because the clients under
test parse them as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

OVERRIDE_KEYS = ("reply", "tokens", "first_token_delay", "token_delay", "tool_call", "fault")
RULE_KEYS = OVERRIDE_KEYS + ("match", "times", "endpoint")
CONFIG_KEYS = OVERRIDE_KEYS + ("embedding_dim", "responses_api")
FAULT_KEYS = (
    "status", "message", "type", "code", "param", "retry_after", "drop_after", "end_after", "stall", "stall_after",
)

MODELS = ("fake-gpt", "fake-gpt-mini", "fake-embedding")

DEFAULT_FAULT_MESSAGES = {
    400: "Bad request (fake fault).",
    401: "Incorrect API key provided (fake fault).",
    403: "Permission denied (fake fault).",
    404: "Not found (fake fault).",
    429: "Rate limit reached (fake fault).",
    500: "The server had an error while processing your request. Sorry about that! (fake fault)",
    502: "Bad gateway (fake fault).",
    503: "The engine is currently overloaded, please try again later. (fake fault)",
}


@dataclass
class FakeConfig:
    """Server defaults.  Also the values ``POST /_fake/reset`` restores."""

    reply: str | None = None
    tokens: int | None = None
    first_token_delay: float | None = None
    token_delay: float | None = None
    tool_call: dict[str, Any] | None = None
    fault: dict[str, Any] | None = None
    embedding_dim: int = 256
    responses_api: bool = True  # False: ``/v1/responses`` is a 404, like an upstream without the endpoint
    record_requests: bool = True
    max_records: int = 10000

    def overrides(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in OVERRIDE_KEYS}


class ApiError(Exception):
    """Turned into an OpenAI-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or []


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def error_body(status: int, message: str, type_: str | None = None, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    if type_ is None:
        if status == 429:
            type_ = "requests"
        elif status >= 500:
            type_ = "server_error"
        else:
            type_ = "invalid_request_error"
    if code is None:
        if status == 429:
            code = "rate_limit_exceeded"
        elif status == 401:
            code = "invalid_api_key"
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def fault_error(fault: dict[str, Any]) -> ApiError:
    """The error a ``fault`` with a ``status`` answers with (``retry_after`` becomes a header)."""
    status = fault["status"]
    msg = fault.get("message") or DEFAULT_FAULT_MESSAGES.get(status, f"Fake fault with status {status}.")
    headers = []
    if fault.get("retry_after") is not None:
        headers.append((b"retry-after", repr(float(fault["retry_after"])).encode()))
    return ApiError(status, msg, fault.get("type"), fault.get("code"), fault.get("param"), headers)


# --------------------------------------------------------------------------- validation


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate_fault(f: Any, where: str) -> dict[str, Any] | None:
    if f is None:
        return None
    if not isinstance(f, dict):
        raise bad(f"{where}.fault must be an object or null")
    unknown = set(f) - set(FAULT_KEYS)
    if unknown:
        raise bad(f"{where}.fault: unknown keys {sorted(unknown)}; allowed: {list(FAULT_KEYS)}")
    if "status" in f and f["status"] is not None and not (is_int(f["status"]) and 400 <= f["status"] <= 599):
        raise bad(f"{where}.fault.status must be an int in 400..599")
    for k in ("drop_after", "end_after", "stall_after"):
        if f.get(k) is not None and not (is_int(f[k]) and f[k] >= 0):
            raise bad(f"{where}.fault.{k} must be a non-negative int")
    for k in ("stall", "retry_after"):
        if f.get(k) is not None and not (_is_num(f[k]) and f[k] >= 0):
            raise bad(f"{where}.fault.{k} must be a non-negative number")
    for k in ("message", "type", "code", "param"):
        if f.get(k) is not None and not isinstance(f[k], str):
            raise bad(f"{where}.fault.{k} must be a string")
    return dict(f)


def _validate_tool_call(tc: Any, where: str) -> dict[str, Any] | None:
    if tc is None:
        return None
    if not isinstance(tc, dict) or not isinstance(tc.get("name"), str) or not tc["name"]:
        raise bad(f"{where}.tool_call must be an object with a non-empty 'name'")
    args = tc.get("arguments", "{}")
    if not isinstance(args, str):
        args = msgspec.json.encode(args).decode()
    out = {"name": tc["name"], "arguments": args}
    if tc.get("id") is not None:
        if not isinstance(tc["id"], str):
            raise bad(f"{where}.tool_call.id must be a string")
        out["id"] = tc["id"]
    return out


def _check_scalar(k: str, v: Any, where: str) -> None:
    """Raise a 400 when the scalar key ``k`` has a value of the wrong type or range."""
    if k == "reply":
        if v is not None and not isinstance(v, str):
            raise bad(f"{where}.reply must be a string or null")
    elif k == "tokens":
        if v is not None and not (is_int(v) and v >= 0):
            raise bad(f"{where}.tokens must be a non-negative int or null")
    elif k in ("first_token_delay", "token_delay"):
        if v is not None and not (_is_num(v) and v >= 0):
            raise bad(f"{where}.{k} must be a non-negative number or null")
    elif k == "match":
        if v is not None and not isinstance(v, str):
            raise bad(f"{where}.match must be a string or null")
    elif k == "times":
        if v is not None and not (is_int(v) and v >= 1):
            raise bad(f"{where}.times must be a positive int or null")
    elif k == "endpoint":
        if v not in ("chat", "responses", "embeddings", "any"):
            raise bad(f"{where}.endpoint must be 'chat', 'responses', 'embeddings' or 'any'")
    elif k == "responses_api":
        if not isinstance(v, bool):
            raise bad(f"{where}.responses_api must be a boolean")
    elif k == "embedding_dim":
        if not (is_int(v) and 1 <= v <= 65536):
            raise bad(f"{where}.embedding_dim must be an int in 1..65536")


def validate_overrides(d: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """Validate and normalise a dict of override keys; returns a new dict."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise bad(f"'{where}' must be an object")
    unknown = set(d) - set(allowed)
    if unknown:
        raise bad(f"'{where}': unknown keys {sorted(unknown)}; allowed: {list(allowed)}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k == "tool_call":
            v = _validate_tool_call(v, where)
        elif k == "fault":
            v = _validate_fault(v, where)
        else:
            _check_scalar(k, v, where)
        out[k] = v
    return out
