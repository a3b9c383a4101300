"""Which memories an entity backfill has processed, and with which content (table ``memory_entity_marks``).

A memory for which the model found no entity keeps an empty list, so without a mark a second backfill
would ask the model again; the mark (keyed by tenant + memory id, with the content's SHA-256) says it
was done for this content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa
from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from app.memory.models import Memory
from app.storage import filters as F
from app.storage import tables
from app.storage.tables import PK_META, TIMESTAMP, retry
from app.times import utcnow

MARKS = "memory_entity_marks"


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


MARK_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False, metadata={PK_META: b"1"}),
    pa.field("tenant", pa.string(), nullable=False),
    pa.field("memory_id", pa.string(), nullable=False),
    pa.field("content_sha256", pa.string(), nullable=False),
    pa.field("entity_count", pa.int32(), nullable=False),
    pa.field("processed_at", TIMESTAMP, nullable=False),
])


class EntityMarks:
    """Which memories a backfill has processed (with which content), in ``memory_entity_marks``."""

    def __init__(self, table: AsyncTable) -> None:
        self._table = table

    @classmethod
    async def open(cls, db: AsyncConnection) -> EntityMarks:
        return cls(await tables.open_or_create(db, MARKS, MARK_SCHEMA))

    async def processed(self, org_id: str, namespace: str, ids: Sequence[str]) -> dict[str, str]:
        """``{memory id: content sha256}`` for the ids that were processed."""
        if not ids:
            return {}
        where = F.memory_id_filter(org_id, namespace, ids)
        rows = (await self._table.query().where(where).select(["memory_id", "content_sha256"]).to_arrow()).to_pylist()
        return {r["memory_id"]: r["content_sha256"] for r in rows}

    async def mark(self, org_id: str, namespace: str, done: Sequence[tuple[Memory, int]]) -> None:
        if not done:
            return
        tenant = F.tenant_key(org_id, namespace)
        now = utcnow()
        rows = [{"key": f"{tenant}/{m.id}", "tenant": tenant, "memory_id": m.id,
                 "content_sha256": content_hash(m.content), "entity_count": n, "processed_at": now}
                for m, n in done]
        data = pa.Table.from_pylist(rows, schema=MARK_SCHEMA)
        await retry(lambda: self._table.merge_insert("key").when_matched_update_all()
                    .when_not_matched_insert_all().execute(data), what="memory_entity_marks.mark")

    async def delete_memory(self, org_id: str, namespace: str, memory_id: str) -> None:
        await tables.delete_where(self._table, F.memory_id_filter(org_id, namespace, [memory_id]), what=MARKS)

    async def delete_tenant(self, org_id: str, namespace: str) -> int:
        return await tables.delete_tenant(self._table, org_id, namespace, what=MARKS)

    async def maintain(self) -> None:
        await tables.optimize(self._table, what=MARKS)
