"""``POST /api/v1/memory/conversations``: import past conversations, with the times their turns were said.

Body: one conversation ``{"chat_id"?, "turns": [{"user", "assistant", "createdAt"?}, ...]}``, or JSON
Lines (one per line). The whole body is validated before anything is recorded
(422 ``detail``, ``loc`` ``["body", "turns", 3, "createdAt"]`` for a single object, ``["body", <index>,
...]`` for JSON Lines). The work is `ChatService.import_conversations`'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, post
from litestar.di import Provide
from litestar.params import Parameter

from app.api import memory_models as M
from app.api.deps import PrincipalDep, ServicesDep, provide_principal, provide_services
from app.api.memories import Namespace, _operation, check_namespace
from app.api.memory_transfer import DATETIME_PATTERN
from app.errors import InvalidRequest
from app.memory.limits import NONBLANK, is_blank
from app.tenancy import MAX_CHAT_ID_LENGTH, NAMESPACE_PATTERN, has_control
from app.times import as_utc
from app.turns.imports import EARLIEST_YEAR, PastTurn

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TEXT_CHARS = 100_000          # per message, as a personal-chat prompt
MAX_TURNS_PER_CONVERSATION = 1000
MAX_CONVERSATIONS = 1000          # per request
MAX_TURNS = 10_000                # per request, all conversations together
MAX_COMMIT_AFTER = 30 * 24 * 3600
JSONL = "application/x-ndjson"

Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
When = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time", "pattern": DATETIME_PATTERN})]
# "user or assistant not blank", for the published schema (the handler checks it itself)
_SOME_TEXT = {"anyOf": [{"required": [f], "properties": {f: {"pattern": NONBLANK}}} for f in ("user", "assistant")]}


class TurnIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One exchange: what the user said and what the assistant answered (either may be empty, not both),
    and when (RFC 3339; naive = UTC; absent = now)."""

    user: Text = ""
    assistant: Text = ""
    createdAt: When | None = None  # noqa: N815


class ConversationIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A past conversation; ``chat_id`` continues that conversation (after its last turn) or names a new one."""

    turns: Annotated[list[Annotated[TurnIn, msgspec.Meta(extra_json_schema=_SOME_TEXT)]],
                     msgspec.Meta(min_length=1, max_length=MAX_TURNS_PER_CONVERSATION)]
    chat_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHAT_ID_LENGTH,
                                         pattern=NAMESPACE_PATTERN)] | None = None


class ImportedConversation(msgspec.Struct):
    chat_id: str
    turn_ids: list[str]


class ConversationsOut(msgspec.Struct):
    conversations: list[ImportedConversation]
    turns: int
    commit_after: int


BODY = {
    "application/json": M.schema_of(ConversationIn),
    JSONL: {"type": "string", "description": "JSON Lines: one conversation object per line."},
}


def _bad(loc: tuple[str | int, ...], message: str, code: str = "value_error") -> InvalidRequest:
    return InvalidRequest(message, loc=("body", *loc), code=code)


def _convert(obj: Any, loc: tuple[str | int, ...]) -> ConversationIn:
    try:
        return msgspec.convert(obj, ConversationIn)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        parts = [p for p in where.rstrip("`").replace("[", ".").replace("]", "").split(".") if p]
        raise _bad((*loc, *[int(p) if p.isdigit() else p for p in parts]), message) from None


def _unicode(value: str, loc: tuple[str | int, ...]) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(loc, "not valid Unicode (lone surrogate)") from None


def _check(conv: ConversationIn, loc: tuple[str | int, ...]) -> tuple[str | None, list[PastTurn]]:
    if conv.chat_id is not None:
        _unicode(conv.chat_id, (*loc, "chat_id"))
        if has_control(conv.chat_id):
            raise _bad((*loc, "chat_id"), f"chat_id must be 1-{MAX_CHAT_ID_LENGTH} printable characters")
    turns = []
    for i, turn in enumerate(conv.turns):
        where = (*loc, "turns", i)
        _unicode(turn.user, (*where, "user"))
        _unicode(turn.assistant, (*where, "assistant"))
        if is_blank(turn.user) and is_blank(turn.assistant):
            raise _bad(where, "a turn needs a non-empty user or assistant message", "missing")
        created = as_utc(turn.createdAt) if turn.createdAt is not None else None
        if created is not None and turn.createdAt.year < EARLIEST_YEAR:  # type: ignore[union-attr]
            raise _bad((*where, "createdAt"), f"createdAt must be in the years {EARLIEST_YEAR}-9999")
        turns.append(PastTurn(user=turn.user, assistant=turn.assistant, created_at=created))
    return conv.chat_id, turns


def parse_conversations(body: bytes) -> list[tuple[str | None, list[PastTurn]]]:
    """Validate a whole body (one object or JSON Lines); raises `InvalidRequest` (-> 422)."""
    text = body.strip()
    if not text:
        raise _bad((), "request body is required", "missing")
    items: list[tuple[tuple[str | int, ...], Any]]
    try:
        items = [((), msgspec.json.decode(text))]
    except msgspec.DecodeError as exc:
        lines = [ln for ln in text.split(b"\n") if ln.strip()]
        if not text.startswith(b"{") or len(lines) < 2:
            raise _bad((), f"invalid JSON: {exc}", "json_invalid") from None
        items = []
        for line in lines:
            index = len(items)
            try:
                items.append(((index,), msgspec.json.decode(line)))
            except msgspec.DecodeError as line_exc:
                raise _bad((index,), f"line {index + 1}: invalid JSON: {line_exc}", "json_invalid") from None
    if not items:
        raise _bad((), "no conversation in the body", "missing")
    if len(items) > MAX_CONVERSATIONS:
        raise _bad((), f"at most {MAX_CONVERSATIONS} conversations per request")
    parsed = [_check(_convert(obj, loc), loc) for loc, obj in items]
    if sum(len(turns) for _, turns in parsed) > MAX_TURNS:
        raise _bad((), f"at most {MAX_TURNS} turns per request")
    return parsed


@post("/conversations", status_code=200, request_max_body_size=MAX_BODY_BYTES, operation_class=_operation(BODY),
      responses=M.responses(ConversationsOut, 401, 413, 422), summary="Import Conversations")
async def import_conversations(
    request: Request[Any, Any, Any], principal: PrincipalDep, services: ServicesDep, namespace: Namespace = "",
    commit_after: Annotated[int, Parameter(ge=0, le=MAX_COMMIT_AFTER, description=(
        "Seconds from now until the conversations are committed to memory (0: at once)."))] = 0,
) -> dict[str, Any]:
    """Record past conversations in the turn log with their turns' times; the idle commit then extracts
    memories dated by those times, each with ``sourceTurnId`` = its turn."""
    ns = check_namespace(namespace)
    conversations = parse_conversations(await request.body())
    recorded = await services.chat.import_conversations(principal, ns, conversations, commit_after=commit_after)
    return msgspec.to_builtins(ConversationsOut(
        conversations=[ImportedConversation(chat_id=rs[0].chat_id, turn_ids=[r.turn_id for r in rs])
                       for rs in recorded],
        turns=sum(len(rs) for rs in recorded), commit_after=commit_after))


conversations_router = Router(
    path="/api/v1/memory", route_handlers=[import_conversations],
    dependencies={"principal": Provide(provide_principal), "services": Provide(provide_services)}, tags=["memory"],
)
