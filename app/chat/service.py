"""The chat service every surface goes through.

request → retrieve memories (org + namespace) → inject one memory section → upstream (or offline) →
stream (`app.chat.stream`) → record the turn. Building the upstream request happens here and only here:
from the client's own body (OpenAI surface) or from a conversation's recorded history plus the new
prompt (personal chat, websocket). Surfaces differ only in how they frame what comes out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import anyio
import msgspec

from app.auth import Principal
from app.chat.request import ChatParams
from app.chat.responses import ResponsesRelay, inject_instructions
from app.chat.stream import ChatStream, StreamOutcome
from app.errors import NotFound
from app.llm.backend import ChatBackend, ChatContext
from app.memory.retrieval import Retrieved
from app.messages import completion_text, response_output_text, responses_input_messages
from app.obs.metrics import Metrics
from app.times import utcnow
from app.turns.conversations import ChatSlot, Conversations, TurnOutcome
from app.turns.imports import PastTurn, build_records
from app.turns.turnlog import TurnRecord

TITLE_CHARS = 80


class Retriever(Protocol):
    async def retrieve(self, org_id: str, namespace: str, messages: Sequence[dict[str, Any]], *,
                       include_shared: bool = False) -> Retrieved: ...

    def known_empty(self, org_id: str, namespace: str, *, include_shared: bool = False) -> bool:
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
    api: str = "chat"               # "chat" (chat completions) | "responses" (the Responses API)

    @property
    def chat_id(self) -> str:
        return self.slot.chat_id


class ConversationInfo(msgspec.Struct, frozen=True):
    """What a surface shows about a conversation memories came from: its title and start time."""

    title: str
    started_at: datetime


class PersonalChat(msgspec.Struct, frozen=True):
    """A prepared personal-chat request and the conversations its memories came from (by chat id)."""

    chat: PreparedChat
    conversations: dict[str, ConversationInfo]


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
                 default_model: str = "gpt-4o-mini", metrics: Metrics | None = None) -> None:
        self.backend = backend
        self.metrics = metrics
        self.conversations = conversations
        self.retriever = retriever
        self.default_model = default_model

    async def prepare(self, principal: Principal, params: ChatParams, body: dict[str, Any], *,
                      surface: str = "openai", api: str = "chat") -> PreparedChat:
        """Retrieve memories and find the conversation (side by side), then build the upstream body.
        ``api="responses"``: a Responses API body -- its input items stand for the messages, a
        ``previous_response_id`` names the conversation, the memory section goes into ``instructions``."""
        responses = api == "responses"
        messages: list[dict[str, Any]] = responses_input_messages(body.get("input")) if responses else body["messages"]
        previous = body.get("previous_response_id") if responses and params.chat_id is None else None
        retrieved = Retrieved()
        slot = ChatSlot(chat_id=params.chat_id or str(uuid.uuid4()))

        async def retrieve() -> None:
            nonlocal retrieved
            if self.retriever is not None:
                # A chained request carries only its new input: the query's context is the recorded turn before.
                earlier = [{"role": role, "content": text} for role, text in slot.prefix[-2:]]
                started = time.perf_counter()
                retrieved = await self.retriever.retrieve(principal.org_id, params.namespace, [*earlier, *messages],
                                                          include_shared=params.include_shared)
                if self.metrics is not None:
                    self.metrics.retrieval_seconds.observe(time.perf_counter() - started)

        async def resolve() -> None:
            nonlocal slot
            if previous is not None:  # an unknown id (made elsewhere, or another tenant's): a new conversation
                slot = await self.conversations.resolve_followup(principal.org_id, params.namespace, previous) or slot
                return
            slot = await self.conversations.resolve_chat(principal.org_id, params.namespace, params.chat_id,
                                                         messages)

        if self.retriever is None or self.retriever.known_empty(principal.org_id, params.namespace,
                                                                include_shared=params.include_shared):
            await resolve()  # nothing to retrieve: no task group to pay for
        elif previous is not None:  # the conversation first: retrieval reads the turn before
            await resolve()
            await retrieve()
        else:
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(retrieve)
                    group.start_soon(resolve)
            except BaseExceptionGroup as group_error:  # surface the error itself, not the group
                raise group_error.exceptions[0] from None
        if self.metrics is not None:
            self.metrics.memories_injected.observe(len(retrieved.used))
        upstream_body = body
        if retrieved.section:
            upstream_body = (inject_instructions(body, retrieved.section) if responses
                             else {**body, "messages": inject_section(messages, retrieved.section)})
        return PreparedChat(principal=principal, params=params, body=upstream_body, client_messages=messages,
                            slot=slot, retrieved=retrieved, surface=surface, api=api)

    async def prepare_followup(self, principal: Principal, namespace: str, chat_id: str | None, prompt: str, *,
                               surface: str, stream: bool, commit_after: int | None = None,
                               include_usage: bool = False, start_unknown: bool = False,
                               include_shared: bool = False) -> PreparedChat:
        """A surface whose client sends only its new message: the conversation ``chat_id`` is rebuilt from
        the turn log of this organisation and namespace; without one a new conversation starts, never
        matched to an earlier one by content. A ``chat_id`` with no turn there is ``NotFound``, or, with
        ``start_unknown``, a new conversation under that id (the same id in another namespace or
        organisation is another conversation: the turn log is read per tenant)."""
        messages: list[dict[str, Any]] = []
        if chat_id is not None:
            history = await self.conversations.history(principal.org_id, namespace, chat_id)
            if not history and not start_unknown:
                raise NotFound(f"conversation {chat_id!r} not found")
            for turn in history:
                messages.append({"role": "user", "content": turn.user})
                if turn.assistant:
                    messages.append({"role": "assistant", "content": turn.assistant})
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": self.default_model, "messages": messages, "stream": stream}
        if include_usage:
            body["stream_options"] = {"include_usage": True}
        params = ChatParams(namespace=namespace, commit_after=commit_after, chat_id=chat_id or str(uuid.uuid4()),
                            include_shared=include_shared)
        return await self.prepare(principal, params, body, surface=surface)

    async def prepare_personal(self, principal: Principal, namespace: str, session_id: str | None, prompt: str, *,
                               stream: bool) -> PersonalChat:
        """The personal-chat API: an unknown session id starts a session under that id, the user's
        namespace and the organisation's shared scope are searched together, and the conversations the
        memories came from are looked up (in the user's namespace only) for the refs."""
        chat = await self.prepare_followup(principal, namespace, session_id, prompt, surface="personal",
                                           stream=stream, start_unknown=True, include_shared=True)
        sources = [s.memory.source_thread_id for s in chat.retrieved.used
                   if s.memory.source_thread_id and s.memory.namespace == namespace]
        return PersonalChat(chat=chat, conversations=await self.conversations_of(principal, namespace, sources))

    def _context(self, chat: PreparedChat) -> ChatContext:
        return ChatContext(memories=chat.retrieved.memories)

    async def open_stream(self, chat: PreparedChat, *, first_chunk_fields: dict[str, Any] | None = None) -> ChatStream:
        """Open the upstream stream (errors before the first byte raise here, as HTTP errors). The caller
        must enter the returned stream (``async with``) before it sends anything."""
        opened_at = time.perf_counter()
        meter = None if self.metrics is None else self.metrics.stream_meter(chat.surface)
        if chat.api == "responses":  # ``first_chunk_fields`` go into the ``response`` of ``response.created``
            upstream = await self.backend.open_responses_stream(chat.body, self._context(chat))
            return ChatStream(upstream, lambda outcome: self._record(chat, outcome),
                              relay=ResponsesRelay(first_chunk_fields), meter=meter, opened_at=opened_at)
        upstream = await self.backend.open_stream(chat.body, self._context(chat))
        return ChatStream(upstream, lambda outcome: self._record(chat, outcome), first_chunk_fields=first_chunk_fields,
                          meter=meter, opened_at=opened_at)

    async def complete(self, chat: PreparedChat) -> Completion:
        outcome = StreamOutcome(completed=True)
        if chat.api == "responses":
            response = await self.backend.responses_json(chat.body, self._context(chat))
            text = response_output_text(response)
            outcome.response_id = response.get("id") if isinstance(response.get("id"), str) else None
            outcome.finish_reason = response.get("status") if isinstance(response.get("status"), str) else None
        else:
            response = await self.backend.complete_json(chat.body, self._context(chat))
            text = completion_text(response)
            choices = response.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                outcome.finish_reason = choices[0].get("finish_reason")
        if text is not None:
            outcome.text_parts.append(text)
        with anyio.CancelScope(shield=True):
            await self._record(chat, outcome)
        return Completion(response=response, text=text or "")

    async def _record(self, chat: PreparedChat, outcome: StreamOutcome) -> None:
        model = chat.body.get("model")
        await self.conversations.record(
            chat.principal.org_id, chat.params.namespace, chat.slot, chat.client_messages,
            TurnOutcome(reply=outcome.text, completed=outcome.completed, model=model if isinstance(model, str) else None,
                        surface=chat.surface, commit_after=chat.params.commit_after, turn_id=outcome.response_id))

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

    async def conversations_of(self, principal: Principal, namespace: str,
                               chat_ids: Sequence[str]) -> dict[str, ConversationInfo]:
        """Title (the first user message, shortened) and start time of each conversation still in the turn
        log (unknown ones are left out)."""
        found: dict[str, ConversationInfo] = {}
        for chat_id in dict.fromkeys(chat_ids):
            turns = await self.conversations.history(principal.org_id, namespace, chat_id)
            if turns:
                first = " ".join(turns[0].user.split())
                title = first[:TITLE_CHARS - 3] + "..." if len(first) > TITLE_CHARS else first
                found[chat_id] = ConversationInfo(title=title, started_at=min(t.created_at for t in turns))
        return found
