"""Export and import of a namespace's memories (the wire format is `app.api.memory_transfer`'s).

**Export**: every memory of the namespace, superseded ones included, oldest first, page by page
(`MemoryStore.iter_all`, keyset paging: a concurrent write neither repeats nor skips a memory).

**Import**: items are written in batches of `IMPORT_BATCH` (one embedding batch and one LanceDB commit
each) with their ids (uuid5 of the content and createdAt when an item has none), so importing the same
data twice writes nothing new. Supersession links are restored after all items are written
(`MemoryStore.supersede`), so a successor may come later; a link whose successor is neither in the
import nor already in the namespace is counted as unresolved, and the memory stays current.

The store cannot take precomputed vectors (yet), so an import embeds every content again: with the
local embedder that bounds import speed to the embedder's (see docs/benchmarks.md, "Memory import").
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import msgspec

from app.memory.models import Memory, NewMemory
from app.memory.store import MemoryStore
from app.times import as_utc

IMPORT_BATCH = 1000
EXPORT_PAGE = 1000
_ID_NAMESPACE = uuid.UUID("0b6f3f0e-5a4b-4d1c-9a55-6d656d696d70")


class ImportItem(msgspec.Struct, frozen=True, kw_only=True):
    """One memory to import, its state, and its supersession link (the successor's id) if it has one."""

    memory: NewMemory
    state: str = "current"
    superseded_by: str | None = None


class ImportCounts(msgspec.Struct, frozen=True, kw_only=True):
    received: int
    written: int
    batches: int
    superseded_links: int
    unresolved_links: int
    total: int


def item_id(item: ImportItem) -> str:
    memory = item.memory
    if memory.id is not None:
        return memory.id
    created = as_utc(memory.created_at).isoformat() if memory.created_at else ""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{created}\n{memory.content}"))


def export_pages(store: MemoryStore, org_id: str, namespace: str) -> AsyncIterator[list[Memory]]:
    """The namespace's memories, oldest first, superseded ones too, in pages."""
    return store.iter_all(org_id, namespace, batch=EXPORT_PAGE, include_superseded=True)


async def import_items(store: MemoryStore, org_id: str, namespace: str, records: Sequence[ImportItem], *,
                       batch: int = IMPORT_BATCH) -> ImportCounts:
    """Write ``records`` (ids preserved; idempotent) and restore their supersession links."""
    stored: dict[str, Memory] = {}
    links: list[tuple[str, str]] = []
    unresolved = written = batches = 0
    seen: set[str] = set()
    items: list[NewMemory] = []
    for record in records:
        mid = item_id(record)
        if mid in seen:
            continue
        seen.add(mid)
        items.append(msgspec.structs.replace(record.memory, id=mid))
        if record.superseded_by is not None:
            links.append((mid, record.superseded_by))
        elif record.state == "superseded":
            unresolved += 1  # superseded by nothing known: the store has no way to express that
    if store.dim > 0 and items:
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
    return ImportCounts(received=len(records), written=written, batches=batches, superseded_links=restored,
                        unresolved_links=unresolved, total=total)
