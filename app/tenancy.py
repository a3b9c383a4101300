"""Who owns what: the rules for the identifiers that scope data inside an organisation.

An organisation comes from the API key (`app.auth`); inside it a *namespace* is one end user (``""``
is the organisation's global namespace) and a *chat id* / personal-chat *session id* names one
conversation. Every surface validates these with the functions below, so the limits are the same
everywhere; `NAMESPACE_PATTERN` is the same rule as a JSON-schema regex for the OpenAPI document.

Each organisation also has one *shared scope*: memories every end user of the organisation may be shown
(personal chat always searches it beside the user's namespace; the OpenAI surface with
``include_shared=true``). It is stored as the namespace `SHARED_NAMESPACE`, a name no client can send:
it starts with a control character, which `validate_namespace` refuses, so no chat surface can hold a
conversation there and no idle commit can ever write into it, and no namespace of an earlier release can
collide with it. Clients reach it only through the memory REST API's ``/api/v1/memory/shared`` routes.
"""

from __future__ import annotations

from app.errors import InvalidRequest

MAX_NAMESPACE_LENGTH = 256
MAX_CHAT_ID_LENGTH = 128
NAMESPACE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
SHARED_NAMESPACE = "\x1fshared"   # the organisation's shared scope (see above); unreachable as a namespace


def has_control(value: str) -> bool:
    """True when ``value`` holds a C0/C1 control character (or DEL)."""
    return any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in value)


def validate_namespace(value: str | None, *, param: str = "namespace") -> str:
    """A namespace is any printable string of up to 256 characters; None and "" are the global one."""
    if value is None:
        return ""
    if len(value) > MAX_NAMESPACE_LENGTH:
        raise InvalidRequest(f"'{param}' is longer than {MAX_NAMESPACE_LENGTH} characters", param=param)
    if has_control(value):
        raise InvalidRequest(f"'{param}' must not contain control characters", param=param)
    return value


def validate_chat_id(value: str | None, *, param: str = "chat_id") -> str | None:
    """A chat (or session) id is 1-128 printable characters; None and "" mean "none given"."""
    if value is None or value == "":
        return None
    if len(value) > MAX_CHAT_ID_LENGTH or has_control(value):
        raise InvalidRequest(f"'{param}' must be 1-{MAX_CHAT_ID_LENGTH} printable characters", param=param)
    return value


def scope_of(namespace: str) -> str:
    """``"shared"`` for the organisation's shared scope, ``"user"`` for any end user's namespace."""
    return "shared" if namespace == SHARED_NAMESPACE else "user"
