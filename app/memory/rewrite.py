"""Changing one stored memory safely while other processes may change it too (`MemoryStore.update`,
`MemoryStore.supersede`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from app.memory.models import Memory
from app.memory.schema import row_to_memory
from app.storage import filters as F
from app.storage.tables import retry

if TYPE_CHECKING:
    from app.memory.store import MemoryStore


async def compare_and_swap(store: MemoryStore, org_id: str, namespace: str, memory_id: str,
                           change: Callable[[Memory], Memory]) -> Memory | None:
    """Read-modify-write of one memory as a compare-and-swap: the merge-insert only
    matches the row if its ``write_id`` is still the one we read, so a concurrent update
    from another replica is never silently overwritten -- we re-read and re-apply."""
    cols = ["payload", "write_id", "search_text", *(["vector"] if store.dim > 0 else [])]
    where = F.id_filter(org_id, namespace, memory_id)
    for _ in range(10):
        rows = (await store.table.query().where(where).select(cols).limit(1).to_arrow()).to_pylist()
        if not rows:
            return None
        cur = row_to_memory(rows[0])
        new = change(cur)
        vectors = None
        if store.dim > 0:
            if new.content != cur.content:
                vectors = await store.embed_texts([new.content])
            else:
                vectors = np.asarray([rows[0]["vector"]], dtype=np.float32).reshape(1, store.dim)
        # Same content: keep the FTS document (with its thread context); new content stands alone.
        texts = [rows[0]["search_text"]] if new.content == cur.content else None
        data = store.to_rows([new], vectors, search_texts=texts)
        cond = F.target_write_id(rows[0]["write_id"])
        store.vectors.invalidate(org_id, namespace)
        res = await retry(
            lambda cond=cond, data=data: store.table.merge_insert("pk").when_matched_update_all(where=cond).execute(data),
            what="rewrite",
        )
        store.vectors.invalidate(org_id, namespace)  # again: a search during the write may have cached the old row
        if res.num_updated_rows > 0:
            return new
        await asyncio.sleep(random.random() * 0.02)
    raise RuntimeError(f"memory {memory_id!r} kept changing under concurrent writers; giving up")
