"""The memory service: what the memory REST API (and the web page) can do with a user's memories.

Handlers parse and render; every rule about memories lives here or below -- a change keeps the replaced
version, a delete takes the memory's versions and entity marks with it, a forget deletes the user's
conversations first (so an idle commit cannot rebuild memories from them meanwhile) and runs once more
one turn-journal flush later.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

import anyio
import msgspec
from anyio.abc import TaskGroup

from app.errors import NotFound
from app.memory import transfer
from app.memory.entities import BackfillCounts, EntityExtractor, backfill_page
from app.memory.entity_marks import EntityMarks
from app.memory.models import Memory, NewMemory, ScoredMemory
from app.memory.store import MemoryStore
from app.memory.versions import MemoryVersion, VersionLog

log = logging.getLogger("memchat.memory")


class TenantData(Protocol):
    """Something else that holds a user's data and forgets it with them (the turn log, commit records)."""

    async def delete_tenant(self, org_id: str, namespace: str) -> int: ...


class MemoryHistory(msgspec.Struct, frozen=True, kw_only=True):
    memory: Memory
    versions: list[MemoryVersion]   # oldest first, ending with the current one
    supersedes: list[str]           # the memories this one replaced


class MemoryService:
    def __init__(self, store: MemoryStore, versions: VersionLog, marks: EntityMarks, entities: EntityExtractor, *,
                 conversation_data: Mapping[str, TenantData] | None = None,
                 forget_again_after: float | None = None) -> None:
        self.store = store
        self.versions = versions
        self.marks = marks
        self.entities = entities
        self.conversation_data = dict(conversation_data or {})
        self.forget_again_after = forget_again_after
        self.task_group: TaskGroup | None = None  # set once the app's task group runs (second forget pass)

    async def create(self, org_id: str, namespace: str, content: str) -> Memory:
        [memory] = await self.store.add(org_id, namespace, [NewMemory(content=content, source="explicit")])
        return memory

    async def search(self, org_id: str, namespace: str, query: str, *, limit: int) -> list[ScoredMemory]:
        return await self.store.search(org_id, namespace, query, limit=limit)

    async def get(self, org_id: str, namespace: str, memory_id: str) -> Memory:
        memory = await self.store.get(org_id, namespace, memory_id)
        if memory is None:
            raise NotFound("memory not found")
        return memory

    async def list(self, org_id: str, namespace: str, *, limit: int, offset: int, source: str | None = None,
                   entity: str | None = None, include_superseded: bool = False,
                   before: str | None = None) -> tuple[list[Memory], int]:
        """A page, newest first; ``before`` (a memory id) pages by key, after that memory."""
        cursor = None
        if before is not None:
            anchor = await self.store.get(org_id, namespace, before)
            if anchor is None:
                raise NotFound("before: no such memory in this namespace")
            cursor = (anchor.created_at, anchor.id)
        return await self.store.list(org_id, namespace, limit=limit, offset=offset, source=source, entity=entity,
                                     include_superseded=include_superseded, before=cursor)

    async def update(self, org_id: str, namespace: str, memory_id: str, *, content: str | None = None,
                     entities: Sequence[str] | None = None) -> Memory:
        """Change content (re-embedded) and/or entities; the replaced version is kept. No change, no version."""
        current = await self.get(org_id, namespace, memory_id)
        if (content is None or content == current.content) and (entities is None or list(entities) == current.entities):
            return current
        await self.versions.record(current)
        updated = await self.store.update(org_id, namespace, memory_id, content=content, entities=entities)
        if updated is None:
            raise NotFound("memory not found")
        return updated

    async def delete(self, org_id: str, namespace: str, memory_id: str) -> None:
        """Delete the memory, its earlier versions and its entity mark."""
        if not await self.store.delete(org_id, namespace, memory_id):
            raise NotFound("memory not found")
        await self.versions.delete_memory(org_id, namespace, memory_id)
        await self.marks.delete_memory(org_id, namespace, memory_id)

    async def history(self, org_id: str, namespace: str, memory_id: str) -> MemoryHistory:
        memory = await self.get(org_id, namespace, memory_id)
        return MemoryHistory(memory=memory, versions=await self.versions.history(memory),
                             supersedes=await self.store.superseded_by(org_id, namespace, memory_id))

    async def backfill_entities(self, org_id: str, namespace: str, *, limit: int, offset: int,
                                chunk_size: int) -> BackfillCounts:
        return await backfill_page(self.store, self.marks, self.entities, org_id, namespace, limit=limit,
                                   offset=offset, chunk_size=chunk_size)

    async def import_items(self, org_id: str, namespace: str,
                           items: Sequence[transfer.ImportItem]) -> transfer.ImportCounts:
        return await transfer.import_items(self.store, org_id, namespace, items)

    def export(self, org_id: str, namespace: str) -> AsyncIterator[list[Memory]]:
        return transfer.export_pages(self.store, org_id, namespace)

    async def forget(self, org_id: str, namespace: str) -> dict[str, int]:
        """Forget a user: every memory, earlier version and conversation of the namespace. Runs again in
        the background `forget_again_after` seconds later (see `_forget_again`). The first pass's counts."""
        counts = await self._forget_once(org_id, namespace)
        if self.task_group is not None and self.forget_again_after is not None:
            self.task_group.start_soon(self._forget_again, org_id, namespace)
        return counts

    async def _forget_once(self, org_id: str, namespace: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name, data in self.conversation_data.items():  # conversations first
            counts[name] = await data.delete_tenant(org_id, namespace)
        counts["memories"] = await self.store.delete_namespace(org_id, namespace)
        counts["versions"] = await self.versions.delete_tenant(org_id, namespace)
        await self.marks.delete_tenant(org_id, namespace)
        return counts

    async def _forget_again(self, org_id: str, namespace: str) -> None:
        """A turn another worker journaled just before the forget reaches the table with that worker's next
        flush (and an idle commit may have turned it into memories): one flush interval later, everything
        of the namespace is deleted once more. (A conversation started in that interval goes too.)"""
        assert self.forget_again_after is not None
        await anyio.sleep(self.forget_again_after)
        try:
            counts = await self._forget_once(org_id, namespace)
        except Exception:
            log.exception("second pass of forgetting a namespace failed; run the forget again")
            return
        if any(counts.values()):
            log.info("forget, second pass: removed %s", counts)
