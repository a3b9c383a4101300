"""`Services.sample_gauges`: the vector cache's size and loads reach /metrics (a real VectorCache over a
LanceDB-shaped Arrow table; the scheduler and the rest of the services are stand-ins)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from app.memory.vector_cache import VectorCache
from app.obs.metrics import Metrics
from app.services import Services


async def test_vector_cache_size_and_loads_are_sampled() -> None:
    vectors = np.eye(4, dtype=np.float32)
    table = pa.table({"id": ["a", "b", "c", "d"], "payload": ["a", "b", "c", "d"],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4)})

    async def load(org: str, namespace: str) -> pa.Table:
        return table

    cache, metrics = VectorCache(load), Metrics()
    fake = SimpleNamespace(metrics=metrics, store=SimpleNamespace(vectors=cache), store_cache=None,
                           scheduler=SimpleNamespace(pending=0, committing=0, committing_now=0))
    Services.sample_gauges(fake)  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("memchat_vector_cache_loads") == 0
    await cache.search("o", "n", vectors[0], 2)
    await cache.search("o", "other", vectors[1], 2)
    Services.sample_gauges(fake)  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("memchat_vector_cache_loads") == 2
    assert metrics.registry.get_sample_value("memchat_vector_cache_bytes") == cache.nbytes > 0


class Session:
    """A stand-in for `lancedb.Session`: counts reads of ``size_bytes``."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def size_bytes(self) -> int:
        self.reads += 1
        return 12345


async def test_the_store_cache_size_is_sampled_apart_from_the_scrape() -> None:
    metrics, session = Metrics(), Session()
    fake = SimpleNamespace(metrics=metrics, store=SimpleNamespace(vectors=SimpleNamespace(nbytes=0, loads=0)),
                           store_cache=session, scheduler=SimpleNamespace(pending=0, committing=0, committing_now=0))
    Services.sample_gauges(fake)  # type: ignore[arg-type]  # what a scrape does: never walks LanceDB's caches
    assert session.reads == 0
    await Services.sample_store_cache(fake)  # type: ignore[arg-type]
    assert session.reads == 1
    assert metrics.registry.get_sample_value("memchat_store_cache_bytes") == 12345
