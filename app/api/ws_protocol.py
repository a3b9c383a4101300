"""The websocket chat protocol's edges: authenticating the handshake and parsing client messages."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
from litestar import WebSocket

from app.auth import Principal, key_from_headers
from app.chat.request import MAX_COMMIT_AFTER
from app.tenancy import validate_chat_id, validate_namespace
from app.errors import AuthenticationFailed, InvalidRequest, MemchatError, UpstreamError
from app.services import Services

MAX_MESSAGE_BYTES = 64 * 1024         # a larger client message closes the socket with 1009
_encode = msgspec.json.Encoder().encode


class HandshakeRefused(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


# -- handshake ------------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def same_origin(origin: str, host: str | None) -> bool:
    """Does the ``Origin`` of a request name the host (and port) it was sent to?"""
    if not host:
        return False
    try:
        parsed_origin = urlsplit(origin.strip())
        parsed_host = urlsplit("//" + host.strip())
        origin_port, host_port = parsed_origin.port, parsed_host.port
    except ValueError:
        return False
    scheme = parsed_origin.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed_origin.hostname or not parsed_host.hostname:
        return False
    default = _DEFAULT_PORTS[scheme]
    return (parsed_origin.hostname.lower() == parsed_host.hostname.lower()
            and (origin_port or default) == (host_port or default))


def authenticate_handshake(socket: WebSocket[Any, Any, Any], services: Services) -> Principal:
    headers = socket.headers
    origin = headers.get("origin")
    header_key = bool(headers.get("authorization") or headers.get("x-api-key"))
    if origin is not None:
        if not same_origin(origin, headers.get("host")):
            raise HandshakeRefused(403, "cross-origin websocket handshake refused: Origin must match Host",
                                   "bad_origin")
    elif not header_key and socket.cookies.get("vai_token"):
        # Browsers always send Origin; a cookie-authenticated handshake without one is not from the page.
        raise HandshakeRefused(403, "a handshake without an Origin header must send its key in an "
                                    "Authorization header", "origin_required")
    if len(headers.getall("authorization", [])) > 1 or len(headers.getall("x-api-key", [])) > 1:
        raise HandshakeRefused(401, "Send exactly one API key.", "invalid_api_key")
    try:
        return services.keyring.resolve(key_from_headers(headers, socket.cookies))
    except AuthenticationFailed as exc:
        raise HandshakeRefused(401, exc.message, "invalid_api_key") from None


async def refuse(socket: WebSocket[Any, Any, Any], refusal: HandshakeRefused) -> None:
    """Answer the handshake with a plain HTTP error (JSON body) when the server supports it, else 403."""
    extensions = socket.scope.get("extensions") or {}
    await socket.receive()  # websocket.connect
    if "websocket.http.response" not in extensions:
        await socket.close(code=1008, reason=refusal.message[:120])
        return
    error_type = "authentication_error" if refusal.status == 401 else "permission_error"
    body = _encode({"error": {"message": refusal.message, "type": error_type, "param": None, "code": refusal.code}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="memchat"'))
    await socket.send({"type": "websocket.http.response.start", "status": refusal.status, "headers": headers})
    await socket.send({"type": "websocket.http.response.body", "body": body, "more_body": False})


# -- client messages --------------------------------------------------------------------------------------


class BadMessage(Exception):
    def __init__(self, message: str, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


class ChatJob:
    """One client ``message``: what to send, and its progress (read by the reader for ``stop``)."""

    def __init__(self, content: str, namespace: str, chat_id: str | None, commit_after: int | None) -> None:
        self.content, self.namespace, self.chat_id, self.commit_after = content, namespace, chat_id, commit_after
        self.scope: anyio.CancelScope | None = None
        self.stop_requested = False
        self.started_chat_id: str | None = None   # set once ``start`` is sent
        self.recorded = False                      # the turn is (being) written to the turn log
        self.finished = False                      # ``done`` (or the final ``error``) sent


def _string(obj: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise BadMessage(f"'{name}' is required", param=name)
        return None
    if not isinstance(value, str):
        raise BadMessage(f"'{name}' must be a string", param=name)
    return value


def parse_namespace(obj: dict[str, Any]) -> str:
    try:
        return validate_namespace(_string(obj, "namespace"))
    except InvalidRequest as exc:
        raise BadMessage(exc.message, param="namespace") from None


def parse_chat_id(obj: dict[str, Any], *, required: bool = False) -> str | None:
    try:
        chat_id = validate_chat_id(_string(obj, "chat_id", required=required))
    except InvalidRequest as exc:
        raise BadMessage(exc.message, param="chat_id") from None
    if required and chat_id is None:
        raise BadMessage("'chat_id' is required", param="chat_id")
    return chat_id


def parse_chat_message(obj: dict[str, Any]) -> ChatJob:
    content = _string(obj, "content", required=True)
    assert content is not None
    if not content.strip():
        raise BadMessage("'content' must not be empty", param="content")
    commit_after = obj.get("commit_after")
    if commit_after is not None:
        if isinstance(commit_after, bool) or not isinstance(commit_after, int):
            raise BadMessage("'commit_after' must be an integer number of seconds", param="commit_after")
        if not 0 <= commit_after <= MAX_COMMIT_AFTER:
            raise BadMessage(f"'commit_after' must be between 0 and {MAX_COMMIT_AFTER} seconds", param="commit_after")
    return ChatJob(content, parse_namespace(obj), parse_chat_id(obj), commit_after)


def error_message(exc: MemchatError) -> str:
    if isinstance(exc, UpstreamError) and isinstance(exc.body, dict) and isinstance(exc.body.get("message"), str):
        return exc.body["message"]  # the upstream's own words for its 4xx
    return exc.message
