"""`app.storage.connection`: the connection's LanceDB caches stay within the configured bound while a store
keeps writing (each write is a new table version, whose metadata LanceDB caches)."""

from __future__ import annotations

from pathlib import Path

import lancedb
import pyarrow as pa

from app.storage.connection import cache_session, connect

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("text", pa.string())])


async def _write_and_read(tmp_path: Path, session: lancedb.Session, versions: int) -> int:
    db = await connect(str(tmp_path), session=session)
    table = await db.create_table("t", schema=SCHEMA)
    for i in range(versions):
        await table.add(pa.table({"id": [i], "text": [f"row {i}"]}, schema=SCHEMA))
        await table.query().where(f"id = {i}").to_arrow()
    size = session.size_bytes
    db.close()
    return size


async def test_the_metadata_cache_is_bounded(tmp_path: Path) -> None:
    unbounded = await _write_and_read(tmp_path / "a", lancedb.Session(), 150)
    bounded = await _write_and_read(tmp_path / "b", cache_session(metadata_cache_mb=1, index_cache_mb=1), 150)
    assert unbounded > 2 << 20  # LanceDB's default keeps every version's metadata ...
    assert bounded <= 2 << 20   # ... the bound keeps at most 1 MiB of metadata and 1 MiB of indexes
