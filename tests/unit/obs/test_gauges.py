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
