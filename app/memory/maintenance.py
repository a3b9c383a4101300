"""Index maintenance and duplicate repair for the memories table (background work only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.memory import filters as F
from app.memory.models import Memory
from app.memory.schema import is_conflict, log, retry, row_to_memory


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
    table, fts_column: str, dim: int, vector_index_min_rows: int | None, *, max_rows: int | None
) -> dict[str, Any]:
    """Create the missing wanted indexes (none if the table has more than ``max_rows``)."""
    report: dict[str, Any] = {"created": [], "skipped": []}
    rows = await table.count_rows()
    report["rows"] = rows
    if max_rows is not None and rows > max_rows:
        return report
    existing = {tuple(ix.columns) for ix in await table.list_indices()}
    for column, config in wanted_indexes(fts_column, dim, rows, vector_index_min_rows):
        if (column,) in existing:
            continue
        try:
            await retry(
                lambda c=column, cfg=config: table.create_index(c, config=cfg, replace=False),
                what=f"create_index({column})",
            )
            report["created"].append(column)
        except Exception as e:
            # Another replica created it first, or the build conflicted: next run.
            if "already exists" in str(e).lower() or is_conflict(e):
                report["skipped"].append(column)
            else:
                raise
    return report


async def optimize(table, cleanup_older_than=None) -> str:
    try:
        kwargs = {} if cleanup_older_than is None else {"cleanup_older_than": cleanup_older_than}
        return str(await retry(lambda: table.optimize(**kwargs), what="optimize", attempts=3))
    except Exception as e:
        if not is_conflict(e):
            raise
        return f"skipped: {e}"


async def resolve_duplicates(table, org_id: str, namespace: str, ids: Sequence[str]) -> dict[str, Memory]:
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
        await retry(lambda: table.delete(where), what="dedupe")
    return out


async def repair_duplicates(table) -> int:
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
