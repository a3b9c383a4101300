"""The JSON Lines wire format of ``GET /api/v1/memory/export`` and ``POST /api/v1/memory/import``.

A record is a memory in the API's camelCase shape (`MemoryRecord`); only ``content`` is required on
import. The whole body is validated before anything is written (any invalid record: 422, ``loc``
``["body", <record index>, <field>]``); content and entity bounds are `app.memory.limits`'. Writing is
`app.memory.transfer`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from app.errors import InvalidRequest
from app.memory.limits import MAX_CONTENT_CHARS, MAX_ENTITIES, MAX_ENTITY_CHARS, NONBLANK, is_blank
from app.memory.models import Memory, NewMemory
from app.memory.transfer import ImportItem
from app.times import as_utc

Content = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONTENT_CHARS,
                                      extra_json_schema={"pattern": NONBLANK})]
# Years before 1000 do not survive the wire format (RFC 3339 needs four digits).
DATETIME_PATTERN = "^[1-9][0-9]{3}-"
Entity = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ENTITY_CHARS)]
Entities = Annotated[list[Entity], msgspec.Meta(max_length=MAX_ENTITIES)]
RefId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Timestamp = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time", "pattern": DATETIME_PATTERN})]


class MemoryRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One memory as exported and imported. Only ``content`` is required on import."""

    content: Content
    createdAt: Timestamp | None = None  # noqa: N815  (naive = UTC)
    id: uuid.UUID | None = None
    source: Literal["explicit", "conversation"] = "explicit"
    sourceThreadId: RefId | None = None  # noqa: N815
    sourceTurnId: RefId | None = None  # noqa: N815
    entities: Entities = msgspec.field(default_factory=list)
    state: Literal["current", "superseded"] = "current"
    supersededBy: uuid.UUID | None = None  # noqa: N815


class ImportResult(msgspec.Struct, kw_only=True):
    received: int  # records in the body
    written: int  # distinct records (by id) now stored: newly written or already there
    batches: int
    supersededLinks: int  # noqa: N815  links restored (or already in place)
    unresolvedLinks: int  # noqa: N815  links whose successor does not exist
    total: int  # memories in the namespace afterwards (current and superseded)


_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(MemoryRecord)
_array_decoder = msgspec.json.Decoder(list[MemoryRecord])


def export_line(memory: Memory) -> bytes:
    """One JSONL line (the `MemoryRecord` fields, in that order) for ``memory``."""
    return _encoder.encode({
        "content": memory.content,
        "createdAt": as_utc(memory.created_at),
        "id": memory.id,
        "source": memory.source,
        "sourceThreadId": memory.source_thread_id,
        "sourceTurnId": memory.source_turn_id,
        "entities": list(memory.entities),
        "state": memory.state,
        "supersededBy": memory.superseded_by,
    }) + b"\n"


async def export_lines(pages: AsyncIterator[list[Memory]]) -> AsyncIterator[bytes]:
    """JSONL chunks, one per page of memories."""
    async for page in pages:
        yield b"".join(export_line(m) for m in page)


def to_item(record: MemoryRecord) -> ImportItem:
    memory = NewMemory(content=record.content, created_at=record.createdAt, source=record.source,
                       id=str(record.id) if record.id is not None else None,
                       source_thread_id=record.sourceThreadId, source_turn_id=record.sourceTurnId,
                       entities=list(record.entities))
    return ImportItem(memory=memory, state=record.state,
                      superseded_by=str(record.supersededBy) if record.supersededBy is not None else None)


def _validation_error(exc: msgspec.ValidationError, index: int, prefix: str = "$") -> InvalidRequest:
    text = str(exc)
    message, _, where = text.partition(" - at `")
    path = where.rstrip("`")
    path = path.removeprefix(prefix)
    fields = [p for p in path.replace("[", ".").replace("]", "").split(".") if p]
    loc: list[str | int] = ["body", index]
    for part in fields:
        loc.append(int(part) if part.isdigit() else part)
    return InvalidRequest(f"record {index} (line {index + 1}): {message}", loc=tuple(loc), code="value_error")


def _check_record(record: MemoryRecord, index: int) -> MemoryRecord:
    def bad(field: str, message: str) -> InvalidRequest:
        return InvalidRequest(f"record {index} (line {index + 1}): {message}", loc=("body", index, field),
                              code="value_error")

    if is_blank(record.content):
        raise bad("content", "content must not be empty")
    if record.createdAt is not None and record.createdAt.year < 1000:
        raise bad("createdAt", "createdAt must be in the years 1000-9999")
    for field in ("content", "sourceThreadId", "sourceTurnId"):
        value = getattr(record, field)
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise bad(field, f"{field} is not valid Unicode") from None
    for entity in record.entities:
        try:
            entity.encode("utf-8")
        except UnicodeEncodeError:
            raise bad("entities", "an entity is not valid Unicode") from None
    return record


def parse_import(body: bytes) -> list[MemoryRecord]:
    """Records of a JSON Lines body or a JSON array body; raises `InvalidRequest` (-> 422)."""
    text = body.lstrip()
    if not text:
        raise InvalidRequest("request body is required (JSON Lines or a JSON array)", loc=("body",), code="missing")
    if text.startswith(b"["):
        try:
            records = _array_decoder.decode(text)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            marker = msg.find("at `$[")
            index = int(msg[marker + 6:msg.index("]", marker)]) if marker >= 0 else 0
            raise _validation_error(exc, index, prefix=f"$[{index}]") from None
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"invalid JSON: {exc}", loc=("body",), code="json_invalid") from None
        return [_check_record(r, i) for i, r in enumerate(records)]
    records: list[MemoryRecord] = []
    for line in text.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        index = len(records)
        try:
            record = _record_decoder.decode(line)
        except msgspec.ValidationError as exc:
            raise _validation_error(exc, index) from None
        except msgspec.DecodeError as exc:
            raise InvalidRequest(f"record {index} (line {index + 1}): invalid JSON: {exc}", loc=("body", index),
                                 code="json_invalid") from None
        records.append(_check_record(record, index))
    return records
