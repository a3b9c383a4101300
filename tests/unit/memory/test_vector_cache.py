"""The dense leg from memory: same answers as LanceDB's flat search, and never stale after this process's
own writes."""

from __future__ import annotations

import anyio
import numpy as np
import pyarrow as pa
import pytest

from app.memory.models import NewMemory
from app.memory.search import SearchConfig
from app.memory.store import MemoryStore
from app.memory.vector_cache import VectorCache
from tests.unit.memory.test_store import HashEmbedder


def rows(vectors: np.ndarray, names: list[str]) -> pa.Table:
    return pa.table({"id": names,
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()),
                                                                  vectors.shape[1]),
                     "payload": names})


class Loader:
    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.calls = 0
        self.gate: anyio.Event | None = None

    async def __call__(self, org: str, namespace: str) -> pa.Table:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.table


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def test_top_k_is_the_exact_cosine_ranking() -> None:
    rng = np.random.default_rng(1)
    vectors = unit(rng, 500) * rng.uniform(0.5, 3, (500, 1)).astype(np.float32)   # norms must not matter
    cache = VectorCache(Loader(rows(vectors, [f"m{i}" for i in range(500)])))
    query = unit(rng, 1)[0]
    hits = await cache.search("o", "n", query * 7, 10)
    cosine = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ query
    expected = np.argsort(-cosine)[:10]
    assert [h[0]["payload"] for h in hits] == [f"m{i}" for i in expected]
    assert [h[1] for h in hits] == pytest.approx(cosine[expected].tolist(), abs=1e-5)
    assert len(await cache.search("o", "n", query, 10_000)) == 500


async def test_reload_after_ttl_and_after_invalidate_but_appends_apply_at_once() -> None:
    rng, clock = np.random.default_rng(2), Clock()
    loader = Loader(rows(unit(rng, 3), ["a", "b", "c"]))
    cache = VectorCache(loader, ttl=5, clock=clock)
    query = unit(rng, 1)[0]
    await cache.search("o", "n", query, 2)
    await cache.search("o", "n", query, 2)
    assert loader.calls == 1
    cache.appended("o", "n", ["new"], query.reshape(1, -1) * 2, ["new"])    # this process wrote a memory
    assert (await cache.search("o", "n", query, 1))[0][0]["payload"] == "new"
    assert loader.calls == 1
    cache.invalidate("o", "n")
    await cache.search("o", "n", query, 1)
    assert loader.calls == 2
    clock.now += 6
    await cache.search("o", "n", query, 1)
    assert loader.calls == 3
    await cache.search("o", "other", query, 1)                             # namespaces are separate
    assert loader.calls == 4


async def test_rows_a_load_already_saw_are_not_appended_twice() -> None:
    rng = np.random.default_rng(5)
    vectors = unit(rng, 3)
    cache = VectorCache(Loader(rows(vectors, ["a", "b", "c"])))
    await cache.search("o", "n", vectors[0], 3)
    cache.appended("o", "n", ["c", "d"], np.stack([vectors[2], unit(rng, 1)[0]]), ["c", "d"])
    hits = await cache.search("o", "n", vectors[2], 10)
    assert sorted(h[0]["payload"] for h in hits) == ["a", "b", "c", "d"]


async def test_a_load_racing_a_write_is_not_kept() -> None:
    rng = np.random.default_rng(3)
    loader = Loader(rows(unit(rng, 3), ["a", "b", "c"]))
    loader.gate = anyio.Event()
    cache = VectorCache(loader)
    results = []

    async def search() -> None:
        results.append(await cache.search("o", "n", unit(rng, 1)[0], 2))

    async with anyio.create_task_group() as group:
        group.start_soon(search)
        await anyio.wait_all_tasks_blocked()
        cache.appended("o", "n", ["w"], unit(rng, 1), ["written during the load"])
        loader.gate.set()
    assert results == [None]                     # the caller falls back to LanceDB ...
    loader.gate = None
    await cache.search("o", "n", unit(rng, 1)[0], 2)
    assert loader.calls == 2                     # ... and the next search loads again


async def test_memory_is_bounded() -> None:
    rng = np.random.default_rng(4)
    loader = Loader(rows(unit(rng, 100, dim=64), [f"m{i}" for i in range(100)]))
    one = 100 * 64 * 4
    cache = VectorCache(loader, max_bytes=int(one * 2.5) + 100 * 70 * 2)
    for ns in ("a", "b", "c"):
        assert await cache.search("o", ns, unit(rng, 1, 64)[0], 1) is not None
    assert cache.nbytes <= cache.max_bytes
    await cache.search("o", "a", unit(rng, 1, 64)[0], 1)                    # "a" was evicted first
    assert loader.calls == 4
    tiny = VectorCache(loader, max_bytes=1000)
    calls = loader.calls
    assert await tiny.search("o", "a", unit(rng, 1, 64)[0], 1) is None     # bigger than the budget
    assert await tiny.search("o", "a", unit(rng, 1, 64)[0], 1) is None
    assert tiny.nbytes == 0 and loader.calls == calls + 1                   # ... and not read again
    off = VectorCache(loader, max_bytes=0)
    assert await off.search("o", "a", unit(rng, 1, 64)[0], 1) is None


@pytest.fixture
async def stores(tmp_path):
    cached = await MemoryStore.open(str(tmp_path / "lancedb"), HashEmbedder())
    plain = await MemoryStore.open(str(tmp_path / "lancedb"), HashEmbedder())
    plain.vectors.max_bytes = 0
    yield cached, plain
    await cached.close()
    await plain.close()


async def ranking(store: MemoryStore, query: str) -> list[tuple[str, float]]:
    hits = await store.search("org", "ns", query, limit=5, config=SearchConfig(mode="dense"))
    return [(h.memory.content, round(h.score, 5)) for h in hits]


async def test_store_search_matches_lancedb_through_every_kind_of_write(stores) -> None:
    cached, plain = stores
    facts = ["my dog Rex loves the beach", "I live in Lisbon near the river", "my sister Ana is a nurse",
             "I started learning the piano", "Rex the dog hates the rain", "we moved to Porto in May"]
    added = await cached.add("org", "ns", [NewMemory(content=f) for f in facts])
    query = "what does my dog like"
    assert await ranking(cached, query) == await ranking(plain, query)
    assert cached.vectors.loads == 1

    await cached.add("org", "ns", [NewMemory(content="the dog Rex adores long beach walks")])  # appended
    await cached.add("org", "ns", [NewMemory(id="explicit-1", content="dog beach day with Rex")])  # merge path
    assert await ranking(cached, query) == await ranking(plain, query)
    assert "dog beach day with Rex" in [c for c, _ in await ranking(cached, query)]

    await cached.update("org", "ns", added[0].id, content="my cat Mia sleeps all day")         # re-embedded
    await cached.supersede("org", "ns", added[4].id, added[1].id)                               # not current
    await cached.delete("org", "ns", "explicit-1")
    got = await ranking(cached, query)
    assert got == await ranking(plain, query)
    contents = [c for c, _ in got]
    assert "my dog Rex loves the beach" not in contents and "Rex the dog hates the rain" not in contents
    assert "dog beach day with Rex" not in contents

    await cached.delete_namespace("org", "ns")
    assert await ranking(cached, query) == []


async def test_an_unchanged_table_is_not_read_again_after_the_ttl() -> None:
    rng, clock = np.random.default_rng(5), Clock()
    loader, table_version = Loader(rows(unit(rng, 3), ["a", "b", "c"])), [7]

    async def version() -> int:
        return table_version[0]

    cache = VectorCache(loader, ttl=5, clock=clock, version=version)
    query = unit(rng, 1)[0]
    await cache.search("o", "n", query, 1)
    clock.now += 6
    await cache.search("o", "n", query, 1)
    assert loader.calls == 1                      # same version: kept for another ttl
    clock.now += 4
    table_version[0] = 8                          # someone wrote, but the ttl has not run out again
    await cache.search("o", "n", query, 1)
    assert loader.calls == 1
    clock.now += 2
    await cache.search("o", "n", query, 1)
    assert loader.calls == 2                      # the table changed: read again
    cache.appended("o", "n", ["new"], query.reshape(1, -1), ["new"])        # this process wrote
    clock.now += 6
    await cache.search("o", "n", query, 1)
    assert loader.calls == 3                      # its own write leaves the version unknown: read again


async def test_another_processs_write_reaches_the_dense_leg_and_no_write_means_no_reload(tmp_path) -> None:
    mine = await MemoryStore.open(str(tmp_path / "lancedb"), HashEmbedder())
    other = await MemoryStore.open(str(tmp_path / "lancedb"), HashEmbedder())
    try:
        mine.vectors.ttl = 0                      # every search looks again
        await other.add("org", "ns", [NewMemory(content="my dog Rex loves the beach")])
        assert [c for c, _ in await ranking(mine, "dog beach")] == ["my dog Rex loves the beach"]
        for _ in range(3):
            await ranking(mine, "dog beach")
        assert mine.vectors.loads == 1            # nothing written since: never read again
        await other.add("org", "ns", [NewMemory(content="Rex the dog adores the beach")])
        assert "Rex the dog adores the beach" in [c for c, _ in await ranking(mine, "dog beach")]
        assert mine.vectors.loads == 2
    finally:
        await mine.close()
        await other.close()


async def test_overlapping_loads_of_one_namespace_each_see_the_writes_made_during_them() -> None:
    """Load A starts, load B starts, B ends, a write lands, A ends: A must see the write (and not be kept),
    and nothing fails. (Load markers compared by value once made B's end remove A's marker: A then missed
    the write and its own end raised ValueError -- a 500 under the soak.)"""
    rng = np.random.default_rng(4)
    gates = [anyio.Event(), anyio.Event()]
    calls = 0

    async def load(org: str, namespace: str) -> pa.Table:
        nonlocal calls
        gate = gates[calls] if calls < len(gates) else None
        calls += 1
        if gate is not None:
            await gate.wait()
        return rows(unit(rng, 3), ["a", "b", "c"])

    cache = VectorCache(load, ttl=0.0)
    results: dict[str, object] = {}

    async def search(name: str) -> None:
        results[name] = await cache.search("o", "n", unit(rng, 1)[0], 2)

    async with anyio.create_task_group() as group:
        group.start_soon(search, "A")
        await anyio.wait_all_tasks_blocked()
        group.start_soon(search, "B")
        await anyio.wait_all_tasks_blocked()
        gates[1].set()                           # B ends first, before any write
        await anyio.wait_all_tasks_blocked()
        cache.appended("o", "n", ["w"], unit(rng, 1), ["written while A loads"])
        gates[0].set()
    assert results["B"] is not None and len(results["B"]) == 2
    assert results["A"] is None                  # A read before the write: answered from LanceDB, not kept
    assert cache._loading == {}
