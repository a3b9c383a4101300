"""Ordered reads of a tenant's memories, page by page (`MemoryStore.list` / `MemoryStore.iter_all`).

Both order by (``created_at``, ``id``) and page with a keyset cursor where they can, so memories added
meanwhile neither repeat nor skip items (``offset`` paging shifts when newer memories arrive).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from app.memory.models import Memory
from app.memory.schema import ORDERED_COLUMNS, row_to_memory
from app.storage import filters as F


def _ordered(table: Any, where: str, *, ascending: bool, limit: int) -> Any:
    from lancedb.query import ColumnOrdering

    return (
        table.query()
        .where(where)
        .select(ORDERED_COLUMNS)
        .order_by([ColumnOrdering(column_name="created_at", ascending=ascending),
                   ColumnOrdering(column_name="id", ascending=ascending)])
        .limit(limit)
    )


async def newest_first(table: Any, where: str, *, limit: int, offset: int,
                       before: tuple[datetime, str] | None) -> tuple[list[Memory], int]:
    """One page, newest first (``created_at DESC, id DESC``), and the total matching ``where``.
    ``before=(created_at, id)`` of the previous page's last item continues after it."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must be >= 0")
    page_where = F.and_(where, F.cursor_filter(*before)) if before is not None else where
    total_task = asyncio.ensure_future(table.count_rows(where))
    if limit == 0:
        return [], int(await total_task)
    query = _ordered(table, page_where, ascending=False, limit=limit)
    if offset:
        query = query.offset(offset)
    try:
        rows = await query.to_arrow()
    finally:
        total = int(await total_task)
    return [row_to_memory(r) for r in rows.to_pylist()], total


async def oldest_first(table: Any, where: str, batch: int) -> AsyncIterator[list[Memory]]:
    """Everything matching ``where``, oldest first, in lists of up to ``batch``."""
    cursor: tuple[datetime, str] | None = None
    while True:
        page_where = where if cursor is None else F.and_(where, F.cursor_filter(*cursor, descending=False))
        page = [row_to_memory(r) for r in (await _ordered(table, page_where, ascending=True, limit=batch)
                                           .to_arrow()).to_pylist()]
        if not page:
            return
        yield page
        if len(page) < batch:
            return
        cursor = (page[-1].created_at, page[-1].id)
