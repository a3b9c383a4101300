"""The LanceDB connection: one per process, made from the store settings, shared by every table."""

from __future__ import annotations

from datetime import timedelta

import lancedb
from lancedb.db import AsyncConnection

# How often a reader checks for other processes' commits. Zero: on every read, so a turn another worker
# flushed, a commit claim another replica took or a memory it wrote is seen at once. On a local directory
# a check is a cheap stat; on an object store it is a round trip per read.
READ_CONSISTENCY = timedelta(0)


def is_local_uri(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def cache_session(metadata_cache_mb: int, index_cache_mb: int) -> lancedb.Session:
    """LanceDB's caches for one connection, bounded. ``session.size_bytes`` is what they hold now.

    The metadata cache keeps manifests and file metadata of every table version it has read; a server that
    writes turns and memories all day adds versions all day, so with LanceDB's default bound (1 GiB) the
    process grows by ~0.2 MiB per write until it gets there (measured: +212 MiB RSS after 800 memory writes
    and searches; see scripts/bench_store_cache.py and docs/benchmarks.md).
    """
    return lancedb.Session(metadata_cache_size_bytes=metadata_cache_mb << 20, index_cache_size_bytes=index_cache_mb << 20)


async def connect(uri: str, storage_options: dict[str, str] | None = None, *,
                  read_consistency_interval: timedelta | None = READ_CONSISTENCY,
                  session: lancedb.Session | None = None) -> AsyncConnection:
    """Open the store at ``uri`` (a directory or an object-store URI such as ``s3://bucket/prefix``);
    ``storage_options`` (credentials, region, endpoint) go to LanceDB untouched; ``session`` bounds its caches
    (`cache_session`; LanceDB's defaults when None)."""
    return await lancedb.connect_async(str(uri), storage_options=dict(storage_options) if storage_options else None,
                                       read_consistency_interval=read_consistency_interval, session=session)
