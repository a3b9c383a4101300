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
from collections import OrderedDict
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from litestar import WebSocket, websocket

from app.api.ws_protocol import (
    MAX_MESSAGE_BYTES,
    BadMessage,
    ChatJob,
    HandshakeRefused,
    authenticate_handshake,
    error_message,
    parse_chat_id,
    parse_chat_message,
    parse_namespace,
    refuse,
)
from app.api.framing import websocket_message
from app.api.wire import memory_json, memory_refs
from app.auth import Principal
from app.errors import MemchatError
from app.obs.context import set_org
from app.services import Services

log = logging.getLogger("memchat.ws")

MAX_SUBSCRIPTIONS = 8                 # namespaces one socket receives memory_committed events for
CLOSE_TOO_BIG = 1009
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


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
            namespace = parse_namespace(obj)
            self._subscribe(namespace)
            await self.send({"type": "subscribed", "namespace": namespace})
        elif kind == "history":
            await self._history(parse_namespace(obj), parse_chat_id(obj, required=True))
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
                await self.send({**event, "namespace": namespace,
                                 "memories": [memory_json(m) for m in event.get("memories", ())]})

    # -- conversation transcript (the page shows a memory's source conversation) --
    async def _history(self, namespace: str, chat_id: str | None) -> None:
        assert chat_id is not None
        turns = await self.services.chat.transcript(self.principal, namespace, chat_id)
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
            await self._fail(job, error_message(exc), exc.code or exc.error_type, exc.status_code)
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
        chat_service = self.services.chat
        chat = await chat_service.prepare_followup(self.principal, job.namespace, job.chat_id, job.content,
                                                   surface="ws", stream=True, commit_after=job.commit_after,
                                                   include_usage=True)
        job.started_chat_id = chat.chat_id
        await self.send({"type": "start", "chat_id": chat.chat_id, "namespace": job.namespace,
                         "commit_after": job.commit_after if job.commit_after is not None
                         else self.default_commit_after})
        await self.send({"type": "refs", "chat_id": chat.chat_id, "refs": memory_refs(chat.retrieved.used)})
        stream = await chat_service.open_stream(chat)
        job.recorded = True
        async with stream:  # leaving it (stop, disconnect, error) closes the upstream and records the turn
            async for event in stream:
                message = websocket_message(event)
                if message is not None:
                    await self.send(message)
        outcome = stream.outcome
        if outcome.error is not None:
            error = outcome.error
            message_text = error.get("message") if isinstance(error.get("message"), str) else "the upstream failed"
            code = error.get("code") if isinstance(error.get("code"), str) else "upstream_error"
            await self.error(message_text, code, chat_id=chat.chat_id)
        await self._done(job, usage=outcome.usage, finish_reason=outcome.finish_reason)


@websocket("/ws/chat")
async def chat_socket(socket: WebSocket[Any, Any, Any]) -> None:
    services: Services = socket.app.state.services
    try:
        principal = authenticate_handshake(socket, services)
    except HandshakeRefused as refusal:
        await refuse(socket, refusal)
        return
    set_org(principal.org_id)  # for the connection's log lines
    await socket.accept()
    await ChatSession(socket, services, principal).run()
