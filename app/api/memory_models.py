"""Request and response models of the memory REST API (``app.api.memories``).

The request Structs are what the handlers decode bodies with (their constraints are enforced at run
time and published in the OpenAPI document); the response Structs describe, for the OpenAPI document,
the JSON the handlers build (`app.api.wire.memory_json` and the ``*_json`` functions below).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar.openapi import ResponseSpec
from msgspec import UNSET, UnsetType

from app.api.memory_transfer import ImportResult, MemoryRecord
from app.memory.entities import BackfillCounts
from app.memory.limits import MAX_CONTENT_CHARS, MAX_ENTITIES, MAX_ENTITY_CHARS, NONBLANK
from app.memory.service import MemoryHistory as History
from app.memory.transfer import ImportCounts
from app.memory.versions import MemoryVersion
from app.tenancy import MAX_NAMESPACE_LENGTH, NAMESPACE_PATTERN
from app.times import rfc3339

JSONL = "application/x-ndjson"
Content = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONTENT_CHARS,
                                      extra_json_schema={"pattern": NONBLANK})]
Entity = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ENTITY_CHARS)]

# --------------------------------------------------------------------------- requests


class CreateMemoryBody(msgspec.Struct, forbid_unknown_fields=False):
    content: Content
    organizationId: str | None = None  # noqa: N815 (the documented field name)


class SearchBody(msgspec.Struct, forbid_unknown_fields=False):
    query: Annotated[str, msgspec.Meta(max_length=MAX_CONTENT_CHARS)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    namespace: Annotated[str, msgspec.Meta(max_length=MAX_NAMESPACE_LENGTH, pattern=NAMESPACE_PATTERN)] | None = None


class PatchMemoryBody(msgspec.Struct, forbid_unknown_fields=False):
    """At least one of the two. ``entities`` replaces the list (deduplicated case-insensitively)."""

    content: Content | UnsetType = UNSET
    entities: Annotated[list[Entity], msgspec.Meta(max_length=MAX_ENTITIES)] | UnsetType = UNSET


PATCH_BODY = Annotated[PatchMemoryBody, msgspec.Meta(
    extra_json_schema={"anyOf": [{"required": ["content"]}, {"required": ["entities"]}]})]


# --------------------------------------------------------------------------- responses


class MemoryOut(msgspec.Struct):
    """A memory: the documented fields, then memchat's."""

    content: str
    createdAt: datetime  # noqa: N815
    id: uuid.UUID
    organizationId: str  # noqa: N815
    source: Literal["explicit", "conversation"]
    sourceThreadId: str | None  # noqa: N815
    sourceTurnId: str | None  # noqa: N815
    namespace: str
    entities: list[str]
    state: Literal["current", "superseded"]
    supersededBy: str | None  # noqa: N815
    updatedAt: datetime  # noqa: N815


class MemoryList(msgspec.Struct):
    memories: list[MemoryOut]
    total: int


class SearchHit(MemoryOut):
    score: float


class SearchResults(msgspec.Struct):
    results: list[SearchHit]


class ErrorItem(msgspec.Struct):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(msgspec.Struct):
    detail: list[ErrorItem]


class BackfillOut(msgspec.Struct, kw_only=True):
    """The body of ``POST /api/v1/memory/backfill-entities``."""

    examined: int
    failed: int
    hasMore: bool  # noqa: N815
    limit: int
    nextOffset: int  # noqa: N815
    offset: int
    processed: int
    skipped: int


class ImportOut(ImportResult):
    pass


class HistoryVersion(msgspec.Struct):
    version: int  # 1 = the oldest
    current: bool
    content: str
    entities: list[str]
    state: Literal["current", "superseded"]
    supersededBy: str | None  # noqa: N815
    updatedAt: datetime  # noqa: N815  when this version was written
    replacedAt: datetime | None  # noqa: N815  when a PATCH replaced it (null: the current version)


class MemoryHistory(msgspec.Struct):
    id: uuid.UUID
    namespace: str
    state: Literal["current", "superseded"]
    supersededBy: str | None  # noqa: N815  the memory that superseded this one
    supersedes: list[str]  # memories this one superseded
    versions: list[HistoryVersion]


class ForgetOut(msgspec.Struct):
    """What was deleted (row counts)."""

    namespace: str
    memories: int
    versions: int
    turns: int
    commits: int


def version_json(number: int, v: MemoryVersion) -> dict[str, Any]:
    return {"version": number, "current": v.replaced_at is None, "content": v.content,
            "entities": list(v.entities), "state": v.state, "supersededBy": v.superseded_by,
            "updatedAt": rfc3339(v.updated_at), "replacedAt": rfc3339(v.replaced_at) if v.replaced_at else None}


def history_json(history: History) -> dict[str, Any]:
    memory = history.memory
    return {"id": memory.id, "namespace": memory.namespace, "state": memory.state,
            "supersededBy": memory.superseded_by, "supersedes": history.supersedes,
            "versions": [version_json(i, v) for i, v in enumerate(history.versions, 1)]}


def backfill_json(counts: BackfillCounts, *, offset: int) -> dict[str, Any]:
    """``offset``: as the client sent it (the store reads at most 2**31 in)."""
    return msgspec.structs.asdict(BackfillOut(
        examined=counts.examined, failed=counts.failed, hasMore=counts.has_more, limit=counts.limit,
        nextOffset=max(counts.next_offset, offset), offset=offset, processed=counts.processed,
        skipped=counts.skipped))


def import_json(counts: ImportCounts) -> dict[str, Any]:
    return msgspec.structs.asdict(ImportResult(
        received=counts.received, written=counts.written, batches=counts.batches,
        supersededLinks=counts.superseded_links, unresolvedLinks=counts.unresolved_links, total=counts.total))


# --------------------------------------------------------------------------- OpenAPI helpers


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        rest = {k: _inline(v, defs) for k, v in node.items() if k not in ("$defs", "$ref")}
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return {**_inline(defs[ref.removeprefix("#/$defs/")], defs), **rest}
        return rest
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def schema_of(type_: Any) -> dict[str, Any]:
    """The JSON Schema msgspec derives for ``type_``, with every ``$ref`` inlined (OpenAPI 3.1)."""
    raw = msgspec.json.schema(type_)
    return _inline(raw, raw.get("$defs", {}))


IMPORT_BODY = {
    "application/json": schema_of(list[MemoryRecord]),
    JSONL: {"type": "string", "description": "JSON Lines: one MemoryRecord object per line (as exported)."},
}
EXPORT_SPEC = ResponseSpec(data_container=MemoryRecord, media_type=JSONL, generate_examples=False,
                           description="JSON Lines: one MemoryRecord object per line, oldest first.")
_DESCRIPTIONS = {401: "Missing or wrong API key.", 403: "organizationId is not the key's organisation.",
                 404: "No such memory in this organisation and namespace.", 413: "Request body too large.",
                 422: "Validation error (query, path or body)."}


def responses(success: Any, *errors: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a route: the success body (a Struct, a ResponseSpec, or None for 204) and the
    documented error statuses, all with the ``{"detail": [...]}`` body."""
    out: dict[int, ResponseSpec] = {
        status: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[status], generate_examples=False)
        for status in errors
    }
    if isinstance(success, ResponseSpec):
        out[200] = success
    elif success is not None:
        out[200] = ResponseSpec(data_container=success, description="OK", generate_examples=False)
    return out
