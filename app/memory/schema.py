"""Layout of the ``memories`` table and the helpers that read and write it.

One row per memory. Columns:

``pk``                unenforced primary key = `filters.pk_value` (tenant key + id); the
                      merge-insert key and the BTree lookup for get/update/delete
``id``                the memory id (unique within its tenant; callers may choose it)
``write_id``          uuid of the write that produced this row version (compare-and-swap
                      for updates; tells apart duplicate copies left by racing writers)
``tenant``            `filters.tenant_key(org_id, namespace)`; BTree; every query filters on it
``org_id``, ``namespace``, ``content``, ``created_at``, ``updated_at`` (timestamp[us, UTC]),
``source``, ``source_thread_id``, ``source_turn_id``, ``entities`` (list<string>),
``state``, ``superseded_by``  -- the `Memory` fields, for filtering/ordering
``search_text``       FTS column: content + the date in words ("14 March 2023"); with thread
                      context (`app.memory.context`) content twice + date + the previous memory
``payload``           msgspec-JSON of the `Memory`: what reads select (one column per row)
``vector``            fixed_size_list<float32>[dim]; absent when the embedder's dim is 0

Schema metadata: ``memchat.embedder``, ``memchat.embedding_dim``, ``memchat.schema_version``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from app.memory.models import Memory, new_id
from app.storage import filters as F
from app.storage.tables import PK_META, TIMESTAMP
from app.times import as_utc

TABLE = "memories"
SCHEMA_VERSION = "1"
META_EMBEDDER = b"memchat.embedder"
META_DIM = b"memchat.embedding_dim"
META_SCHEMA = b"memchat.schema_version"

# Reads select only ``payload`` (the msgspec-JSON of the Memory): materialising a dozen
# columns for scattered rows costs one random read per column per row, which at 1M rows was
# most of a search's latency (docs/benchmarks.md). The typed columns exist for filtering,
# ordering and indexing; every write goes through MemoryStore, which keeps both in step.
MEMORY_COLUMNS = ["payload"]
# Ordered scans must also project their sort keys (Lance 0.40 fails to plan an indexed,
# ordered scan that late-materialises columns: "TakeExec requires ... '_rowid'").
ORDERED_COLUMNS = ["payload", "created_at", "id"]

_TS = TIMESTAMP


class EmbedderMismatch(RuntimeError):
    """The store was built with another embedder (different dimension or model)."""


def build_schema(embedder_name: str, dim: int) -> pa.Schema:
    fields = [
        # LanceDB "unenforced primary key": merge_insert on it detects concurrent inserts of
        # the same key (commit-time conflict -> retried) instead of duplicating the row.
        pa.field("pk", pa.string(), nullable=False, metadata={PK_META: b"1"}),
        pa.field("id", pa.string(), nullable=False),
        # One uuid per write (add/update call): tells apart the copies of a pk that racing
        # writers can still produce (see `maintenance.resolve_duplicates`).
        pa.field("write_id", pa.string(), nullable=False),
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
        pa.field("payload", pa.string(), nullable=False),
    ]
    if dim > 0:
        fields.append(pa.field("vector", pa.list_(pa.float32(), dim)))
    meta = {META_EMBEDDER: embedder_name.encode(), META_DIM: str(dim).encode(), META_SCHEMA: SCHEMA_VERSION.encode()}
    return pa.schema(fields, metadata=meta)


def search_text(content: str, created_at: datetime, context: str = "") -> str:
    """The FTS document: content plus the date in words ("14 March 2023"), so "where did I
    travel in March 2023" can match memories by when they were said, plus ``context`` (the
    previous memory of the same thread, see `app.memory.context`) when given. With a context the
    content is written twice: its own words then weigh twice its neighbour's in BM25 (the memory
    that says it ranks above the one next to it; LoCoMo full-text MRR@10 46 -> 53)."""
    d = as_utc(created_at)
    doc = f"{content}\n{d.day} {d:%B %Y}"
    return f"{doc}\n{content}\n{context}" if context else doc


_DECODER = msgspec.json.Decoder(Memory)
_ENCODER = msgspec.json.Encoder()


def row_to_memory(r: dict[str, Any]) -> Memory:
    return _DECODER.decode(r["payload"])


def decode_hit_row(r: dict[str, Any]) -> dict[str, Any]:
    m = row_to_memory(r)
    return {"id": m.id, "state": m.state, "memory": m}


def to_arrow(memories: Sequence[Memory], vectors: np.ndarray | None, embedder_name: str, dim: int,
             write_id: str | None = None, *, contexts: Sequence[str] | None = None,
             search_texts: Sequence[str] | None = None) -> pa.Table:
    """Rows for ``memories`` (vectors in the same order) as an Arrow table of the schema.
    ``contexts``: per memory, the FTS context (`search_text`); ``search_texts``: the FTS documents
    as they are (a rewrite that keeps the content keeps its document)."""
    write_id = write_id or new_id()
    if search_texts is None:
        ctx = contexts if contexts is not None else [""] * len(memories)
        search_texts = [search_text(m.content, m.created_at, c) for m, c in zip(memories, ctx, strict=True)]
    cols: dict[str, Any] = {
        "pk": [F.pk_value(m.org_id, m.namespace, m.id) for m in memories],
        "id": [m.id for m in memories],
        "write_id": [write_id] * len(memories),
        "tenant": [F.tenant_key(m.org_id, m.namespace) for m in memories],
        "org_id": [m.org_id for m in memories],
        "namespace": [m.namespace for m in memories],
        "content": [F.check_text(m.content, "content") for m in memories],
        "search_text": list(search_texts),
        "created_at": [m.created_at for m in memories],
        "updated_at": [m.updated_at for m in memories],
        "source": [m.source for m in memories],
        "source_thread_id": [m.source_thread_id for m in memories],
        "source_turn_id": [m.source_turn_id for m in memories],
        "entities": [[F.check_text(e, "entity") for e in m.entities] for m in memories],
        "state": [m.state for m in memories],
        "superseded_by": [m.superseded_by for m in memories],
        "payload": [_ENCODER.encode(m).decode() for m in memories],
    }
    schema = build_schema(embedder_name, dim)
    arrays = [pa.array(cols[f.name], type=f.type) for f in schema if f.name != "vector"]
    if dim > 0:
        assert vectors is not None
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
        arrays.append(pa.FixedSizeListArray.from_arrays(flat, dim))
    return pa.Table.from_arrays(arrays, schema=schema)


def check_embedder(existing: pa.Schema, name: str, dim: int, uri: str) -> None:
    """Raise `EmbedderMismatch` unless the table was built for this embedder."""
    meta = existing.metadata or {}
    have_dim = int(meta.get(META_DIM, b"-1"))
    have_name = meta.get(META_EMBEDDER, b"?").decode()
    if have_dim == -1:  # no metadata: infer from the vector column
        have_dim = existing.field("vector").type.list_size if "vector" in existing.names else 0
    if have_dim != dim or (have_name not in ("?", name) and dim > 0):
        raise EmbedderMismatch(
            f"the memory store at {uri!r} was built with embedder {have_name!r} (dim {have_dim}), "
            f"but memchat is configured with {name!r} (dim {dim}). Vectors from different "
            "embedders are not comparable. Configure the original embedder again, or point "
            "memchat at a new store location; re-embedding an existing store into a new "
            "one is not supported yet (planned as a separate command)."
        )
