"""The request being served: its id, surface and organisation, in a context variable.

The ASGI wrapper (`app.api.observe`) sets one `RequestInfo` per HTTP request or websocket connection;
tasks started while serving it inherit the context, so every log line of the request (`app.obs.logs`)
and the upstream request (`app.llm.upstream`) carry its id. ``RequestInfo`` is mutable so that layers
below can add what they learn (the organisation, once the key is resolved).
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar

MAX_REQUEST_ID = 128
HEADER = "x-request-id"


class RequestInfo:
    __slots__ = ("request_id", "surface", "org_id")

    def __init__(self, request_id: str, surface: str) -> None:
        self.request_id = request_id
        self.surface = surface
        self.org_id: str | None = None


CURRENT: ContextVar[RequestInfo | None] = ContextVar("memchat_request", default=None)


def current() -> RequestInfo | None:
    return CURRENT.get()


def current_request_id() -> str | None:
    info = CURRENT.get()
    return None if info is None else info.request_id


def set_org(org_id: str) -> None:
    info = CURRENT.get()
    if info is not None:
        info.org_id = org_id


def accept_request_id(raw: bytes | str | None) -> str:
    """The client's ``x-request-id`` when it is usable (1..128 printable ASCII characters, no spaces),
    else a new one (32 hex digits). Never an error: an unusable id is replaced, not refused."""
    if raw:
        text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        if len(text) <= MAX_REQUEST_ID and all("!" <= c <= "~" for c in text):
            return text
    return uuid.uuid4().hex
