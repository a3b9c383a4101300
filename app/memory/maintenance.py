"""Index maintenance and duplicate repair for the memories table (background work only)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from lancedb.table import AsyncTable

from app.memory.models import Memory
from app.memory.schema import row_to_memory
from app.storage import filters as F
from app.storage import tables

log = logging.getLogger("memchat.memory")

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


def wanted_indexes(fts_column: str, dim: int, rows: int, vector_index_min_rows: int | None) -> list[tuple[str, Any]]:
    """BTree on ``tenant`` and ``pk``; native FTS on the search column; a vector index only
    past ``vector_index_min_rows`` (None = never; see docs/benchmarks.md)."""
    from lancedb.index import FTS, BTree, IvfPq

    wanted: list[tuple[str, Any]] = [
        ("tenant", BTree()),
        ("pk", BTree()),
        (fts_column, FTS(with_position=False)),
    ]
    if dim > 0 and vector_index_min_rows is not None and rows >= max(vector_index_min_rows, 256):
        wanted.append(("vector", IvfPq(distance_type="cosine")))
    return wanted


async def ensure_indexes(
    table: AsyncTable, fts_column: str, dim: int, vector_index_min_rows: int | None, *, max_rows: int | None
) -> dict[str, Any]:
    """Create the missing wanted indexes (none if the table has more than ``max_rows``)."""
    rows = await table.count_rows()
    if max_rows is not None and rows > max_rows:
        return {"created": [], "skipped": [], "rows": rows}
    wanted = wanted_indexes(fts_column, dim, rows, vector_index_min_rows)
    return {**await tables.ensure_indexes(table, wanted, what="memories"), "rows": rows}


async def maintain(table: AsyncTable, fts_column: str, dim: int, vector_index_min_rows: int | None, *,
                   cleanup_older_than: timedelta | None = None) -> dict[str, Any]:
    """Create missing indexes and fold new rows into them:

    * BTree on ``tenant`` and ``pk`` (every query filters on the tenant; get/update/
      delete/merge-insert look rows up by pk = tenant + id),
    * Lance native FTS (BM25) on the FTS column (``search_text``),
    * a vector index only once ``vector_index_min_rows`` is reached (``None``: never --
      per-tenant flat search is exact and fast, see docs/benchmarks.md),
    * ``optimize()``: compaction, index updates for new rows, old-version cleanup
      (``cleanup_older_than``, LanceDB's default of 7 days when None).

    Safe to run while reads and writes happen (Lance commits are snapshot-isolated; index
    builds and compaction commit new versions that readers pick up atomically) and from
    several replicas at once (conflicting commits are retried or skipped).
    """
    report = await ensure_indexes(table, fts_column, dim, vector_index_min_rows, max_rows=None)
    report["optimize"] = await tables.optimize(table, what="memories", cleanup_older_than=cleanup_older_than, attempts=3)
    return report


async def table_stats(table: AsyncTable) -> dict[str, Any]:
    """Row count and indexes of the memories table."""
    indices = await table.list_indices()
    return {"rows": await table.count_rows(),
            "indices": {ix.name: {"type": ix.index_type, "columns": list(ix.columns)} for ix in indices}}


async def resolve_duplicates(table: AsyncTable, org_id: str, namespace: str, ids: Sequence[str]) -> dict[str, Memory]:
    """Return the stored memory for each id; where an id has several rows, delete all but
    the earliest (created_at, then write_id) -- the same choice in every process."""
    out: dict[str, Memory] = {}
    losers: list[tuple[str, str]] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        q = table.query().where(F.ids_filter(org_id, namespace, chunk)).select(["id", "created_at", "write_id", "payload"])
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in (await q.to_arrow()).to_pylist():
            groups.setdefault(r["id"], []).append(r)
        for mid, rows in groups.items():
            rows.sort(key=lambda r: (r["created_at"], r["write_id"]))
            out[mid] = row_to_memory(rows[0])
            losers += [(mid, r["write_id"]) for r in rows[1:] if r["write_id"] != rows[0]["write_id"]]
    if losers:
        log.warning("removing %d duplicate memory rows left by concurrent writers", len(losers))
        where = F.copies_filter(org_id, namespace, losers)
        await tables.delete_where(table, where, what="memories.dedupe")
    return out


async def repair_duplicates(table: AsyncTable) -> int:
    """Scan the whole table for ids stored more than once in a tenant and keep one copy of
    each (reads the pk column of every row: an operator tool, not for every maintain())."""
    tbl = await table.query().select(["pk", "tenant", "id"]).to_arrow()
    seen: set[str] = set()
    dup: dict[str, set[str]] = {}
    for pk, tenant, mid in zip(tbl["pk"].to_pylist(), tbl["tenant"].to_pylist(), tbl["id"].to_pylist()):
        if pk in seen:
            dup.setdefault(tenant, set()).add(mid)
        seen.add(pk)
    removed = 0
    for tenant, ids in dup.items():
        org, ns = F.split_tenant_key(tenant)
        before = await table.count_rows(F.ids_filter(org, ns, sorted(ids)))
        await resolve_duplicates(table, org, ns, sorted(ids))
        removed += before - len(ids)
    return removed
