"""Earlier versions of memories (``PATCH /api/v1/memory/{id}``) in the LanceDB table ``memory_versions``.

The memories table holds only the current version of a memory. Before a PATCH changes a memory, the
version being replaced is appended here, so ``GET /api/v1/memory/{id}/history`` can show every version,
oldest to newest. One row per replaced version:

``key``          unenforced primary key: tenant key + ``/`` + memory id + ``/`` + the version's
                 ``updated_at`` (microseconds) -- recording the same version twice (a retried PATCH)
                 is a no-op merge-insert, never a second row
``tenant``       `filters.tenant_key(org_id, namespace)`; every query filters on it
``memory_id``, ``content``, ``entities``, ``state``, ``superseded_by``: the version's fields
``updated_at``   when this version was written (its own ``updatedAt``; the first one's is ``createdAt``)
``replaced_at``  when the PATCH replaced it

The version is recorded *before* the store is updated, so a crash in between leaves a row identical to
the still-current memory; `history` drops such a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
import pyarrow as pa
from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from app.memory.models import Memory
from app.storage import filters as F
from app.storage import tables
from app.storage.tables import PK_META, TIMESTAMP, retry
from app.times import as_utc, utcnow

VERSIONS = "memory_versions"
_TS = TIMESTAMP

VERSION_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False, metadata={PK_META: b"1"}),
    pa.field("tenant", pa.string(), nullable=False),
    pa.field("memory_id", pa.string(), nullable=False),
    pa.field("content", pa.string(), nullable=False),
    pa.field("entities", pa.list_(pa.string())),
    pa.field("state", pa.string(), nullable=False),
    pa.field("superseded_by", pa.string()),
    pa.field("updated_at", _TS, nullable=False),
    pa.field("replaced_at", _TS, nullable=False),
])


class MemoryVersion(msgspec.Struct, frozen=True, kw_only=True):
    memory_id: str
    content: str
    entities: list[str]
    state: str
    superseded_by: str | None
    updated_at: datetime
    replaced_at: datetime | None  # None: the current version


def _ts_key(value: datetime) -> str:
    return as_utc(value).strftime("%Y%m%dT%H%M%S.%fZ")


class VersionLog:
    def __init__(self, table: AsyncTable) -> None:
        self._table = table

    @classmethod
    async def open(cls, db: AsyncConnection) -> VersionLog:
        return cls(await tables.open_or_create(db, VERSIONS, VERSION_SCHEMA))

    async def record(self, memory: Memory, *, replaced_at: datetime | None = None) -> None:
        """Keep ``memory`` (the version about to be replaced). Idempotent per (memory, updated_at)."""
        tenant = F.tenant_key(memory.org_id, memory.namespace)
        row = {
            "key": f"{tenant}/{F.check_text(memory.id, 'id')}/{_ts_key(memory.updated_at)}",
            "tenant": tenant,
            "memory_id": memory.id,
            "content": memory.content,
            "entities": list(memory.entities),
            "state": memory.state,
            "superseded_by": memory.superseded_by,
            "updated_at": as_utc(memory.updated_at),
            "replaced_at": as_utc(replaced_at or utcnow()),
        }
        data = pa.Table.from_pylist([row], schema=VERSION_SCHEMA)
        await retry(lambda: self._table.merge_insert("key").when_not_matched_insert_all().execute(data),
                    what="memory_versions.record")

    async def earlier(self, org_id: str, namespace: str, memory_id: str) -> list[MemoryVersion]:
        """The replaced versions of one memory, oldest first."""
        where = F.memory_id_filter(org_id, namespace, [memory_id])
        rows = (await self._table.query().where(where).to_arrow()).to_pylist()
        out = [
            MemoryVersion(memory_id=r["memory_id"], content=r["content"], entities=list(r["entities"] or []),
                          state=r["state"], superseded_by=r["superseded_by"], updated_at=as_utc(r["updated_at"]),
                          replaced_at=as_utc(r["replaced_at"]))
            for r in rows
        ]
        return sorted(out, key=lambda v: (v.updated_at, v.replaced_at or v.updated_at))

    async def history(self, current: Memory) -> list[MemoryVersion]:
        """Every version of ``current``, oldest first, ending with ``current`` itself."""
        earlier = await self.earlier(current.org_id, current.namespace, current.id)
        now = MemoryVersion(memory_id=current.id, content=current.content, entities=list(current.entities),
                            state=current.state, superseded_by=current.superseded_by,
                            updated_at=current.updated_at, replaced_at=None)
        # A version recorded by a PATCH whose store update then failed equals the current one: drop it.
        kept = [v for v in earlier
                if not (v.updated_at >= current.updated_at and v.content == current.content
                        and v.entities == now.entities)]
        return [*kept, now]

    async def delete_memory(self, org_id: str, namespace: str, memory_id: str) -> int:
        return await tables.delete_where(self._table, F.memory_id_filter(org_id, namespace, [memory_id]),
                                         what=VERSIONS)

    async def delete_tenant(self, org_id: str, namespace: str) -> int:
        return await tables.delete_tenant(self._table, org_id, namespace, what=VERSIONS)

    async def maintain(self) -> None:
        await tables.optimize(self._table, what=VERSIONS)

    async def count(self, org_id: str, namespace: str, memory_ids: Sequence[str] | None = None) -> int:
        where = F.memory_id_filter(org_id, namespace, memory_ids) if memory_ids else F.tenant_filter(org_id, namespace)
        return int(await self._table.count_rows(where))
