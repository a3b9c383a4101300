"""`MemoryStore`: per-(org, namespace) long-term memories in one LanceDB table.

Location: a local directory (``<data_dir>/lancedb``) or any object-store URI LanceDB
understands (``s3://bucket/prefix``, ``gs://``, ``az://``), with ``storage_options`` passed
through untouched. Nothing here touches the file system directly, and nothing assumes it is
the only process: several memchat replicas may open the same store. Lance commits are
optimistic; appends never conflict, and the other writes (merge-insert, update, delete,
index builds, optimize) are retried here on a commit conflict (`_retry`). Readers see other
processes' commits after ``read_consistency_interval`` (default 0 = every read checks the
latest manifest; raise it on high-latency object stores if slightly stale reads are fine).

Table ``memories`` (see `build_schema`): one row per memory; ``tenant`` is an injective
encoding of (org_id, namespace) (`filters.tenant_key`) that every query filters on with a
BTree index, so one indexed equality scopes both. ``search_text`` is the FTS column:
the content plus the memory's date in words. The embedder's name and dimension live in the
schema metadata; opening with a different embedder raises `EmbedderMismatch`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from app.memory import filters as F
from app.memory.models import Memory, NewMemory, ScoredMemory, as_utc, new_id, utcnow
from app.memory.search import SearchConfig, run_search

log = logging.getLogger(__name__)

TABLE = "memories"
SCHEMA_VERSION = "1"
META_EMBEDDER = b"memchat.embedder"
META_DIM = b"memchat.embedding_dim"
META_SCHEMA = b"memchat.schema_version"

# Columns a Memory is built from (never the vector).
MEMORY_COLUMNS = [
    "id",
    "org_id",
    "namespace",
    "content",
    "created_at",
    "updated_at",
    "source",
    "source_thread_id",
    "source_turn_id",
    "entities",
    "state",
    "superseded_by",
]

# A vector (ANN) index is only built once the table has this many rows. Below it -- and,
# with per-tenant prefilters, usually above it too -- a flat search over the tenant's rows
# (found through the BTree index) is both faster and exact; see docs/benchmarks.md.
DEFAULT_VECTOR_INDEX_MIN_ROWS: int | None = None

# `open` builds missing BTree/FTS indexes itself when the table has at most this many rows
# (instant on a new, empty table); bigger tables wait for `maintain`. This matters for FTS:
# without an index, Lance's flat FTS tokenizes with defaults (no stemming, no stop-word
# removal), so BM25 would rank "what is my ..." by "is"/"my"; with an index -- even an empty
# one -- unindexed rows are tokenized with the index's configuration.
OPEN_INDEX_MAX_ROWS = 10_000

_TS = pa.timestamp("us", tz="UTC")
PK_META = b"lance-schema:unenforced-primary-key:position"


class Embedder(Protocol):
    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    async def aclose(self) -> None: ...


class EmbedderMismatch(RuntimeError):
    """The store was built with another embedder (different dimension or model)."""


def build_schema(embedder_name: str, dim: int) -> pa.Schema:
    fields = [
        # LanceDB "unenforced primary key": merge_insert on it detects concurrent inserts of
        # the same key (commit-time conflict -> retried) instead of duplicating the row.
        pa.field("pk", pa.string(), nullable=False, metadata={PK_META: b"1"}),
        pa.field("id", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("org_id", pa.string(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        pa.field("search_text", pa.string(), nullable=False),
        pa.field("created_at", _TS, nullable=False),
        pa.field("updated_at", _TS, nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_thread_id", pa.string()),
        pa.field("source_turn_id", pa.string()),
        pa.field("entities", pa.list_(pa.string())),
        pa.field("state", pa.string(), nullable=False),
        pa.field("superseded_by", pa.string()),
    ]
    if dim > 0:
        fields.append(pa.field("vector", pa.list_(pa.float32(), dim)))
    meta = {META_EMBEDDER: embedder_name.encode(), META_DIM: str(dim).encode(), META_SCHEMA: SCHEMA_VERSION.encode()}
    return pa.schema(fields, metadata=meta)


def search_text(content: str, created_at: datetime) -> str:
    """The FTS document: content plus the date in words ("14 March 2023"), so "where did I
    travel in March 2023" can match memories by when they were said."""
    d = as_utc(created_at)
    return f"{content}\n{d.day} {d:%B %Y}"


def is_conflict(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return any(
        s in msg
        for s in ("commit conflict", "conflict", "retryable", "too many concurrent writers", "was concurrently")
    )


async def _retry(op, *, what: str, attempts: int = 8, base: float = 0.05):
    """Run ``op()`` (a coroutine factory), retrying on Lance commit conflicts with jittered
    exponential backoff; other errors propagate at once."""
    for i in range(attempts):
        try:
            return await op()
        except Exception as e:  # noqa: BLE001 - LanceDB raises plain RuntimeError/OSError
            if i == attempts - 1 or not is_conflict(e):
                raise
            delay = base * (2**i) * (0.5 + random.random())
            log.info("commit conflict in %s (attempt %d): %s; retrying in %.2fs", what, i + 1, e, delay)
            await asyncio.sleep(delay)


def _row_to_memory(r: dict[str, Any]) -> Memory:
    return Memory(
        id=r["id"],
        org_id=r["org_id"],
        namespace=r["namespace"],
        content=r["content"],
        created_at=as_utc(r["created_at"]),
        updated_at=as_utc(r["updated_at"]),
        source=r["source"],
        source_thread_id=r["source_thread_id"],
        source_turn_id=r["source_turn_id"],
        entities=list(r["entities"] or []),
        state=r["state"],
        superseded_by=r["superseded_by"],
    )


class MemoryStore:
    """Async memory store. Construct with ``await MemoryStore.open(uri, embedder)``."""

    def __init__(
        self,
        db,
        table,
        embedder: Embedder,
        search_config: SearchConfig,
        vector_index_min_rows: int | None,
    ) -> None:
        self._db = db
        self._table = table
        self._embedder = embedder
        self.search_config = search_config
        self.vector_index_min_rows = vector_index_min_rows
        self.dim = int(embedder.dim)
        self._maintain_lock = asyncio.Lock()

    # ------------------------------------------------------------------ open / close

    @classmethod
    async def open(
        cls,
        uri: str,
        embedder: Embedder,
        storage_options: dict[str, str] | None = None,
        *,
        search_config: SearchConfig | None = None,
        read_consistency_interval: timedelta | None = timedelta(0),
        vector_index_min_rows: int | None = DEFAULT_VECTOR_INDEX_MIN_ROWS,
    ) -> MemoryStore:
        import lancedb

        db = await lancedb.connect_async(
            str(uri),
            storage_options=dict(storage_options) if storage_options else None,
            read_consistency_interval=read_consistency_interval,
        )
        dim = int(embedder.dim)
        schema = build_schema(embedder.name, dim)
        try:
            table = await db.open_table(TABLE)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            if "not found" not in str(e).lower() and "does not exist" not in str(e).lower():
                raise
            # exist_ok: another replica may create it at the same moment.
            table = await db.create_table(TABLE, schema=schema, exist_ok=True)
        await cls._check_embedder(table, embedder.name, dim, str(uri))
        cfg = search_config or SearchConfig()
        if dim == 0 and cfg.needs_vectors:
            cfg = SearchConfig(mode="fts", fts_column=cfg.fts_column, preprocess=cfg.preprocess)
        store = cls(db, table, embedder, cfg, vector_index_min_rows)
        await store._ensure_base_indexes(max_rows=OPEN_INDEX_MAX_ROWS)
        return store

    @staticmethod
    async def _check_embedder(table, name: str, dim: int, uri: str) -> None:
        existing = await table.schema()
        meta = existing.metadata or {}
        have_dim = int(meta.get(META_DIM, b"-1"))
        have_name = meta.get(META_EMBEDDER, b"?").decode()
        if have_dim == -1:
            # No metadata: infer from the vector column.
            have_dim = existing.field("vector").type.list_size if "vector" in existing.names else 0
        if have_dim != dim or (have_name not in ("?", name) and dim > 0):
            raise EmbedderMismatch(
                f"the memory store at {uri!r} was built with embedder {have_name!r} (dim {have_dim}), "
                f"but memchat is configured with {name!r} (dim {dim}). Vectors from different "
                "embedders are not comparable. Configure the original embedder again, or point "
                "memchat at a new store location; re-embedding an existing store into a new "
                "one is not supported yet (planned as a separate command)."
            )

    async def close(self) -> None:
        for obj in (self._table, self._db):
            try:
                obj.close()
            except Exception:  # noqa: BLE001
                pass

    @property
    def table(self):
        """The underlying LanceDB AsyncTable (benchmarks / maintenance tooling only)."""
        return self._table

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    # ------------------------------------------------------------------ helpers

    async def _embed(self, texts: Sequence[str]) -> np.ndarray | None:
        if self.dim == 0:
            return None
        vecs = np.asarray(await self._embedder.embed(list(texts)), dtype=np.float32)
        if vecs.shape != (len(texts), self.dim):
            raise ValueError(f"embedder returned shape {vecs.shape}, expected {(len(texts), self.dim)}")
        return vecs

    async def _embed_query(self, text: str) -> np.ndarray:
        vecs = await self._embed([text])
        assert vecs is not None
        return vecs[0]

    def _to_arrow(self, memories: Sequence[Memory], vectors: np.ndarray | None) -> pa.Table:
        cols: dict[str, Any] = {
            "pk": [F.pk_value(m.org_id, m.namespace, m.id) for m in memories],
            "id": [m.id for m in memories],
            "tenant": [F.tenant_key(m.org_id, m.namespace) for m in memories],
            "org_id": [m.org_id for m in memories],
            "namespace": [m.namespace for m in memories],
            "content": [F.check_text(m.content, "content") for m in memories],
            "search_text": [search_text(m.content, m.created_at) for m in memories],
            "created_at": [m.created_at for m in memories],
            "updated_at": [m.updated_at for m in memories],
            "source": [m.source for m in memories],
            "source_thread_id": [m.source_thread_id for m in memories],
            "source_turn_id": [m.source_turn_id for m in memories],
            "entities": [[F.check_text(e, "entity") for e in m.entities] for m in memories],
            "state": [m.state for m in memories],
            "superseded_by": [m.superseded_by for m in memories],
        }
        schema = build_schema(self._embedder.name, self.dim)
        arrays = [pa.array(cols[f.name], type=f.type) for f in schema if f.name != "vector"]
        if self.dim > 0:
            assert vectors is not None
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, self.dim))
        return pa.Table.from_arrays(arrays, schema=schema)

    async def _fetch(self, where: str, limit: int | None = None) -> list[Memory]:
        q = self._table.query().where(where).select(MEMORY_COLUMNS)
        if limit is not None:
            q = q.limit(limit)
        return [_row_to_memory(r) for r in (await q.to_arrow()).to_pylist()]

    # ------------------------------------------------------------------ writes

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
        vectors = await self._embed([m.content for m in memories])
        data = self._to_arrow(memories, vectors)
        explicit = any(it.id is not None for it in items)
        if not explicit:
            await _retry(lambda: self._table.add(data), what="add")
            return memories
        res = await _retry(
            lambda: self._table.merge_insert("pk").when_not_matched_insert_all().execute(data),
            what="add(merge_insert)",
        )
        if res.num_inserted_rows == len(memories):
            return memories
        stored = {m.id: m for m in await self._fetch(F.ids_filter(org_id, namespace, [m.id for m in memories]))}
        return [stored.get(m.id, m) for m in memories]

    async def delete(self, org_id: str, namespace: str, memory_id: str) -> bool:
        where = F.id_filter(org_id, namespace, memory_id)
        res = await _retry(lambda: self._table.delete(where), what="delete")
        return res.num_deleted_rows > 0

    async def delete_namespace(self, org_id: str, namespace: str) -> int:
        where = F.tenant_filter(org_id, namespace)
        res = await _retry(lambda: self._table.delete(where), what="delete_namespace")
        return int(res.num_deleted_rows)

    async def supersede(self, org_id: str, namespace: str, old_id: str, new_id: str) -> bool:
        """Mark ``old_id`` as superseded by ``new_id`` (both in this tenant). Returns False
        if ``old_id`` does not exist here; raises ``KeyError`` if ``new_id`` does not."""
        if old_id == new_id:
            raise ValueError("a memory cannot supersede itself")
        if await self.get(org_id, namespace, new_id) is None:
            raise KeyError(new_id)
        where = F.id_filter(org_id, namespace, old_id)
        updates = {
            "state": F.state_literal("superseded"),
            "superseded_by": F.sql_str(new_id),
            "updated_at": F.sql_timestamp(utcnow()),
        }
        res = await _retry(lambda: self._table.update(updates_sql=updates, where=where), what="supersede")
        return res.rows_updated > 0

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
        cur = await self.get(org_id, namespace, memory_id)
        if cur is None:
            return None
        changes: dict[str, Any] = {"updated_at": max(utcnow(), cur.created_at)}
        if content is not None:
            changes["content"] = content
        if entities is not None:
            changes["entities"] = list(entities)
        import msgspec

        new = msgspec.structs.replace(cur, **changes)
        if content is not None and content != cur.content:
            vectors = await self._embed([new.content])
        elif self.dim > 0:
            rows = await (
                self._table.query().where(F.id_filter(org_id, namespace, memory_id)).select(["vector"]).limit(1).to_arrow()
            )
            if rows.num_rows == 0:
                return None
            vectors = np.asarray(rows["vector"].to_pylist(), dtype=np.float32).reshape(1, self.dim)
        else:
            vectors = None
        data = self._to_arrow([new], vectors)
        res = await _retry(
            lambda: self._table.merge_insert("pk").when_matched_update_all().execute(data),
            what="update",
        )
        return new if res.num_updated_rows > 0 else None

    # ------------------------------------------------------------------ reads

    async def get(self, org_id: str, namespace: str, memory_id: str) -> Memory | None:
        rows = await self._fetch(F.id_filter(org_id, namespace, memory_id), limit=1)
        return rows[0] if rows else None

    async def count(
        self,
        org_id: str,
        namespace: str,
        *,
        source: str | None = None,
        entity: str | None = None,
        include_superseded: bool = False,
    ) -> int:
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

        ``before=(created_at, id)`` of the last item of the previous page gives keyset
        paging that neither repeats nor skips items while new ones are being added
        (``offset`` paging shifts when newer memories arrive)."""
        from lancedb.query import ColumnOrdering

        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        where = F.build(org_id, namespace, include_superseded=include_superseded, source=source, entity=entity)
        page_where = F.and_(where, F.cursor_filter(*before)) if before is not None else where
        total_task = asyncio.ensure_future(self._table.count_rows(where))
        if limit == 0:
            return [], int(await total_task)
        q = (
            self._table.query()
            .where(page_where)
            .select(MEMORY_COLUMNS)
            .order_by(
                [ColumnOrdering(column_name="created_at", ascending=False), ColumnOrdering(column_name="id", ascending=False)]
            )
            .limit(limit)
        )
        if offset:
            q = q.offset(offset)
        try:
            tbl = await q.to_arrow()
        finally:
            total = int(await total_task)
        return [_row_to_memory(r) for r in tbl.to_pylist()], total

    async def iter_all(
        self, org_id: str, namespace: str, batch: int = 1000, *, include_superseded: bool = True
    ) -> AsyncIterator[list[Memory]]:
        """All memories of a tenant, oldest first, in lists of up to ``batch`` (keyset
        paging, so a concurrent add neither repeats nor skips existing rows)."""
        from lancedb.query import ColumnOrdering

        base = F.build(org_id, namespace, include_superseded=include_superseded)
        cursor: tuple[datetime, str] | None = None
        while True:
            where = base if cursor is None else F.and_(base, F.cursor_filter(*cursor, descending=False))
            q = (
                self._table.query()
                .where(where)
                .select(MEMORY_COLUMNS)
                .order_by(
                    [ColumnOrdering(column_name="created_at", ascending=True), ColumnOrdering(column_name="id", ascending=True)]
                )
                .limit(batch)
            )
            page = [_row_to_memory(r) for r in (await q.to_arrow()).to_pylist()]
            if not page:
                return
            yield page
            if len(page) < batch:
                return
            cursor = (page[-1].created_at, page[-1].id)

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
        where = F.build(org_id, namespace, include_superseded=include_superseded)
        hits = await run_search(
            self._table,
            cfg,
            query,
            where,
            limit,
            MEMORY_COLUMNS,
            self._embed_query if self.dim > 0 else None,
        )
        out = [ScoredMemory(memory=_row_to_memory(r), score=s) for r, s in hits]
        if min_score is not None:
            out = [h for h in out if h.score >= min_score]
        return out

    # ------------------------------------------------------------------ maintenance

    async def maintain(self, *, cleanup_older_than: timedelta | None = None) -> dict[str, Any]:
        """Create missing indexes and fold new rows into them. Background task only.

        * BTree on ``tenant`` and ``pk`` (every query filters on the tenant; get/update/
          delete/merge-insert look rows up by pk = tenant + id),
        * Lance native FTS (BM25) on the configured FTS column (``search_text``),
        * a vector index only once ``vector_index_min_rows`` is reached (``None``: never --
          per-tenant flat search is exact and fast, see docs/benchmarks.md),
        * ``optimize()``: compaction, index updates for new rows, old-version cleanup
          (``cleanup_older_than``, LanceDB's default of 7 days when None).

        Safe to run while reads and writes happen (Lance commits are snapshot-isolated; index
        builds and compaction commit new versions that readers pick up atomically) and from
        several replicas at once (conflicting commits are retried or skipped).
        """
        async with self._maintain_lock:
            report = await self._ensure_base_indexes(max_rows=None)
            try:
                kwargs = {} if cleanup_older_than is None else {"cleanup_older_than": cleanup_older_than}
                stats = await _retry(lambda: self._table.optimize(**kwargs), what="optimize", attempts=3)
                report["optimize"] = str(stats)
            except Exception as e:  # noqa: BLE001
                if not is_conflict(e):
                    raise
                report["optimize"] = f"skipped: {e}"
            return report

    def _wanted_indexes(self, rows: int) -> list[tuple[str, Any]]:
        from lancedb.index import FTS, BTree, IvfPq

        wanted: list[tuple[str, Any]] = [
            ("tenant", BTree()),
            ("pk", BTree()),
            (self.search_config.fts_column, FTS(with_position=False)),
        ]
        if self.dim > 0 and self.vector_index_min_rows is not None and rows >= max(self.vector_index_min_rows, 256):
            wanted.append(("vector", IvfPq(distance_type="cosine")))
        return wanted

    async def _ensure_base_indexes(self, *, max_rows: int | None) -> dict[str, Any]:
        report: dict[str, Any] = {"created": [], "skipped": []}
        rows = await self._table.count_rows()
        report["rows"] = rows
        if max_rows is not None and rows > max_rows:
            return report
        existing = {tuple(ix.columns) for ix in await self._table.list_indices()}
        for column, config in self._wanted_indexes(rows):
            if (column,) in existing:
                continue
            try:
                await _retry(
                    lambda c=column, cfg=config: self._table.create_index(c, config=cfg, replace=False),
                    what=f"create_index({column})",
                )
                report["created"].append(column)
            except Exception as e:  # noqa: BLE001
                # Another replica created it first, or the build conflicted: next run.
                if "already exists" in str(e).lower() or is_conflict(e):
                    report["skipped"].append(column)
                else:
                    raise
        return report

    async def stats(self) -> dict[str, Any]:
        idx = await self._table.list_indices()
        return {
            "rows": await self._table.count_rows(),
            "indices": {ix.name: {"type": ix.index_type, "columns": list(ix.columns)} for ix in idx},
            "embedder": self._embedder.name,
            "dim": self.dim,
            "search": {"mode": self.search_config.mode},
        }
