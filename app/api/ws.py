"""Websocket chat for the browser demo: ``/ws/chat`` (protocol: README, "Web demo").

The handshake is authenticated by the ``vai_token`` cookie (set by ``POST /auth/session``) or by an
``Authorization`` / ``X-API-Key`` header — never by anything in the URL — and a browser's handshake must
come from the page's own origin. One socket runs four things at once: a reader (parses and validates
client messages), one worker (streams one reply at a time; a second message while a reply streams is
rejected with ``code: "busy"``), a pinger, and one forwarder per namespace the socket used, which pushes
``memory_committed`` events. The client sends only its new message and a ``chat_id``: memchat rebuilds
the conversation from its turn log, as it does for the personal chat API.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from contextlib import aclosing
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from litestar import WebSocket, websocket

from app.auth import Principal, key_from_headers
from app.chat.request import MAX_COMMIT_AFTER, ChatParams, validate_chat_id, validate_namespace
from app.errors import AuthenticationFailed, InvalidRequest, MemchatError, NotFound, UpstreamError
from app.services import Services

log = logging.getLogger("memchat.ws")

MAX_MESSAGE_BYTES = 64 * 1024         # a larger client message closes the socket with 1009
MAX_SUBSCRIPTIONS = 8                 # namespaces one socket receives memory_committed events for
CLOSE_TOO_BIG = 1009
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


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


def _namespace(obj: dict[str, Any]) -> str:
    try:
        return validate_namespace(_string(obj, "namespace"))
    except InvalidRequest as exc:
        raise BadMessage(exc.message, param="namespace") from None


def _chat_id(obj: dict[str, Any], *, required: bool = False) -> str | None:
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
    return ChatJob(content, _namespace(obj), _chat_id(obj), commit_after)


def _error_message(exc: MemchatError) -> str:
    if isinstance(exc, UpstreamError) and isinstance(exc.body, dict) and isinstance(exc.body.get("message"), str):
        return exc.body["message"]  # the upstream's own words for its 4xx
    return exc.message


# -- the session ------------------------------------------------------------------------------------------


class ChatSession:
    def __init__(self, socket: WebSocket[Any, Any, Any], services: Services, principal: Principal) -> None:
        self.socket = socket
        self.services = services
        self.principal = principal
        self.closed = False
        self._send_lock = anyio.Lock()
        self._jobs_in, self._jobs_out = anyio.create_memory_object_stream[ChatJob](1)
        self._current: ChatJob | None = None
        self._subscriptions: OrderedDict[str, MemoryObjectSendStream[dict[str, Any]]] = OrderedDict()
        self._task_group: TaskGroup | None = None

    @property
    def default_commit_after(self) -> int:
        return self.services.settings.memory.commit_after

    async def send(self, payload: dict[str, Any]) -> None:
        """Send one JSON message; a socket that went away ends the session (never raises)."""
        if self.closed:
            return
        data = _encode(payload).decode()
        async with self._send_lock:
            if self.closed:
                return
            try:
                await self.socket.send_text(data)
            except Exception as exc:  # disconnected under us: WebSocketDisconnect, ClientDisconnected, ...
                log.debug("websocket send failed: %r", exc)
                self._lost()

    def _lost(self) -> None:
        self.closed = True
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def error(self, message: str, code: str, **extra: Any) -> None:
        await self.send({"type": "error", "message": message, "code": code,
                         **{k: v for k, v in extra.items() if v is not None}})

    # -- lifecycle --
    async def run(self) -> None:
        close: tuple[int, str] | None = None
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                task_group.start_soon(self._worker)
                task_group.start_soon(self._pinger)
                await self.send({"type": "ready", "max_message_bytes": MAX_MESSAGE_BYTES,
                                 "commit_after": self.default_commit_after,
                                 "ping_interval": self.services.settings.server.sse_ping_interval})
                close = await self._reader()
                task_group.cancel_scope.cancel()
        finally:
            for namespace in list(self._subscriptions):
                self._unsubscribe(namespace)
        if close is not None and not self.closed:
            self.closed = True
            try:
                await self.socket.close(code=close[0], reason=close[1])
            except Exception as exc:
                log.debug("websocket close failed: %r", exc)

    async def _pinger(self) -> None:
        interval = self.services.settings.server.sse_ping_interval
        if interval <= 0:
            return
        while True:
            await anyio.sleep(interval)
            await self.send({"type": "ping"})

    async def _reader(self) -> tuple[int, str] | None:
        """Read until the client leaves (None) or must be closed ((code, reason))."""
        while True:
            try:
                message = await self.socket.receive()
            except Exception:  # Litestar raises once the socket is known to be gone
                self.closed = True
                return None
            if message["type"] == "websocket.disconnect":
                self.closed = True
                return None
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            if text is not None and len(text) > MAX_MESSAGE_BYTES:  # cheap check before encoding
                return CLOSE_TOO_BIG, f"message larger than {MAX_MESSAGE_BYTES} bytes"
            raw = text.encode("utf-8", "surrogatepass") if text is not None else (message.get("bytes") or b"")
            if len(raw) > MAX_MESSAGE_BYTES:
                return CLOSE_TOO_BIG, f"message larger than {MAX_MESSAGE_BYTES} bytes"
            try:
                await self._handle(raw)
            except BadMessage as exc:
                await self.error(exc.message, exc.code, param=exc.param)

    async def _handle(self, raw: bytes) -> None:
        try:
            obj = _decode(raw)
        except msgspec.DecodeError:
            raise BadMessage("the message is not valid JSON", "invalid_json") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise BadMessage("a message must be a JSON object with a string 'type'", "invalid_message", "type")
        kind = obj["type"]
        if kind == "message":
            job = parse_chat_message(obj)
            if self._current is not None:
                raise BadMessage("a reply is still streaming: wait for its 'done' (or send 'stop') "
                                 "before sending the next message", "busy")
            self._current = job
            self._subscribe(job.namespace)
            self._jobs_in.send_nowait(job)  # the worker is idle, so the one-slot buffer is free
        elif kind == "stop":
            job = self._current
            if job is not None:
                job.stop_requested = True
                if job.scope is not None:
                    job.scope.cancel()
        elif kind == "subscribe":
            namespace = _namespace(obj)
            self._subscribe(namespace)
            await self.send({"type": "subscribed", "namespace": namespace})
        elif kind == "history":
            await self._history(_namespace(obj), _chat_id(obj, required=True))
        elif kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            pass
        else:
            raise BadMessage(f"unknown message type {kind[:40]!r}: expected 'message', 'stop', 'history', "
                             "'subscribe' or 'ping'", "unknown_type", "type")

    # -- memory_committed events --
    def _subscribe(self, namespace: str) -> None:
        if namespace in self._subscriptions:
            self._subscriptions.move_to_end(namespace)
            return
        while len(self._subscriptions) >= MAX_SUBSCRIPTIONS:
            self._unsubscribe(next(iter(self._subscriptions)))
        send, receive = self.services.events.subscribe(self.principal.org_id, namespace)
        self._subscriptions[namespace] = send
        assert self._task_group is not None
        self._task_group.start_soon(self._forward, namespace, receive)

    def _unsubscribe(self, namespace: str) -> None:
        send = self._subscriptions.pop(namespace, None)
        if send is not None:
            self.services.events.unsubscribe(self.principal.org_id, namespace, send)

    async def _forward(self, namespace: str, receive: MemoryObjectReceiveStream[dict[str, Any]]) -> None:
        async with receive:
            async for event in receive:
                await self.send({**event, "namespace": namespace})

    # -- conversation transcript (the page shows a memory's source conversation) --
    async def _history(self, namespace: str, chat_id: str | None) -> None:
        assert chat_id is not None
        turns = await self.services.conversations.history(self.principal.org_id, namespace, chat_id)
        await self.send({"type": "history", "namespace": namespace, "chat_id": chat_id, "turns": [
            {"turn_id": t.turn_id, "seq": t.seq, "user": t.user, "assistant": t.assistant, "status": t.status,
             "created_at": t.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")} for t in turns]})

    # -- chat --
    async def _worker(self) -> None:
        async with self._jobs_out:
            async for job in self._jobs_out:
                try:
                    await self._run_job(job)
                finally:
                    self._current = None

    async def _run_job(self, job: ChatJob) -> None:
        job.scope = anyio.CancelScope()
        try:
            with job.scope:
                if job.stop_requested:
                    job.scope.cancel()
                await self._chat(job)
        except MemchatError as exc:
            await self._fail(job, _error_message(exc), exc.code or exc.error_type, exc.status_code)
            return
        except Exception:
            log.exception("websocket chat failed")
            await self._fail(job, "memchat hit an internal error; it has been logged", "internal_error", 500)
            return
        if job.scope.cancelled_caught and not job.finished:  # the client sent 'stop'
            if job.started_chat_id is None:
                await self.error("stopped before the reply started", "stopped")
            else:
                await self._done(job, stopped=True)

    async def _fail(self, job: ChatJob, message: str, code: str, status: int) -> None:
        with anyio.CancelScope(shield=True):
            await self.error(message, code, status=status, chat_id=job.started_chat_id)
            if job.started_chat_id is not None and not job.finished:
                await self._done(job)

    async def _done(self, job: ChatJob, *, usage: dict[str, Any] | None = None,
                    finish_reason: str | None = None, stopped: bool = False) -> None:
        done: dict[str, Any] = {"type": "done", "chat_id": job.started_chat_id}
        if job.recorded:
            done["commit_after"] = job.commit_after if job.commit_after is not None else self.default_commit_after
        if usage is not None:
            done["usage"] = usage
        if finish_reason is not None:
            done["finish_reason"] = finish_reason
        if stopped:
            done["stopped"] = True
        job.finished = True
        with anyio.CancelScope(shield=True):
            await self.send(done)

    async def _chat(self, job: ChatJob) -> None:
        services, principal = self.services, self.principal
        messages: list[dict[str, Any]] = []
        chat_id = job.chat_id
        if chat_id is not None:
            history = await services.conversations.history(principal.org_id, job.namespace, chat_id)
            if not history:
                raise NotFound(f"conversation {chat_id!r} not found in this namespace")
            for turn in history:
                messages.append({"role": "user", "content": turn.user})
                if turn.assistant:
                    messages.append({"role": "assistant", "content": turn.assistant})
        else:
            chat_id = str(uuid.uuid4())  # a new conversation, never matched to an earlier one by content
        messages.append({"role": "user", "content": job.content})
        body: dict[str, Any] = {"model": services.settings.server.default_model, "messages": messages,
                                "stream": True, "stream_options": {"include_usage": True}}
        params = ChatParams(namespace=job.namespace, commit_after=job.commit_after, chat_id=chat_id)
        chat = await services.pipeline.prepare(principal, params, body, surface="ws")
        job.started_chat_id = chat.chat_id
        await self.send({"type": "start", "chat_id": chat.chat_id, "namespace": job.namespace,
                         "commit_after": job.commit_after if job.commit_after is not None
                         else self.default_commit_after})
        await self.send({"type": "refs", "chat_id": chat.chat_id, "refs": chat.retrieved.refs})
        relay = await services.pipeline.open_relay(chat, first_chunk_fields=None)
        # No await between open_relay and the first iteration: once the stream runs, closing it (stop,
        # disconnect) closes the upstream request and records the partial turn.
        job.recorded = True
        async with aclosing(services.pipeline.stream(chat, relay)) as items:
            async for _frame, delta in items:
                if delta:
                    await self.send({"type": "token", "token": delta})
        outcome = relay.outcome
        if outcome.error is not None:
            error = outcome.error
            message = error.get("message") if isinstance(error.get("message"), str) else "the upstream failed"
            code = error.get("code") if isinstance(error.get("code"), str) else "upstream_error"
            await self.error(message, code, chat_id=chat.chat_id)
        await self._done(job, usage=outcome.usage, finish_reason=outcome.finish_reason)


@websocket("/ws/chat")
async def chat_socket(socket: WebSocket[Any, Any, Any]) -> None:
    services: Services = socket.app.state.services
    try:
        principal = authenticate_handshake(socket, services)
    except HandshakeRefused as refusal:
        await refuse(socket, refusal)
        return
    await socket.accept()
    await ChatSession(socket, services, principal).run()
