"""Export and import of a namespace's memories as JSON Lines.

**Export** (``GET /api/v1/memory/export``): every memory of the namespace, superseded ones included,
oldest first, one `MemoryRecord` JSON object per line, streamed page by page (`MemoryStore.iter_all`,
keyset paging: a concurrent write neither repeats nor skips a memory). ``createdAt`` keeps its
microseconds so an import restores the exact order.

**Import** (``POST /api/v1/memory/import``): a JSON Lines body or one JSON array of the same records.
The whole body is validated first (any invalid record: 422, nothing written; ``loc`` is
``["body", <record index>, <field>]``). Records are then written in batches of `IMPORT_BATCH` (one
embedding batch and one LanceDB commit each) with their ids (uuid5 of the content and createdAt when a
record has none), so importing the same data twice writes nothing new. Supersession links are restored
after all records are written (`MemoryStore.supersede`), so a successor may come later in the file; a
link whose successor is neither in the import nor already in the namespace is reported in
``unresolvedLinks``, and the memory stays current.

The store cannot take precomputed vectors (yet), so an import embeds every content again: with the
local embedder that bounds import speed to the embedder's (see docs/benchmarks.md, "Memory import").
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from app.errors import InvalidRequest
from app.memory.models import Memory, NewMemory, as_utc

log = logging.getLogger("memchat.transfer")

IMPORT_BATCH = 1000
EXPORT_PAGE = 1000
MAX_CONTENT_CHARS = 32_000
_ID_NAMESPACE = uuid.UUID("0b6f3f0e-5a4b-4d1c-9a55-6d656d696d70")

# "Not blank": at least one character outside JSON Schema's (ECMA-262) \s class -- spelled out, so the
# published pattern and the server's check (`is_blank`) agree exactly (Python's \s differs).
NONBLANK = "[^\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
_NONBLANK = re.compile(NONBLANK)
Content = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONTENT_CHARS,
                                      extra_json_schema={"pattern": NONBLANK})]
# Years before 1000 do not survive the wire format (RFC 3339 needs four digits).
DATETIME_PATTERN = "^[1-9][0-9]{3}-"
Entity = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
RefId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Timestamp = Annotated[datetime, msgspec.Meta(extra_json_schema={"format": "date-time", "pattern": DATETIME_PATTERN})]


def is_blank(text: str) -> bool:
    return _NONBLANK.search(text) is None


class MemoryRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One memory as exported and imported. Only ``content`` is required on import."""

    content: Content
    createdAt: Timestamp | None = None  # noqa: N815  (naive = UTC)
    id: uuid.UUID | None = None
    source: Literal["explicit", "conversation"] = "explicit"
    sourceThreadId: RefId | None = None  # noqa: N815
    sourceTurnId: RefId | None = None  # noqa: N815
    entities: Annotated[list[Entity], msgspec.Meta(max_length=100)] = msgspec.field(default_factory=list)
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


async def export_lines(store, org_id: str, namespace: str) -> AsyncIterator[bytes]:
    """JSONL chunks (one per store page) of the namespace's memories, oldest first."""
    async for page in store.iter_all(org_id, namespace, batch=EXPORT_PAGE, include_superseded=True):
        yield b"".join(export_line(m) for m in page)


# --------------------------------------------------------------------------- parsing


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


def record_id(record: MemoryRecord) -> str:
    if record.id is not None:
        return str(record.id)
    created = as_utc(record.createdAt).isoformat() if record.createdAt else ""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{created}\n{record.content}"))


# --------------------------------------------------------------------------- writing


async def import_records(store, org_id: str, namespace: str, records: Sequence[MemoryRecord], *,
                         batch: int = IMPORT_BATCH) -> ImportResult:
    """Write ``records`` (ids preserved; idempotent) and restore their supersession links."""
    stored: dict[str, Memory] = {}
    links: list[tuple[str, str]] = []
    unresolved = written = batches = 0
    seen: set[str] = set()
    items: list[NewMemory] = []
    for record in records:
        mid = record_id(record)
        if mid in seen:
            continue
        seen.add(mid)
        items.append(NewMemory(content=record.content, source=record.source,
                               source_thread_id=record.sourceThreadId, source_turn_id=record.sourceTurnId,
                               entities=list(record.entities), created_at=record.createdAt, id=mid))
        if record.supersededBy is not None:
            links.append((mid, str(record.supersededBy)))
        elif record.state == "superseded":
            unresolved += 1  # superseded by nothing known: the store has no way to express that
    if getattr(store, "dim", 0) > 0 and items:
        # `add` embeds every item before its merge-insert skips the ids already stored, and embedding
        # costs ~10 ms a text with the local model, while reading the namespace costs ~25 us a memory:
        # so look the stored ones up first, and re-importing embeds nothing.
        wanted = {it.id for it in items}
        async for page in store.iter_all(org_id, namespace, include_superseded=True):
            stored.update((m.id, m) for m in page if m.id in wanted)
        items = [it for it in items if it.id not in stored]
        written += len(wanted) - len(items)
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        for memory in await store.add(org_id, namespace, chunk):
            stored[memory.id] = memory
        written += len(chunk)
        batches += 1
    restored = 0
    for old, new in links:
        have = stored.get(old)
        if have is not None and have.state == "superseded" and have.superseded_by == new:
            restored += 1  # already in place (a re-import)
            continue
        try:
            if await store.supersede(org_id, namespace, old, new):
                restored += 1
            else:
                unresolved += 1
        except (KeyError, ValueError):  # no such successor / a memory naming itself
            unresolved += 1
    total = await store.count(org_id, namespace, include_superseded=True)
    return ImportResult(received=len(records), written=written, batches=batches, supersededLinks=restored,
                        unresolvedLinks=unresolved, total=total)
