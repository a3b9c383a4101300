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


async def connect(uri: str, storage_options: dict[str, str] | None = None, *,
                  read_consistency_interval: timedelta | None = READ_CONSISTENCY) -> AsyncConnection:
    """Open the store at ``uri`` (a directory or an object-store URI such as ``s3://bucket/prefix``);
    ``storage_options`` (credentials, region, endpoint) go to LanceDB untouched."""
    return await lancedb.connect_async(str(uri), storage_options=dict(storage_options) if storage_options else None,
                                       read_consistency_interval=read_consistency_interval)
