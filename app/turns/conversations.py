"""Conversation identity and turn recording.

Which conversation does a request belong to? (README, "Conversations")
- ``chat_id`` given: that conversation. The new turn follows the turn whose transcript the request's
  earlier messages reproduce (so resending the last user message, edited or not, replaces that turn);
  otherwise it is appended at the end.
- no ``chat_id``: the request's earlier messages (everything before its last user message) are hashed;
  if they equal the transcript of a recorded conversation — its user messages plus the replies memchat
  streamed — the request continues it. A request that differs only in its last user message or reply
  (edit, regenerate) matches the transcript before that turn and replaces the turn instead of storing a
  second copy. A lone first message identical to a one-turn conversation of the last hour (recorded by
  this process) is a regenerate too.
  Anything else starts a new conversation.
- Responses API: a request with ``previous_response_id`` follows the turn whose id is that response id
  (``resolve_followup``); without one, the rule above runs on its input items.
- Only user and assistant text takes part: system/developer/tool messages and memchat's own injected
  memory section never do. Whitespace is normalised. Scope: org + namespace.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from app.messages import last_user_text, message_text
from app.turns.turnlog import TurnLog, TurnRecord

MEMORY_SECTION_MARK = "<memchat-memory>"
FIRST_TURN_REGENERATE_WINDOW = timedelta(hours=1)
_CACHE_SIZE = 50_000

Dialog = list[tuple[str, str]]


def dialog_of(messages: Sequence[dict[str, Any]]) -> Dialog:
    out: Dialog = []
    for message in messages:
        role = message.get("role")
        if role not in ("user", "assistant"):
            continue
        text = " ".join(message_text(message).split())
        if not text or MEMORY_SECTION_MARK in text:
            continue
        out.append((role, text))
    return out


def transcript_hash(dialog: Dialog) -> str:
    digest = hashlib.sha256()
    for role, text in dialog:
        digest.update(role.encode())
        digest.update(b"\x1f")
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return digest.hexdigest()[:32]


def split_request(messages: Sequence[dict[str, Any]]) -> tuple[Dialog, str]:
    """(dialog before the new user message, the new user message)."""
    dialog = dialog_of(messages)
    if dialog and dialog[-1][0] == "user":
        return dialog[:-1], dialog[-1][1]
    return dialog, ""


class ChatSlot(msgspec.Struct, frozen=True):
    """Where a request's turn goes: its conversation, its position, and the hash of what preceded it."""

    chat_id: str
    seq: int = 1
    prefix_hash: str = ""
    is_new: bool = True
    # The dialog before this turn when the request does not carry it (a ``previous_response_id`` chain):
    # the recorded transcript then covers the whole conversation, as for a client that resends it.
    prefix: tuple[tuple[str, str], ...] = ()


class TurnOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a request produced, for the turn log: the reply text and whether the stream completed."""

    reply: str
    completed: bool
    model: str | None = None
    surface: str = "openai"
    commit_after: int | None = None
    turn_id: str | None = None  # the turn's id when the surface has one (the Responses API's response id)


class Conversations:
    """Resolves which conversation a request continues, and records its turn."""

    def __init__(self, turnlog: TurnLog, *, default_commit_after: int,
                 on_recorded: Callable[[TurnRecord], None] | None = None) -> None:
        self.turnlog = turnlog
        self.default_commit_after = default_commit_after
        self.on_recorded = on_recorded
        # transcript hash -> (chat_id, seq) for turns this process wrote; a miss asks the store.
        self._recent: OrderedDict[tuple[str, str, str], tuple[str, int]] = OrderedDict()
        # one-turn conversations this process recorded, by their (normalised) first message: a lone
        # first message seen again within the window regenerates that turn. Kept in memory, so the
        # request path never scans the turn log for it.
        self._first_turns: OrderedDict[tuple[str, str, str], tuple[str, datetime]] = OrderedDict()
        # (org, namespace, chat id) -> its key in _first_turns: chat ids are only unique per tenant (clients
        # choose them), so the same id in two tenants is two conversations here too.
        self._first_turn_of_chat: dict[tuple[str, str, str], tuple[str, str, str]] = {}

    def _remember(self, record: TurnRecord, first_message: str) -> None:
        self._recent[(record.org_id, record.namespace, record.transcript_hash)] = (record.chat_id, record.seq)
        self._recent.move_to_end((record.org_id, record.namespace, record.transcript_hash))
        while len(self._recent) > _CACHE_SIZE:
            self._recent.popitem(last=False)
        if record.seq == 1 and first_message:
            key = (record.org_id, record.namespace, first_message)
            self._first_turns[key] = (record.chat_id, record.created_at)
            self._first_turn_of_chat[(record.org_id, record.namespace, record.chat_id)] = key
            while len(self._first_turns) > _CACHE_SIZE:
                (old_org, old_ns, _), (old_chat, _) = self._first_turns.popitem(last=False)
                self._first_turn_of_chat.pop((old_org, old_ns, old_chat), None)
        elif record.seq > 1:  # no longer a one-turn conversation
            key = self._first_turn_of_chat.pop((record.org_id, record.namespace, record.chat_id), None)
            if key is not None:
                self._first_turns.pop(key, None)

    async def _find(self, org_id: str, namespace: str, prefix_hash: str) -> tuple[str, int] | None:
        hit = self._recent.get((org_id, namespace, prefix_hash))
        if hit is not None:
            return hit
        turn = await self.turnlog.find_by_transcript(org_id, namespace, prefix_hash)
        return (turn.chat_id, turn.seq) if turn else None

    async def resolve_chat(self, org_id: str, namespace: str, chat_id: str | None,
                           messages: Sequence[dict[str, Any]]) -> ChatSlot:
        prefix, user = split_request(messages)
        prefix_hash = transcript_hash(prefix)
        if chat_id is not None:
            turns = await self.turnlog.chat_turns(org_id, namespace, chat_id)
            if not turns:
                return ChatSlot(chat_id=chat_id, seq=1, prefix_hash=prefix_hash, is_new=True)
            if not prefix:
                return ChatSlot(chat_id=chat_id, seq=turns[-1].seq + 1, prefix_hash=prefix_hash, is_new=False)
            by_hash = {t.transcript_hash: t.seq for t in turns}
            seq = by_hash.get(prefix_hash, turns[-1].seq) + 1
            return ChatSlot(chat_id=chat_id, seq=seq, prefix_hash=prefix_hash, is_new=False)
        if prefix:
            found = await self._find(org_id, namespace, prefix_hash)
            if found is not None:
                return ChatSlot(chat_id=found[0], seq=found[1] + 1, prefix_hash=prefix_hash, is_new=False)
        elif user:
            first = self._first_turns.get((org_id, namespace, " ".join(user.split())))
            if first is not None and datetime.now(UTC) - first[1] <= FIRST_TURN_REGENERATE_WINDOW:
                return ChatSlot(chat_id=first[0], seq=1, prefix_hash=prefix_hash, is_new=False)
        return ChatSlot(chat_id=str(uuid.uuid4()), seq=1, prefix_hash=prefix_hash, is_new=True)

    async def resolve_followup(self, org_id: str, namespace: str, turn_id: str) -> ChatSlot | None:
        """The slot after the turn ``turn_id`` (a Responses API ``previous_response_id``: the response ids
        of that surface are its turn ids); None when this tenant has no such turn."""
        turn = await self.turnlog.find_turn(org_id, namespace, turn_id)
        if turn is None:
            return None
        prefix: Dialog = []
        for earlier in await self.turnlog.chat_turns(org_id, namespace, turn.chat_id):
            if earlier.seq >= turn.seq:
                earlier = turn  # the turn named, even when a regenerate has replaced it since
            prefix += [(role, " ".join(text.split())) for role, text in (("user", earlier.user),
                                                                          ("assistant", earlier.assistant))
                       if text.strip()]
            if earlier is turn:
                break
        return ChatSlot(chat_id=turn.chat_id, seq=turn.seq + 1, prefix_hash=transcript_hash(prefix), is_new=False,
                        prefix=tuple(prefix))

    async def record(self, org_id: str, namespace: str, slot: ChatSlot, messages: Sequence[dict[str, Any]],
                     outcome: TurnOutcome) -> TurnRecord | None:
        """Append the turn (the last user message and the reply, partial or not); None when there was
        neither."""
        prefix, user = split_request(messages)
        if not prefix and slot.prefix:
            prefix = list(slot.prefix)
        assistant = outcome.reply
        if not user and not assistant:
            return None
        status = "complete" if outcome.completed else ("partial" if assistant else "error")
        full = [*prefix, *([("user", " ".join(user.split()))] if user else []),
                *([("assistant", " ".join(assistant.split()))] if assistant.strip() else [])]
        record = TurnRecord(
            turn_id=outcome.turn_id or str(uuid.uuid4()),
            chat_id=slot.chat_id,
            org_id=org_id,
            namespace=namespace,
            seq=slot.seq,
            user=last_user_text(messages),
            assistant=assistant,
            status=status,
            model=outcome.model,
            surface=outcome.surface,
            commit_after=outcome.commit_after if outcome.commit_after is not None else self.default_commit_after,
            prefix_hash=slot.prefix_hash,
            transcript_hash=transcript_hash(full),
            created_at=datetime.now(UTC),
        )
        await self.turnlog.append(record)
        self._remember(record, " ".join(user.split()) if not prefix else "")
        if self.on_recorded is not None:
            self.on_recorded(record)
        return record

    async def add_records(self, records: Sequence[TurnRecord]) -> None:
        """Append ready-made turns of one conversation (an import, `app.turns.imports`) in one write; the
        conversation's deadline is that of its last turn."""
        if not records:
            return
        await self.turnlog.append_many(records)
        for record in records:
            self._remember(record, "")
        if self.on_recorded is not None:
            self.on_recorded(records[-1])

    async def delete_tenant(self, org_id: str, namespace: str) -> int:
        """Forget a tenant's conversations: its turns, and what this process remembers of them (so a
        repeated message never rejoins a forgotten conversation). Returns the turns deleted."""
        deleted = await self.turnlog.delete_tenant(org_id, namespace)
        for key in [k for k in self._recent if k[:2] == (org_id, namespace)]:
            del self._recent[key]
        for key in [k for k in self._first_turns if k[:2] == (org_id, namespace)]:
            chat_id, _ = self._first_turns.pop(key)
            self._first_turn_of_chat.pop(chat_id, None)
        return deleted

    async def history(self, org_id: str, namespace: str, chat_id: str) -> list[TurnRecord]:
        return await self.turnlog.chat_turns(org_id, namespace, chat_id)
