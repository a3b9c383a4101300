"""`MemoryStore`: per-(org, namespace) long-term memories in one LanceDB table.

Location: a local directory (``<data_dir>/lancedb``) or any object-store URI LanceDB
understands (``s3://bucket/prefix``, ``gs://``, ``az://``), with ``storage_options`` passed
through untouched. Nothing here touches the file system directly, and nothing assumes it is
the only process: several memchat replicas may open the same store. Lance commits are
optimistic; appends never conflict, and the other writes (merge-insert, update, delete,
index builds, optimize) are retried on a commit conflict (`app.storage.tables.retry`). The
connection comes from `app.storage.connection` (one per process, shared with the other tables).

Table ``memories`` (see `build_schema`): one row per memory; ``tenant`` is an injective
encoding of (org_id, namespace) (`filters.tenant_key`) that every query filters on with a
BTree index, so one indexed equality scopes both. ``search_text`` is the FTS column:
the content plus the memory's date in words. The embedder's name and dimension live in the
schema metadata; opening with a different embedder raises `EmbedderMismatch`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from app.memory import maintenance as M
from app.memory.maintenance import DEFAULT_VECTOR_INDEX_MIN_ROWS, OPEN_INDEX_MAX_ROWS
from app.memory import paging
from app.memory.context import CONTEXT_MAX_CHARS, previous_in_thread
from app.memory.embed import Embedder, QueryEmbedder
from app.memory.limits import check_content, check_entities
from app.memory.models import Memory, NewMemory, ScoredMemory, new_id
from app.memory.neighbours import thread_times
from app.memory.presence import TenantPresence
from app.memory.rewrite import compare_and_swap
from app.memory.schema import (
    MEMORY_COLUMNS,
    TABLE,
    build_schema,
    check_embedder,
    decode_hit_row,
    row_to_memory,
    to_arrow,
)
from app.memory.search import SearchConfig, run_search
from app.memory.vector_cache import DEFAULT_MAX_BYTES, VectorCache
from app.obs.metrics import Metrics, timed_store_call
from app.storage import filters as F
from app.storage import tables
from app.storage.connection import connect
from app.storage.tables import retry
from app.times import as_utc, utcnow

log = logging.getLogger("memchat.memory")

class MemoryStore:
    """Async memory store. Construct with ``await MemoryStore.open(uri, embedder)``."""

    metrics: Metrics | None = None  # store call latencies (set by the services)

    def __init__(
        self,
        db: AsyncConnection,
        table: AsyncTable,
        embedder: Embedder,
        search_config: SearchConfig,
        vector_index_min_rows: int | None,
    ) -> None:
        self._db = db
        self._table = table
        self._embedder = embedder
        self.search_config = search_config
        self.vector_index_min_rows = vector_index_min_rows
        # Characters of the previous memory of the same thread indexed with each memory (0: none).
        self.context_chars = CONTEXT_MAX_CHARS
        self.dim = int(embedder.dim)
        self._maintain_lock = asyncio.Lock()
        self.presence = TenantPresence(self._count_tenant)
        self.vectors = VectorCache(self._load_tenant_vectors, max_bytes=0 if self.dim == 0 else DEFAULT_MAX_BYTES,
                                   version=self._table.version)

    # ------------------------------------------------------------------ open / close

    @classmethod
    async def open(
        cls,
        uri: str,
        embedder: Embedder,
        storage_options: dict[str, str] | None = None,
        **options: Any,
    ) -> MemoryStore:
        """Open the store on its own connection (tools and tests; the server shares one, `open_on`)."""
        return await cls.open_on(await connect(uri, storage_options), embedder, **options)

    @classmethod
    async def open_on(
        cls,
        db: AsyncConnection,
        embedder: Embedder,
        *,
        search_config: SearchConfig | None = None,
        vector_index_min_rows: int | None = DEFAULT_VECTOR_INDEX_MIN_ROWS,
    ) -> MemoryStore:
        if int(embedder.dim) == 0 and callable(getattr(embedder, "resolve_dim", None)):
            await embedder.resolve_dim()  # type: ignore[attr-defined]  # an OpenAI embedder learns its dim on first use
        dim = int(embedder.dim)
        table = await tables.open_or_create(db, TABLE, build_schema(embedder.name, dim))
        check_embedder(await table.schema(), embedder.name, dim, db.uri)
        cfg = search_config or SearchConfig()
        if dim == 0 and cfg.needs_vectors:
            cfg = SearchConfig(mode="fts", fts_column=cfg.fts_column, preprocess=cfg.preprocess)
        store = cls(db, table, embedder, cfg, vector_index_min_rows)
        await store._ensure_indexes(max_rows=OPEN_INDEX_MAX_ROWS)
        return store

    async def close(self) -> None:
        self._table.close()

    @property
    def table(self) -> AsyncTable:
        """The underlying LanceDB AsyncTable (benchmarks / maintenance tooling only)."""
        return self._table

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    # ------------------------------------------------------------------ helpers

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray | None:
        if self.dim == 0:
            return None
        vecs = np.asarray(await self._embedder.embed(list(texts)), dtype=np.float32)
        if vecs.shape != (len(texts), self.dim):
            raise ValueError(f"embedder returned shape {vecs.shape}, expected {(len(texts), self.dim)}")
        return vecs

    async def _embed_query(self, text: str) -> np.ndarray:
        """A search query's vector: the embedder's own query embedding when it has one (`QueryEmbedder`)."""
        if isinstance(self._embedder, QueryEmbedder):
            vec = np.asarray(await self._embedder.embed_query(text), dtype=np.float32)
            if vec.shape != (self.dim,):
                raise ValueError(f"embedder returned shape {vec.shape} for a query, expected {(self.dim,)}")
            return vec
        vecs = await self.embed_texts([text])
        assert vecs is not None
        return vecs[0]

    def to_rows(self, memories: Sequence[Memory], vectors: np.ndarray | None, write_id: str | None = None,
                  **texts: Any) -> pa.Table:
        return to_arrow(memories, vectors, self._embedder.name, self.dim, write_id, **texts)

    async def _fetch(self, where: str, limit: int | None = None) -> list[Memory]:
        q = self._table.query().where(where).select(MEMORY_COLUMNS)
        if limit is not None:
            q = q.limit(limit)
        return [row_to_memory(r) for r in (await q.to_arrow()).to_pylist()]

    # ------------------------------------------------------------------ writes

    @timed_store_call("memory_add")
    async def add(self, org_id: str, namespace: str, items: Sequence[NewMemory]) -> list[Memory]:
        """Embed all items in one batch and write them in one LanceDB commit.

        Items with an explicit ``id`` are written with a merge-insert keyed on (tenant, id),
        so re-adding an id never duplicates it; for those the *stored* memory is returned.
        """
        if not items:
            return []
        F.tenant_key(org_id, namespace)
        now = utcnow()
        memories: list[Memory] = []
        seen: set[str] = set()
        for it in items:
            mid = it.id if it.id is not None else new_id()
            F.check_text(mid, "id")
            check_content(it.content)
            check_entities(it.entities)
            if mid in seen:  # the same id twice in one batch: keep the first
                continue
            seen.add(mid)
            created = as_utc(it.created_at) if it.created_at is not None else now
            memories.append(
                Memory(
                    id=mid,
                    org_id=org_id,
                    namespace=namespace,
                    content=it.content,
                    created_at=created,
                    updated_at=created,
                    source=it.source,
                    source_thread_id=it.source_thread_id,
                    source_turn_id=it.source_turn_id,
                    entities=list(it.entities),
                )
            )
        vectors = await self.embed_texts([m.content for m in memories])
        data = self.to_rows(memories, vectors, contexts=previous_in_thread(memories, self.context_chars))
        self.presence.mark_present(org_id, namespace)  # before the write: never "empty" once it lands
        explicit = any(it.id is not None for it in items)
        if not explicit:
            await retry(lambda: self._table.add(data), what="add")
            if vectors is not None:
                self.vectors.appended(org_id, namespace, [m.id for m in memories], vectors,
                                     data.column("payload").to_pylist(), *thread_times(memories))
            return memories
        res = await retry(
            lambda: self._table.merge_insert("pk").when_not_matched_insert_all().execute(data),
            what="add(merge_insert)",
        )
        if vectors is not None and res.num_inserted_rows == len(memories):
            self.vectors.appended(org_id, namespace, [m.id for m in memories], vectors,
                                     data.column("payload").to_pylist(), *thread_times(memories))
        else:  # some ids existed already: reload rather than guess which rows are new
            self.vectors.invalidate(org_id, namespace)
        # Lance detects concurrent inserts of the same primary key and retries the loser,
        # but not in every interleaving (seen with a concurrent optimize()); so check, and
        # if a racing writer inserted the same ids, keep one copy (the earliest).
        stored = await M.resolve_duplicates(self._table, org_id, namespace, [m.id for m in memories])
        if any(stored.get(m.id, m) != m for m in memories):
            self.vectors.invalidate(org_id, namespace)
        return [stored.get(m.id, m) for m in memories]

    async def repair_duplicates(self) -> int:
        """Scan the whole table for ids stored twice in a tenant (left by racing writers) and
        keep one copy of each. Returns the number of rows removed. An operator tool."""
        removed = await M.repair_duplicates(self._table)
        self.vectors.clear()
        return removed

    async def delete(self, org_id: str, namespace: str, memory_id: str) -> bool:
        where = F.id_filter(org_id, namespace, memory_id)
        deleted = await tables.delete_where(self._table, where, what="memories")
        self.vectors.invalidate(org_id, namespace)
        return deleted > 0

    async def delete_namespace(self, org_id: str, namespace: str) -> int:
        deleted = await tables.delete_tenant(self._table, org_id, namespace, what="memories")
        self.presence.forget(org_id, namespace)
        self.vectors.invalidate(org_id, namespace)
        return deleted

    async def supersede(self, org_id: str, namespace: str, old_id: str, new_id: str) -> bool:
        """Mark ``old_id`` as superseded by ``new_id`` (both in this tenant). Returns False
        if ``old_id`` does not exist here; raises ``KeyError`` if ``new_id`` does not."""
        if old_id == new_id:
            raise ValueError("a memory cannot supersede itself")
        if await self.get(org_id, namespace, new_id) is None:
            raise KeyError(new_id)

        def change(cur: Memory) -> Memory:
            return msgspec.structs.replace(
                cur, state="superseded", superseded_by=new_id, updated_at=max(utcnow(), cur.updated_at)
            )

        return await self._rewrite(org_id, namespace, old_id, change) is not None

    async def update(
        self,
        org_id: str,
        namespace: str,
        memory_id: str,
        *,
        content: str | None = None,
        entities: Sequence[str] | None = None,
    ) -> Memory | None:
        """Replace content and/or entities (re-embedding new content) in one commit.
        Returns the updated memory, or None if it does not exist in this tenant."""
        if content is not None:
            F.check_text(content, "content")
            check_content(content)
        if entities is not None:
            check_entities(entities)

        def change(cur: Memory) -> Memory:
            changes: dict[str, Any] = {"updated_at": max(utcnow(), cur.updated_at)}
            if content is not None:
                changes["content"] = content
            if entities is not None:
                changes["entities"] = list(entities)
            return msgspec.structs.replace(cur, **changes)

        return await self._rewrite(org_id, namespace, memory_id, change)

    async def _rewrite(self, org_id: str, namespace: str, memory_id: str,
                       change: Callable[[Memory], Memory]) -> Memory | None:
        return await compare_and_swap(self, org_id, namespace, memory_id, change)

    # ------------------------------------------------------------------ reads

    async def get(self, org_id: str, namespace: str, memory_id: str) -> Memory | None:
        rows = await self._fetch(F.id_filter(org_id, namespace, memory_id), limit=1)
        return rows[0] if rows else None

    async def superseded_by(self, org_id: str, namespace: str, memory_id: str) -> list[str]:
        """Ids of the memories ``memory_id`` replaced (one indexed-tenant query on the link column)."""
        rows = await self._table.query().where(F.superseded_by_filter(org_id, namespace, memory_id)).select(
            ["id"]).to_arrow()
        return sorted(rows.column("id").to_pylist())

    async def _load_tenant_vectors(self, org_id: str, namespace: str) -> pa.Table:
        return await self._table.query().where(F.tenant_filter(org_id, namespace)).select(
            ["id", "vector", "payload", "source_thread_id", "created_at"]).to_arrow()

    async def _count_tenant(self, org_id: str, namespace: str) -> int:
        return int(await self._table.count_rows(F.tenant_filter(org_id, namespace)))

    async def may_have_memories(self, org_id: str, namespace: str) -> bool:
        """False when the tenant is known to have no memory at all (see `app.memory.presence`)."""
        return await self.presence.may_have_memories(org_id, namespace)

    async def count(self, org_id: str, namespace: str, *, source: str | None = None, entity: str | None = None,
                    include_superseded: bool = False) -> int:
        where = F.build(org_id, namespace, include_superseded=include_superseded, source=source, entity=entity)
        return int(await self._table.count_rows(where))

    async def list(
        self,
        org_id: str,
        namespace: str,
        *,
        limit: int = 50,
        offset: int = 0,
        source: str | None = None,
        entity: str | None = None,
        include_superseded: bool = False,
        before: tuple[datetime, str] | None = None,
    ) -> tuple[list[Memory], int]:
        """Newest first (``created_at DESC, id DESC``). Returns (page, total matching).
        ``before=(created_at, id)`` of the previous page's last item: keyset paging (`app.memory.paging`)."""
        where = F.build(org_id, namespace, include_superseded=include_superseded, source=source, entity=entity)
        return await paging.newest_first(self._table, where, limit=limit, offset=offset, before=before)

    async def iter_all(
        self, org_id: str, namespace: str, batch: int = 1000, *, include_superseded: bool = True
    ) -> AsyncIterator[list[Memory]]:
        """All memories of a tenant, oldest first, in lists of up to ``batch`` (keyset paging)."""
        async for page in paging.oldest_first(self._table, F.build(org_id, namespace,
                                                                   include_superseded=include_superseded), batch):
            yield page

    @timed_store_call("memory_search")
    async def search(
        self,
        org_id: str,
        namespace: str,
        query: str,
        *,
        limit: int = 8,
        min_score: float | None = None,
        include_superseded: bool = False,
        config: SearchConfig | None = None,
    ) -> list[ScoredMemory]:
        """Best memories of this tenant for ``query`` (scale of ``score``: see
        `app.memory.search`). Superseded memories are excluded unless asked for."""
        cfg = config or self.search_config
        if cfg.needs_vectors and self.dim == 0:
            raise ValueError(f"search mode {cfg.mode!r} needs an embedder with vectors")
        hits = await run_search(
            self._table,
            cfg,
            query,
            F.tenant_filter(org_id, namespace),
            limit,
            MEMORY_COLUMNS,
            self._embed_query if self.dim > 0 else None,
            current_only=not include_superseded,
            decode=decode_hit_row,
            dense_search=lambda vector, n: self.vectors.search(org_id, namespace, vector, n),
            dense_scores=lambda vector, ids: self.vectors.similarities(org_id, namespace, vector, ids),
            neighbourhood=lambda vector, ids: self.vectors.neighbourhood(org_id, namespace, vector, ids),
        )
        out = [ScoredMemory(memory=r["memory"], score=s) for r, s in hits]
        if min_score is not None:
            out = [h for h in out if h.score >= min_score]
        return out

    # ------------------------------------------------------------------ maintenance

    async def maintain(self, *, cleanup_older_than: timedelta | None = None) -> dict[str, Any]:
        """Indexes and compaction (`app.memory.maintenance.maintain`). Background task only; one at a time."""
        async with self._maintain_lock:
            return await M.maintain(self._table, self.search_config.fts_column, self.dim, self.vector_index_min_rows,
                                    cleanup_older_than=cleanup_older_than)

    async def _ensure_indexes(self, *, max_rows: int | None) -> dict[str, Any]:
        return await M.ensure_indexes(
            self._table, self.search_config.fts_column, self.dim, self.vector_index_min_rows, max_rows=max_rows
        )

    async def stats(self) -> dict[str, Any]:
        return {**await M.table_stats(self._table), "embedder": self._embedder.name, "dim": self.dim,
                "search": {"mode": self.search_config.mode}}
