"""The chat pipeline every surface goes through.

request → retrieve memories (org + namespace) → inject one memory section → upstream (or offline) →
relay the stream → record the turn. Surfaces differ only in how they frame what comes out.
"""

from __future__ import annotations

import uuid
from contextlib import aclosing, asynccontextmanager
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import anyio
import msgspec

from app.auth import Principal
from app.chat.relay import Relay, StreamOutcome
from app.chat.request import ChatParams
from app.chat.sse import DONE_FRAME
from app.llm.backend import ChatBackend, ChatContext


class Retrieved(msgspec.Struct, frozen=True):
    """Memories chosen for a request: the refs to show and the system section to inject."""

    refs: list[dict[str, Any]] = msgspec.field(default_factory=list)
    section: str | None = None
    memories: list[str] = msgspec.field(default_factory=list)
    searched: int = 0


class Retriever(Protocol):
    async def retrieve(self, org_id: str, namespace: str, messages: Sequence[dict[str, Any]]) -> Retrieved: ...

    def known_empty(self, org_id: str, namespace: str) -> bool:
        """True when there is certainly nothing to retrieve (answered from memory, no I/O)."""
        ...


class ChatSlot(msgspec.Struct, frozen=True):
    """Where a request's turn goes: its conversation, its position, and the hash of what preceded it."""

    chat_id: str
    seq: int = 1
    prefix_hash: str = ""
    is_new: bool = True


class TurnRecorder(Protocol):
    async def resolve_chat(self, org_id: str, namespace: str, chat_id: str | None,
                           messages: Sequence[dict[str, Any]]) -> ChatSlot: ...

    async def record(self, chat: PreparedChat, outcome: StreamOutcome) -> None: ...


class PreparedChat(msgspec.Struct):
    principal: Principal
    params: ChatParams
    body: dict[str, Any]            # what goes upstream (client body + memory section)
    client_messages: list[dict[str, Any]]
    slot: ChatSlot
    retrieved: Retrieved
    surface: str = "openai"

    @property
    def chat_id(self) -> str:
        return self.slot.chat_id

    @property
    def memory_field(self) -> dict[str, Any]:
        return {"refs": self.retrieved.refs, "chat_id": self.chat_id}

    @property
    def headers(self) -> dict[str, str]:
        return {"x-memchat-chat-id": self.chat_id, "x-memchat-memories": str(len(self.retrieved.refs))}


def inject_section(messages: list[dict[str, Any]], section: str) -> list[dict[str, Any]]:
    """Insert memchat's memory section as its own system message after the client's leading system
    messages; the user's messages are never rewritten."""
    insert_at = 0
    while insert_at < len(messages) and messages[insert_at].get("role") in ("system", "developer"):
        insert_at += 1
    return [*messages[:insert_at], {"role": "system", "content": section}, *messages[insert_at:]]


class ChatPipeline:
    def __init__(self, backend: ChatBackend, retriever: Retriever | None = None,
                 recorder: TurnRecorder | None = None) -> None:
        self.backend = backend
        self.retriever = retriever
        self.recorder = recorder

    async def prepare(self, principal: Principal, params: ChatParams, body: dict[str, Any], *,
                      surface: str = "openai") -> PreparedChat:
        messages: list[dict[str, Any]] = body["messages"]
        retrieved = Retrieved()
        slot = ChatSlot(chat_id=params.chat_id or str(uuid.uuid4()))

        async def retrieve() -> None:
            nonlocal retrieved
            if self.retriever is not None:
                retrieved = await self.retriever.retrieve(principal.org_id, params.namespace, messages)

        async def resolve() -> None:
            nonlocal slot
            if self.recorder is not None:
                slot = await self.recorder.resolve_chat(principal.org_id, params.namespace, params.chat_id,
                                                        messages)

        if self.retriever is None or self.retriever.known_empty(principal.org_id, params.namespace):
            await resolve()  # nothing to retrieve: no task group to pay for
        else:
            try:
                async with anyio.create_task_group() as group:  # both before the upstream call, side by side
                    group.start_soon(retrieve)
                    group.start_soon(resolve)
            except BaseExceptionGroup as group_error:  # surface the error itself, not the group, to the caller
                raise group_error.exceptions[0] from None
        upstream_body = body
        if retrieved.section:
            upstream_body = {**body, "messages": inject_section(messages, retrieved.section)}
        return PreparedChat(principal=principal, params=params, body=upstream_body, client_messages=messages,
                            slot=slot, retrieved=retrieved, surface=surface)

    def _context(self, chat: PreparedChat) -> ChatContext:
        return ChatContext(memories=chat.retrieved.memories)

    async def open_relay(self, chat: PreparedChat, *, first_chunk_fields: dict[str, Any] | None) -> Relay:
        """Open the upstream stream (errors before the first byte raise here, as HTTP errors)."""
        stream = await self.backend.open_stream(chat.body, self._context(chat))
        return Relay(stream, first_chunk_fields)

    async def _record(self, chat: PreparedChat, outcome: StreamOutcome) -> None:
        if self.recorder is not None:
            with anyio.CancelScope(shield=True):
                await self.recorder.record(chat, outcome)

    @asynccontextmanager
    async def _recording(self, chat: PreparedChat, relay: Relay) -> AsyncIterator[None]:
        """Records the turn when the block ends: after the stream's last frame, or -- with the partial
        reply -- when the client leaves (the consumer's ``aclose`` runs this ``finally``)."""
        try:
            yield
        finally:
            await self._record(chat, relay.outcome)

    async def stream(self, chat: PreparedChat, relay: Relay) -> AsyncIterator[tuple[bytes, str]]:
        """(upstream frame bytes, assistant text delta) as they arrive; the turn is recorded when the
        stream ends — before the caller's final frame — or, with the partial reply, when the client
        leaves. Iterate inside ``contextlib.aclosing`` so a disconnect closes it at once."""
        async with self._recording(chat, relay), aclosing(relay.frames()) as frames:
            async for item in frames:
                yield item

    async def stream_openai(self, chat: PreparedChat, relay: Relay) -> AsyncIterator[bytes]:
        """OpenAI-framed SSE bytes: the upstream's frames, the memory field on the first, then [DONE]
        (after the turn is recorded). One generator layer over the relay: this loop runs per token."""
        async with self._recording(chat, relay), aclosing(relay.frames()) as frames:
            async for frame, _delta in frames:
                yield frame
        yield DONE_FRAME

    async def complete(self, chat: PreparedChat) -> dict[str, Any]:
        response = await self.backend.complete_json(chat.body, self._context(chat))
        outcome = StreamOutcome(completed=True)
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                outcome.text_parts.append(content)
            outcome.finish_reason = choices[0].get("finish_reason")
        usage = response.get("usage")
        outcome.usage = usage if isinstance(usage, dict) else None
        await self._record(chat, outcome)
        response["memory"] = chat.memory_field
        return response
