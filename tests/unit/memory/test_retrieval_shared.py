"""`MemoryRetriever` with the organisation's shared scope: searched beside the user's namespace only when
asked, both ranked as one list, and an empty shared scope costs nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from app.memory.models import Memory, ScoredMemory
from app.memory.presence import TenantPresence
from app.memory.retrieval import MemoryRetriever
from app.tenancy import SHARED_NAMESPACE

WHEN = datetime(2026, 1, 2, tzinfo=UTC)


def hit(namespace: str, memory_id: str, score: float) -> ScoredMemory:
    return ScoredMemory(memory=Memory(id=memory_id, org_id="org1", namespace=namespace, content=f"fact {memory_id}",
                                      created_at=WHEN, updated_at=WHEN), score=score)


class FakeStore:
    """Hits per (org, namespace); counts per namespace drive `presence`; every search is logged."""

    def __init__(self, hits: dict[tuple[str, str], list[ScoredMemory]]) -> None:
        self.hits = hits
        self.searched: list[tuple[str, str]] = []

        async def count(org_id: str, namespace: str) -> int:
            return len(self.hits.get((org_id, namespace), []))

        self.presence = TenantPresence(count)

    async def search(self, org_id: str, namespace: str, query: str, *, limit: int = 8,
                     min_score: float | None = None) -> list[ScoredMemory]:
        self.searched.append((org_id, namespace))
        return self.hits.get((org_id, namespace), [])[:limit]

    async def may_have_memories(self, org_id: str, namespace: str) -> bool:
        return await self.presence.may_have_memories(org_id, namespace)


ASK = [{"role": "user", "content": "where do I park my bike at the office?"}]


async def test_shared_hits_are_ranked_with_the_users_as_one_list() -> None:
    store = FakeStore({("org1", "alice"): [hit("alice", "a1", 0.9), hit("alice", "a2", 0.3)],
                       ("org1", SHARED_NAMESPACE): [hit(SHARED_NAMESPACE, "s1", 0.6), hit(SHARED_NAMESPACE, "a2", 0.3)],
                       ("org2", SHARED_NAMESPACE): [hit(SHARED_NAMESPACE, "x", 0.99)]})
    retriever = MemoryRetriever(store, top_k=3)
    got = await retriever.retrieve("org1", "alice", ASK, include_shared=True)
    assert [(s.memory.namespace, s.memory.id) for s in got.used] == [
        ("alice", "a1"), (SHARED_NAMESPACE, "s1"), ("alice", "a2")]  # same id in both scopes: two memories
    assert got.section is not None and got.section.index("fact a1") < got.section.index("fact s1")
    assert ("org2", SHARED_NAMESPACE) not in store.searched


async def test_without_include_shared_only_the_namespace_is_searched() -> None:
    store = FakeStore({("org1", "alice"): [hit("alice", "a1", 0.9)],
                       ("org1", SHARED_NAMESPACE): [hit(SHARED_NAMESPACE, "s1", 0.95)]})
    got = await MemoryRetriever(store).retrieve("org1", "alice", ASK)
    assert [s.memory.id for s in got.used] == ["a1"] and store.searched == [("org1", "alice")]


async def test_a_user_with_no_memories_still_gets_the_shared_ones() -> None:
    store = FakeStore({("org1", SHARED_NAMESPACE): [hit(SHARED_NAMESPACE, "s1", 0.5)]})
    retriever = MemoryRetriever(store)
    assert await store.may_have_memories("org1", "bob") is False
    assert retriever.known_empty("org1", "bob") is True
    assert retriever.known_empty("org1", "bob", include_shared=True) is False
    got = await retriever.retrieve("org1", "bob", ASK, include_shared=True)
    assert [s.memory.id for s in got.used] == ["s1"] and store.searched == [("org1", SHARED_NAMESPACE)]
