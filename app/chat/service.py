"""The chat service every surface goes through.

request → retrieve memories (org + namespace) → inject one memory section → upstream (or offline) →
stream (`app.chat.stream`) → record the turn. Building the upstream request happens here and only here:
from the client's own body (OpenAI surface) or from a conversation's recorded history plus the new
prompt (personal chat, websocket). Surfaces differ only in how they frame what comes out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
import msgspec

from app.auth import Principal
from app.chat.request import ChatParams
from app.chat.stream import ChatStream, StreamOutcome
from app.errors import NotFound
from app.llm.backend import ChatBackend, ChatContext
from app.memory.retrieval import Retrieved
from app.messages import completion_text
from app.times import utcnow
from app.turns.conversations import ChatSlot, Conversations, TurnOutcome
from app.turns.imports import PastTurn, build_records
from app.turns.turnlog import TurnRecord

TITLE_CHARS = 80


class Retriever(Protocol):
    async def retrieve(self, org_id: str, namespace: str, messages: Sequence[dict[str, Any]]) -> Retrieved: ...

    def known_empty(self, org_id: str, namespace: str) -> bool:
        """True when there is certainly nothing to retrieve (answered from memory, no I/O)."""
        ...


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


class Completion(msgspec.Struct, frozen=True):
    """A non-streamed answer: the upstream's JSON (memchat adds nothing to it) and its reply text."""

    response: dict[str, Any]
    text: str


def inject_section(messages: list[dict[str, Any]], section: str) -> list[dict[str, Any]]:
    """Insert memchat's memory section as its own system message after the client's leading system
    messages; the user's messages are never rewritten."""
    insert_at = 0
    while insert_at < len(messages) and messages[insert_at].get("role") in ("system", "developer"):
        insert_at += 1
    return [*messages[:insert_at], {"role": "system", "content": section}, *messages[insert_at:]]


class ChatService:
    def __init__(self, backend: ChatBackend, conversations: Conversations, retriever: Retriever | None = None, *,
                 default_model: str = "gpt-4o-mini") -> None:
        self.backend = backend
        self.conversations = conversations
        self.retriever = retriever
        self.default_model = default_model

    async def prepare(self, principal: Principal, params: ChatParams, body: dict[str, Any], *,
                      surface: str = "openai") -> PreparedChat:
        """Retrieve memories and find the conversation (side by side), then build the upstream body."""
        messages: list[dict[str, Any]] = body["messages"]
        retrieved = Retrieved()
        slot = ChatSlot(chat_id=params.chat_id or str(uuid.uuid4()))

        async def retrieve() -> None:
            nonlocal retrieved
            if self.retriever is not None:
                retrieved = await self.retriever.retrieve(principal.org_id, params.namespace, messages)

        async def resolve() -> None:
            nonlocal slot
            slot = await self.conversations.resolve_chat(principal.org_id, params.namespace, params.chat_id,
                                                         messages)

        if self.retriever is None or self.retriever.known_empty(principal.org_id, params.namespace):
            await resolve()  # nothing to retrieve: no task group to pay for
        else:
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(retrieve)
                    group.start_soon(resolve)
            except BaseExceptionGroup as group_error:  # surface the error itself, not the group
                raise group_error.exceptions[0] from None
        upstream_body = body
        if retrieved.section:
            upstream_body = {**body, "messages": inject_section(messages, retrieved.section)}
        return PreparedChat(principal=principal, params=params, body=upstream_body, client_messages=messages,
                            slot=slot, retrieved=retrieved, surface=surface)

    async def prepare_followup(self, principal: Principal, namespace: str, chat_id: str | None, prompt: str, *,
                               surface: str, stream: bool, commit_after: int | None = None,
                               include_usage: bool = False) -> PreparedChat:
        """A surface whose client sends only its new message: the conversation ``chat_id`` is rebuilt from
        the turn log (``NotFound`` when it has no turn in this namespace); without one a new conversation
        starts, never matched to an earlier one by content."""
        messages: list[dict[str, Any]] = []
        if chat_id is not None:
            history = await self.conversations.history(principal.org_id, namespace, chat_id)
            if not history:
                raise NotFound(f"conversation {chat_id!r} not found")
            for turn in history:
                messages.append({"role": "user", "content": turn.user})
                if turn.assistant:
                    messages.append({"role": "assistant", "content": turn.assistant})
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": self.default_model, "messages": messages, "stream": stream}
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        params = ChatParams(namespace=namespace, commit_after=commit_after, chat_id=chat_id or str(uuid.uuid4()))
        return await self.prepare(principal, params, body, surface=surface)

    def _context(self, chat: PreparedChat) -> ChatContext:
        return ChatContext(memories=chat.retrieved.memories)

    async def open_stream(self, chat: PreparedChat, *, first_chunk_fields: dict[str, Any] | None = None) -> ChatStream:
        """Open the upstream stream (errors before the first byte raise here, as HTTP errors). The caller
        must enter the returned stream (``async with``) before it sends anything."""
        upstream = await self.backend.open_stream(chat.body, self._context(chat))
        return ChatStream(upstream, lambda outcome: self._record(chat, outcome), first_chunk_fields=first_chunk_fields)

    async def complete(self, chat: PreparedChat) -> Completion:
        response = await self.backend.complete_json(chat.body, self._context(chat))
        outcome = StreamOutcome(completed=True)
        text = completion_text(response)
        if text is not None:
            outcome.text_parts.append(text)
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            outcome.finish_reason = choices[0].get("finish_reason")
        with anyio.CancelScope(shield=True):
            await self._record(chat, outcome)
        return Completion(response=response, text=text or "")

    async def _record(self, chat: PreparedChat, outcome: StreamOutcome) -> None:
        model = chat.body.get("model")
        await self.conversations.record(
            chat.principal.org_id, chat.params.namespace, chat.slot, chat.client_messages,
            TurnOutcome(reply=outcome.text, completed=outcome.completed, model=model if isinstance(model, str) else None,
                        surface=chat.surface, commit_after=chat.params.commit_after))

    async def import_conversations(self, principal: Principal, namespace: str,
                                   conversations: Sequence[tuple[str | None, Sequence[PastTurn]]], *,
                                   commit_after: int) -> list[list[TurnRecord]]:
        """Record past conversations (``(chat_id or None for a new one, turns)``) in the turn log with the
        times their turns state; each is committed ``commit_after`` seconds from now (`app.turns.imports`).
        A known ``chat_id`` of this namespace is continued after its last turn."""
        out: list[list[TurnRecord]] = []
        for chat_id, turns in conversations:
            chat = chat_id or str(uuid.uuid4())
            prior = await self.conversations.history(principal.org_id, namespace, chat) if chat_id else []
            records = build_records(principal.org_id, namespace, chat, prior, turns, commit_after=commit_after,
                                    now=utcnow())
            await self.conversations.add_records(records)
            out.append(records)
        return out

    async def transcript(self, principal: Principal, namespace: str, chat_id: str) -> list[TurnRecord]:
        """A conversation's turns, oldest first (``[]`` when unknown)."""
        return await self.conversations.history(principal.org_id, namespace, chat_id)

    async def titles(self, principal: Principal, namespace: str, chat_ids: Sequence[str]) -> dict[str, str]:
        """A title per conversation: its first user message, shortened."""
        titles: dict[str, str] = {}
        for chat_id in dict.fromkeys(chat_ids):
            turns = await self.conversations.history(principal.org_id, namespace, chat_id)
            if turns:
                first = " ".join(turns[0].user.split())
                titles[chat_id] = first[:TITLE_CHARS - 3] + "..." if len(first) > TITLE_CHARS else first
        return titles
