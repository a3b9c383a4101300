"""MemoryStore on a real LanceDB directory (pytest's tmp_path).

Most tests use `HashEmbedder`, a deterministic hashed bag-of-words embedder, so they are fast;
`test_real_local_embedder_ranks_paraphrase` uses the real all-MiniLM-L6-v2 one.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from app.storage import filters as F
from app.memory.models import Memory, NewMemory, ScoredMemory
from app.memory.search import SearchConfig
from app.memory.schema import EmbedderMismatch
from app.memory.store import MemoryStore

_TOKEN = re.compile(r"\w+")


class HashEmbedder:
    """Deterministic test double: signed feature hashing of lower-cased words (+ bigrams)."""

    def __init__(self, dim: int = 128, name: str = "test:hash-bow") -> None:
        self.dim = dim
        self.name = name
        self.calls: list[int] = []

    def _one(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        words = _TOKEN.findall(text.lower())
        for feat in words + [a + " " + b for a, b in itertools.pairwise(words)]:
            h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        n = float(np.linalg.norm(v))
        if n == 0:
            v[0] = 1.0
            return v
        return v / n

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._one(t) for t in texts]).astype(np.float32)

    async def aclose(self) -> None:
        pass


class NoEmbedder:
    name = "none"
    dim = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts), 0), np.float32)

    async def aclose(self) -> None:
        pass


T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
async def store(tmp_path):
    s = await MemoryStore.open(str(tmp_path / "lancedb"), HashEmbedder())
    yield s
    await s.close()


def contents(items: Sequence[Memory] | Sequence[ScoredMemory]) -> list[str]:
    return [getattr(i, "memory", i).content for i in items]


# ---------------------------------------------------------------- add / get / list


async def test_add_get_roundtrip_and_batch_embedding(store: MemoryStore):
    emb = store.embedder
    added = await store.add(
        "org",
        "ns",
        [
            NewMemory(content="I have a dog named Rex", entities=["Rex"], source="explicit", created_at=at(1)),
            NewMemory(content="I live in Lisbon", source_thread_id="th1", source_turn_id="tu1", created_at=at(2)),
        ],
    )
    assert emb.calls == [2]  # one embedding batch for the whole add
    assert len(added) == 2 and len({m.id for m in added}) == 2
    got = await store.get("org", "ns", added[0].id)
    assert got == added[0]
    assert got.entities == ["Rex"] and got.source == "explicit" and got.state == "current"
    assert got.created_at == at(1) and got.created_at.tzinfo is not None
    got2 = await store.get("org", "ns", added[1].id)
    assert (got2.source_thread_id, got2.source_turn_id, got2.superseded_by) == ("th1", "tu1", None)
    assert await store.get("org", "ns", "no-such-id") is None
    assert await store.get("org", "other-ns", added[0].id) is None
    assert await store.get("other-org", "ns", added[0].id) is None


async def test_add_is_one_commit(store: MemoryStore):
    v0 = await store.table.version()
    await store.add("o", "n", [NewMemory(content=f"fact {i}") for i in range(50)])
    assert await store.table.version() == v0 + 1
    v1 = await store.table.version()
    await store.add("o", "n", [NewMemory(content=f"fact {i}", id=f"fixed-{i}") for i in range(50)])
    assert await store.table.version() == v1 + 1


async def test_list_newest_first_paging_with_stable_tiebreak(store: MemoryStore):
    # 5 share a timestamp: their order must be by id (descending) and identical across calls.
    items = [NewMemory(content=f"m{i}", created_at=at(min(10, i)), id=f"id-{i:02d}") for i in range(15)]
    await store.add("o", "n", items[:8])
    await store.add("o", "n", items[8:])
    expected = [f"id-{i:02d}" for i in (14, 13, 12, 11, 10)] + [f"id-{i:02d}" for i in range(9, -1, -1)]
    seen: list[str] = []
    for off in range(0, 15, 4):
        page, total = await store.list("o", "n", limit=4, offset=off)
        assert total == 15
        seen += [m.id for m in page]
    assert seen == expected
    again = [m.id for m in (await store.list("o", "n", limit=100))[0]]
    assert again == expected


async def test_list_keyset_paging_is_stable_while_inserting(store: MemoryStore):
    await store.add("o", "n", [NewMemory(content=f"old {i}", created_at=at(i)) for i in range(10)])
    originals = {m.id for m in (await store.list("o", "n", limit=100))[0]}
    seen: list[str] = []
    cursor = None
    step = 0
    while True:
        page, _ = await store.list("o", "n", limit=3, before=cursor)
        if not page:
            break
        seen += [m.id for m in page]
        cursor = (page[-1].created_at, page[-1].id)
        step += 1
        # Newer memories arrive between page requests.
        await store.add("o", "n", [NewMemory(content=f"new {step}", created_at=at(100 + step))])
    assert len(seen) == len(set(seen)) == 10
    assert set(seen) == originals
    # Offset paging does shift: the same scenario would repeat items; keyset does not.
    _, total = await store.list("o", "n", limit=1)
    assert total == 10 + step


async def test_list_filters_source_entity_and_count(store: MemoryStore):
    await store.add(
        "o",
        "n",
        [
            NewMemory(content="a", source="explicit", entities=["Ann", "Bo'b"], created_at=at(1)),
            NewMemory(content="b", source="conversation", entities=["Bo'b"], created_at=at(2)),
            NewMemory(content="c", source="conversation", created_at=at(3)),
        ],
    )
    page, total = await store.list("o", "n", limit=10, source="explicit")
    assert contents(page) == ["a"] and total == 1
    page, total = await store.list("o", "n", limit=10, entity="Bo'b")
    assert contents(page) == ["b", "a"] and total == 2
    assert await store.count("o", "n") == 3
    assert await store.count("o", "n", source="conversation") == 2
    assert await store.count("o", "n", entity="Ann") == 1
    assert await store.count("o", "n", entity="ann") == 0
    with pytest.raises(ValueError):
        await store.list("o", "n", source="bogus")


# ---------------------------------------------------------------- idempotency


async def test_idempotent_add_with_fixed_ids(store: MemoryStore):
    first = await store.add("o", "n", [NewMemory(content="likes tea", id="turn-1"), NewMemory(content="x", id="turn-2")])
    second = await store.add(
        "o", "n", [NewMemory(content="likes tea (retry)", id="turn-1"), NewMemory(content="x", id="turn-2")]
    )
    assert await store.count("o", "n") == 2
    assert await store.table.count_rows() == 2
    # The stored row wins; the retry returns it unchanged.
    assert [m.content for m in second] == ["likes tea", "x"]
    assert second[0].created_at == first[0].created_at
    # A mix of known and new ids inserts only the new one.
    third = await store.add("o", "n", [NewMemory(content="new", id="turn-3"), NewMemory(content="dup", id="turn-1")])
    assert [m.content for m in third] == ["new", "likes tea"]
    assert await store.count("o", "n") == 3
    # The same id within one batch is written once.
    await store.add("o", "n", [NewMemory(content="p", id="turn-4"), NewMemory(content="q", id="turn-4")])
    assert await store.count("o", "n") == 4


async def test_same_fixed_id_in_two_tenants_are_two_memories(store: MemoryStore):
    await store.add("org1", "ns", [NewMemory(content="org1 fact", id="shared-id")])
    await store.add("org2", "ns", [NewMemory(content="org2 fact", id="shared-id")])
    assert (await store.get("org1", "ns", "shared-id")).content == "org1 fact"
    assert (await store.get("org2", "ns", "shared-id")).content == "org2 fact"
    assert await store.delete("org1", "ns", "shared-id")
    assert (await store.get("org2", "ns", "shared-id")).content == "org2 fact"


async def test_concurrent_idempotent_adds_do_not_duplicate(store: MemoryStore):
    items = [NewMemory(content=f"fact {i}", id=f"t-{i}") for i in range(5)]
    await asyncio.gather(*(store.add("o", "n", items) for _ in range(4)))
    assert await store.count("o", "n") == 5


async def test_duplicate_rows_from_racing_writers_are_resolved(store: MemoryStore):
    """Lance's primary-key conflict check misses some interleavings (seen with two processes
    and a concurrent optimize()); simulate the outcome -- two stored copies of one id,
    written by different writers -- and check both repair paths keep exactly the earliest."""
    (first,) = await store.add("o", "n", [NewMemory(content="copy A", id="dup", created_at=at(1))])
    late = msgspec.structs.replace(first, content="copy B", created_at=at(2))
    vec = await store.embedder.embed(["copy B"])
    await store.table.add(store.to_rows([late], vec, write_id="racing-writer"))
    other = msgspec.structs.replace(first, namespace="n2", content="other tenant")
    await store.table.add(store.to_rows([other], vec, write_id="w2"))
    assert await store.table.count_rows(F.ids_filter("o", "n", ["dup"])) == 2
    # an idempotent re-add of the id notices and repairs
    (again,) = await store.add("o", "n", [NewMemory(content="copy C", id="dup")])
    assert again.content == "copy A"
    assert await store.table.count_rows(F.ids_filter("o", "n", ["dup"])) == 1
    # the operator scan finds leftovers anywhere
    await store.table.add(store.to_rows([late], vec, write_id="racing-writer-2"))
    assert await store.repair_duplicates() == 1
    assert (await store.get("o", "n", "dup")).content == "copy A"
    assert (await store.get("o", "n2", "dup")).content == "other tenant"
    assert await store.table.count_rows() == 2
    assert await store.repair_duplicates() == 0


# ---------------------------------------------------------------- delete / supersede / update


async def test_delete_and_delete_namespace(store: MemoryStore):
    a = await store.add("o", "n", [NewMemory(content=f"n{i}") for i in range(3)])
    await store.add("o", "n2", [NewMemory(content="keep me")])
    await store.add("o2", "n", [NewMemory(content="keep me too")])
    assert await store.delete("o", "n", a[0].id) is True
    assert await store.delete("o", "n", a[0].id) is False
    assert await store.delete("o2", "n", a[1].id) is False  # wrong tenant: not deleted
    assert await store.get("o", "n", a[1].id) is not None
    assert await store.delete_namespace("o", "n") == 2
    assert await store.count("o", "n") == 0
    assert await store.count("o", "n2") == 1 and await store.count("o2", "n") == 1
    assert await store.delete_namespace("o", "n") == 0


async def test_supersede_excluded_from_search_and_list(store: MemoryStore):
    old, new = await store.add(
        "o",
        "n",
        [NewMemory(content="I live in Paris", created_at=at(1)), NewMemory(content="I moved to Berlin", created_at=at(2))],
    )
    assert await store.supersede("o", "n", old.id, new.id) is True
    got = await store.get("o", "n", old.id)
    assert got.state == "superseded" and got.superseded_by == new.id and got.updated_at > got.created_at
    for mode in ("fts", "dense", "wsum", "rrf"):
        hits = await store.search("o", "n", "live Paris", config=SearchConfig(mode=mode))
        assert old.id not in [h.memory.id for h in hits], mode
    hits = await store.search("o", "n", "live Paris", include_superseded=True)
    assert hits[0].memory.id == old.id
    page, total = await store.list("o", "n", limit=10)
    assert [m.id for m in page] == [new.id] and total == 1
    page, total = await store.list("o", "n", limit=10, include_superseded=True)
    assert total == 2
    assert await store.count("o", "n") == 1 and await store.count("o", "n", include_superseded=True) == 2
    assert await store.supersede("o", "n", "missing", new.id) is False
    with pytest.raises(KeyError):
        await store.supersede("o", "n", new.id, "missing")
    # Cross-tenant: cannot supersede another tenant's memory.
    other = await store.add("o", "other", [NewMemory(content="x")])
    with pytest.raises(KeyError):
        await store.supersede("o", "n", new.id, other[0].id)
    assert await store.supersede("o", "other", new.id, other[0].id) is False


@pytest.mark.parametrize("mode", ["fts", "dense", "wsum"])
async def test_search_finds_current_memory_behind_many_superseded(store: MemoryStore, mode: str):
    # Superseded rows are dropped after the index search (not in the prefilter); the legs
    # must fetch more when the best matches are nearly all superseded.
    old = await store.add("o", "n", [NewMemory(content=f"my car is a red red red sports car v{i}") for i in range(40)])
    (cur,) = await store.add("o", "n", [NewMemory(content="the car I drive now is a blue van")])
    for m in old:
        assert await store.supersede("o", "n", m.id, cur.id)
    hits = await store.search("o", "n", "red sports car", limit=3, config=SearchConfig(mode=mode))
    assert [h.memory.id for h in hits] == [cur.id]
    hits = await store.search("o", "n", "red sports car", limit=3, include_superseded=True, config=SearchConfig(mode=mode))
    assert len(hits) == 3 and all(h.memory.state == "superseded" for h in hits)


async def test_update_reembeds_and_changes_search(store: MemoryStore):
    (m,) = await store.add("o", "n", [NewMemory(content="my favourite colour is blue", entities=["blue"], created_at=at(0))])
    await store.add("o", "n", [NewMemory(content="weather chat", created_at=at(1))])
    calls_before = len(store.embedder.calls)
    up = await store.update("o", "n", m.id, content="my favourite fruit is mango", entities=["mango"])
    assert up is not None and up.content == "my favourite fruit is mango" and up.entities == ["mango"]
    assert up.created_at == m.created_at and up.updated_at > m.updated_at and up.id == m.id
    assert len(store.embedder.calls) == calls_before + 1
    assert await store.get("o", "n", m.id) == up
    assert await store.count("o", "n") == 2
    hits = await store.search("o", "n", "mango fruit", config=SearchConfig(mode="dense"))
    assert hits[0].memory.id == m.id
    assert hits[0].score == pytest.approx(1.0 * np.dot(*await store.embedder.embed(["mango fruit", up.content])), abs=1e-4)
    # entities only: no re-embedding
    up2 = await store.update("o", "n", m.id, entities=["x"])
    assert up2.content == up.content and up2.entities == ["x"]
    # +1 for the search's query embedding, +1 for the dot-product check above; none for the update
    assert len(store.embedder.calls) == calls_before + 3
    assert await store.update("o", "other", m.id, content="nope") is None
    assert await store.update("o", "n", "missing", content="nope") is None


async def test_iter_all_batches_everything_oldest_first(store: MemoryStore):
    await store.add("o", "n", [NewMemory(content=f"m{i}", created_at=at(i % 7), id=f"i{i:03d}") for i in range(25)])
    await store.add("o", "other", [NewMemory(content="not mine")])
    old, new = await store.add("o", "n", [NewMemory(content="s-old", created_at=at(50)), NewMemory(content="s-new", created_at=at(51))])
    await store.supersede("o", "n", old.id, new.id)
    batches = [b async for b in store.iter_all("o", "n", batch=10)]
    assert [len(b) for b in batches] == [10, 10, 7]
    flat = [m for b in batches for m in b]
    assert len({m.id for m in flat}) == 27
    keys = [(m.created_at, m.id) for m in flat]
    assert keys == sorted(keys)
    assert "not mine" not in contents(flat) and "s-old" in contents(flat)


# ---------------------------------------------------------------- search


async def _seed_topics(store: MemoryStore, org="o", ns="n"):
    facts = [
        "My sister Clara is getting married in June",
        "I adopted a grey cat called Pixel last spring",
        "Work has been busy, the quarterly report is due Friday",
        "I started learning the cello in September",
        "We booked flights to Reykjavik for the winter holidays",
        "Had pasta for lunch, it was fine",
        "My manager Tom approved my vacation request",
    ]
    return await store.add(org, ns, [NewMemory(content=f, created_at=at(i)) for i, f in enumerate(facts)])


@pytest.mark.parametrize("mode", ["fts", "dense", "hybrid", "rrf", "wsum"])
async def test_search_ranks_relevant_memory_first(store: MemoryStore, mode: str):
    mems = await _seed_topics(store)
    await store.add("o", "other", [NewMemory(content="my cat Pixel is grey, Pixel Pixel cat")])
    cfg = SearchConfig(mode=mode)
    hits = await store.search("o", "n", "what is the name of my cat", config=cfg)
    assert hits and hits[0].memory.id == mems[1].id
    assert all(h.memory.namespace == "n" for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    hits = await store.search("o", "n", "cello lessons", config=cfg, limit=1)
    assert len(hits) == 1 and hits[0].memory.id == mems[3].id


class QueryRewritingEmbedder(HashEmbedder):
    """Embeds search queries its own way (as `LocalEmbedder` does with int8 queries): here a query's vector is
    the vector of another text, so which path the store took shows in what the dense leg finds."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    async def embed_query(self, text: str) -> np.ndarray:
        self.queries.append(text)
        return self._one("cello lessons")


async def test_search_embeds_the_query_with_the_embedders_query_method(tmp_path):
    emb = QueryRewritingEmbedder()
    s = await MemoryStore.open(str(tmp_path / "lancedb"), emb)
    try:
        mems = await _seed_topics(s)
        calls = len(emb.calls)
        hits = await s.search("o", "n", "what is the name of my cat", config=SearchConfig(mode="dense"), limit=1)
        assert hits[0].memory.id == mems[3].id  # the query method's vector, not embed()'s
        assert emb.queries == ["what is the name of my cat"] and len(emb.calls) == calls
    finally:
        await s.close()


async def test_search_limit_min_score_and_empty_query(store: MemoryStore):
    await _seed_topics(store)
    hits = await store.search("o", "n", "sister wedding Clara", limit=3)
    assert 1 <= len(hits) <= 3
    assert all(0.0 <= h.score <= 1.0 for h in hits)  # wsum scale
    top = hits[0].score
    assert [h.score for h in await store.search("o", "n", "sister wedding Clara", min_score=top)] == [top]
    assert await store.search("o", "n", "sister wedding Clara", min_score=1.01) == []
    assert await store.search("o", "n", "   ") == []
    assert await store.search("o", "empty-namespace", "cat") == []
    assert await store.search("o", "n", "cat", limit=0) == []


async def test_fts_finds_rows_added_after_index_was_built(store: MemoryStore):
    # open() already built the (empty) indexes, so FTS uses the index's tokenizer from row 1.
    idx = {tuple(i.columns): i.index_type for i in await store.table.list_indices()}
    assert idx[("search_text",)] == "FTS" and idx[("tenant",)] == "BTree" and idx[("pk",)] == "BTree"
    await _seed_topics(store)
    await store.maintain()
    assert (await store.table.index_stats("search_text_idx")).num_unindexed_rows == 0
    (late,) = await store.add("o", "n", [NewMemory(content="Bought a kayak named Driftwood yesterday")])
    stats = await store.table.index_stats("search_text_idx")
    assert stats.num_unindexed_rows == 1  # really not in the index yet
    for mode in ("fts", "dense", "wsum"):
        hits = await store.search("o", "n", "kayak Driftwood", config=SearchConfig(mode=mode))
        assert hits and hits[0].memory.id == late.id, mode
    await store.maintain()
    assert (await store.table.index_stats("search_text_idx")).num_unindexed_rows == 0
    hits = await store.search("o", "n", "kayak Driftwood", config=SearchConfig(mode="fts"))
    assert hits[0].memory.id == late.id


async def test_search_during_maintain_still_answers(tmp_path):
    s = await MemoryStore.open(str(tmp_path / "db"), HashEmbedder(), vector_index_min_rows=256)
    try:
        # Enough rows (in many small commits = many fragments) that maintain() has real work:
        # compaction, a BTree, the FTS index and an IVF-PQ vector index.
        for batch in range(12):
            await s.add(
                "o",
                f"ns{batch % 3}",
                [NewMemory(content=f"note {batch}-{i} about topic {i % 17} and colour {i % 5}") for i in range(40)],
            )
        (target,) = await s.add("o", "ns1", [NewMemory(content="the submarine is painted bright yellow")])
        task = asyncio.create_task(s.maintain())
        answers = 0
        while not task.done():
            hits = await s.search("o", "ns1", "yellow submarine")
            assert hits and hits[0].memory.id == target.id
            answers += 1
            await asyncio.sleep(0)
        report = await task
        assert "vector" in report["created"] and answers >= 3
        assert (await s.search("o", "ns1", "yellow submarine"))[0].memory.id == target.id
        assert (await s.search("o", "ns1", "yellow submarine", config=SearchConfig(mode="dense")))[0].memory.id == target.id
        # rows added after the vector index are still found by vector search
        (late,) = await s.add("o", "ns2", [NewMemory(content="a purple giraffe wearing boots")])
        hits = await s.search("o", "ns2", "purple giraffe boots", config=SearchConfig(mode="dense"))
        assert hits[0].memory.id == late.id
        assert await s.count("o", "ns1") == 161
    finally:
        await s.close()


# ---------------------------------------------------------------- embedder metadata, dim 0, reopen


async def test_reopen_and_refuse_other_embedder(tmp_path):
    uri = str(tmp_path / "db")
    s = await MemoryStore.open(uri, HashEmbedder(dim=64))
    (m,) = await s.add("o", "n", [NewMemory(content="persisted")])
    await s.maintain()
    await s.close()
    s2 = await MemoryStore.open(uri, HashEmbedder(dim=64))
    assert (await s2.get("o", "n", m.id)).content == "persisted"
    await s2.close()
    with pytest.raises(EmbedderMismatch, match="dim 64"):
        await MemoryStore.open(uri, HashEmbedder(dim=32))
    with pytest.raises(EmbedderMismatch, match="re-embedding"):
        await MemoryStore.open(uri, NoEmbedder())
    with pytest.raises(EmbedderMismatch):
        await MemoryStore.open(uri, HashEmbedder(dim=64, name="another-model"))


async def test_dim_zero_store_is_fts_only(tmp_path):
    s = await MemoryStore.open(str(tmp_path / "db"), NoEmbedder())
    try:
        schema = await s.table.schema()
        assert "vector" not in schema.names
        assert s.search_config.mode == "fts"
        await _seed_topics(s)
        hits = await s.search("o", "n", "Reykjavik flights")
        assert hits[0].memory.content.startswith("We booked flights")
        up = await s.update("o", "n", hits[0].memory.id, content="We cancelled the Reykjavik trip")
        assert up.content.startswith("We cancelled")
        await s.maintain()
        assert (await s.search("o", "n", "cancelled"))[0].memory.id == up.id
        with pytest.raises(ValueError):
            await s.search("o", "n", "x", config=SearchConfig(mode="dense"))
        with pytest.raises(EmbedderMismatch):
            await MemoryStore.open(str(tmp_path / "db"), HashEmbedder())
    finally:
        await s.close()


async def test_two_store_instances_see_each_others_writes(tmp_path):
    """Two replicas on one store location (default read consistency: every read is fresh)."""
    uri = str(tmp_path / "db")
    a = await MemoryStore.open(uri, HashEmbedder())
    b = await MemoryStore.open(uri, HashEmbedder())
    try:
        await a.count("o", "n")
        await b.count("o", "n")
        (m,) = await a.add("o", "n", [NewMemory(content="written by replica a", id="fixed")])
        assert (await b.get("o", "n", m.id)).content == "written by replica a"
        await b.add("o", "n", [NewMemory(content="retry on replica b", id="fixed")])
        assert await a.count("o", "n") == 1
        # concurrent writers of every kind, plus maintenance, from both replicas
        more = await b.add("o", "n", [NewMemory(content=f"b{i}") for i in range(20)])
        await asyncio.gather(
            a.maintain(),
            b.maintain(),
            a.update("o", "n", "fixed", content="updated by a"),
            b.delete("o", "n", more[0].id),
            b.supersede("o", "n", more[1].id, more[2].id),
            a.add("o", "n", [NewMemory(content="late a")]),
        )
        assert await b.count("o", "n") == 1 + 20 - 1 - 1 + 1
        assert (await b.get("o", "n", "fixed")).content == "updated by a"
    finally:
        await a.close()
        await b.close()


async def test_models_are_msgspec_serialisable(store: MemoryStore):
    (m,) = await store.add("o", "n", [NewMemory(content="x", created_at=datetime(2024, 1, 2, 3, 4, 5))])
    assert m.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)  # naive -> UTC
    hit = (await store.search("o", "n", "x"))[0]
    back = msgspec.json.decode(msgspec.json.encode(hit), type=ScoredMemory)
    assert back == hit


async def test_real_local_embedder_ranks_paraphrase(tmp_path):
    from app.memory.embedders import build_embedder

    emb = build_embedder("local")
    s = await MemoryStore.open(str(tmp_path / "db"), emb)
    try:
        assert s.dim == 384
        mems = await _seed_topics(s)
        hits = await s.search("o", "n", "which pet did I get?", config=SearchConfig(mode="dense"))
        assert hits[0].memory.id == mems[1].id
        hits = await s.search("o", "n", "which pet did I get?")
        assert hits[0].memory.id == mems[1].id
    finally:
        await s.close()
        await emb.aclose()
