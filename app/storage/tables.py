"""The one table helper every LanceDB table wrapper uses.

Open-or-create with a schema, retry on commit conflicts, delete a tenant's rows, ensure indexes,
compact. LanceDB 0.40 raises plain ``ValueError`` / ``RuntimeError`` for commit conflicts (it has no
exception type for them), so the error text is read in exactly one place, `is_conflict`; opening a
table asks for the table names instead of parsing a "not found" message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import pyarrow as pa
from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from app.storage import filters as F

log = logging.getLogger("memchat.storage")

T = TypeVar("T")
TIMESTAMP = pa.timestamp("us", tz="UTC")
# Field metadata marking LanceDB's unenforced primary key: merge-insert on it detects concurrent
# inserts of the same key at commit time (the loser retries) instead of duplicating the row.
PK_META = b"lance-schema:unenforced-primary-key:position"
SMALL_WRITES_CLEANUP = timedelta(minutes=10)
_CONFLICT_WORDS = ("commit conflict", "conflict", "retryable", "too many concurrent writers", "was concurrently")


def is_conflict(exc: BaseException) -> bool:
    """A Lance optimistic-commit conflict: the operation may simply be run again."""
    message = str(exc).lower()
    return any(word in message for word in _CONFLICT_WORDS)


def is_already_exists(exc: BaseException) -> bool:
    return "already exists" in str(exc).lower()


async def retry(op: Callable[[], Awaitable[T]], *, what: str, attempts: int = 8, base: float = 0.05) -> T:
    """Run ``op()`` (a coroutine factory), retrying on commit conflicts with jittered exponential
    backoff; other errors propagate at once."""
    for attempt in range(attempts):
        try:
            return await op()
        except Exception as exc:
            if attempt == attempts - 1 or not is_conflict(exc):
                raise
            delay = base * (2**attempt) * (0.5 + random.random())
            log.info("commit conflict in %s (attempt %d): %s; retrying in %.2fs", what, attempt + 1, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def table_exists(db: AsyncConnection, name: str) -> bool:
    token: str | None = None
    while True:
        page = await db.list_tables(page_token=token)
        if name in page.tables:
            return True
        token = page.page_token
        if not token:
            return False


async def open_or_create(db: AsyncConnection, name: str, schema: pa.Schema, *, attempts: int = 12,
                         pause: float = 0.05) -> AsyncTable:
    """Open table ``name`` (whatever its schema: migrations are the caller's), creating it with ``schema``
    when it does not exist.

    Several processes may open a fresh store at the same moment (the workers of one server, replicas): a
    table another process is creating can be listed before it can be opened ("not found"), and two
    creations conflict. Both states pass within milliseconds, so the whole step is tried again, briefly,
    until the table opens; the last attempt's error propagates."""
    for attempt in range(attempts):
        try:
            if await table_exists(db, name):
                return await db.open_table(name)
            return await db.create_table(name, schema=schema, exist_ok=True)
        except (ValueError, RuntimeError) as exc:  # LanceDB's types for both states (and for real failures)
            if attempt == attempts - 1:
                raise
            delay = pause * (1 + attempt) * (0.5 + random.random())
            log.info("opening table %s raced another process (attempt %d): %s; again in %.2fs",
                     name, attempt + 1, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def add_missing_columns(table: AsyncTable, schema: pa.Schema, *, what: str) -> list[str]:
    """Start-up migration: add every nullable field of ``schema`` the table lacks, all null (a metadata-only
    change). Another process adding them at the same moment is fine. Returns the names added here."""
    have = set((await table.schema()).names)
    missing = [f for f in schema if f.name not in have and f.nullable]
    if not missing:
        return []
    try:
        await retry(lambda: table.add_columns(missing), what=f"{what}.migrate")
    except Exception:
        if any(f.name not in (await table.schema()).names for f in missing):
            raise
        return []  # another process added them first
    log.warning("%s: added column(s) %s (one-time migration of a store made by an earlier release)",
                what, ", ".join(f.name for f in missing))
    return [f.name for f in missing]


async def delete_where(table: AsyncTable, where: str, *, what: str) -> int:
    """Delete the rows matching ``where``; returns how many went."""
    result = await retry(lambda: table.delete(where), what=f"{what}.delete")
    return int(getattr(result, "num_deleted_rows", 0) or 0)


async def delete_tenant(table: AsyncTable, org_id: str, namespace: str, *, what: str) -> int:
    """Delete every row of a table with a ``tenant`` column for this (org, namespace)."""
    return await delete_where(table, F.tenant_filter(org_id, namespace), what=what)


async def ensure_indexes(table: AsyncTable, wanted: Iterable[tuple[str, Any]], *, what: str) -> dict[str, list[str]]:
    """Create each ``(column, index config)`` that has no index yet. An index another process built first,
    or a build that conflicted, is skipped (the next maintenance run looks again)."""
    report: dict[str, list[str]] = {"created": [], "skipped": []}
    existing = {tuple(ix.columns) for ix in await table.list_indices()}
    for column, config in wanted:
        if (column,) in existing:
            continue
        try:
            await retry(lambda c=column, cfg=config: table.create_index(c, config=cfg, replace=False),
                        what=f"{what}.create_index({column})")
            report["created"].append(column)
        except Exception as exc:
            if not (is_already_exists(exc) or is_conflict(exc)):
                raise
            report["skipped"].append(column)
    return report


async def ensure_btree(table: AsyncTable, columns: Iterable[str], *, what: str) -> dict[str, list[str]]:
    """BTree indexes on lookup columns, once the table has rows (an index on an empty table is useless)."""
    from lancedb.index import BTree

    if await table.count_rows() == 0:
        return {"created": [], "skipped": []}
    return await ensure_indexes(table, [(c, BTree()) for c in columns], what=what)


async def optimize(table: AsyncTable, *, what: str, cleanup_older_than: timedelta | None = SMALL_WRITES_CLEANUP,
                   attempts: int = 8) -> str:
    """Compact, fold new rows into the indexes and drop old versions (``None``: LanceDB's default age).
    A conflict that outlasts the retries is reported, not raised: the next run tries again."""
    kwargs = {} if cleanup_older_than is None else {"cleanup_older_than": cleanup_older_than}
    try:
        return str(await retry(lambda: table.optimize(**kwargs), what=f"{what}.optimize", attempts=attempts))
    except Exception as exc:
        if not is_conflict(exc):
            raise
        return f"skipped: {exc}"
