"""Entities (extraction, backfill counters, marks, retrieval boost), memory versions and export/import,
on a real LanceDB directory with test doubles for the embedder and the upstream model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from app.errors import InvalidRequest, UpstreamError
from app.api import memory_transfer as wire
from app.memory import transfer
from app.memory.entities import (
    ENTITY_BONUS,
    MARKER,
    EntityExtractor,
    EntityMarks,
    backfill_page,
    entity_rerank,
    heuristic_entities,
    parse_entities,
)
from app.memory.llm_json import ExtractionParseError
from app.memory.models import Memory, NewMemory, ScoredMemory
from app.memory.store import MemoryStore
from app.memory.versions import VersionLog

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class NoEmbedder:
    name = "none"
    dim = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.zeros((len(texts), 0), np.float32)

    async def aclose(self) -> None:
        pass


class CountingEmbedder:
    name = "test:counting"
    dim = 4

    def __init__(self) -> None:
        self.texts = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return np.ones((len(texts), 4), np.float32) / 2

    async def aclose(self) -> None:
        pass


def completion(payload: Any) -> dict[str, Any]:
    content = payload if isinstance(payload, str) else json.dumps(payload)
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


class FakeClient:
    """Answers entity requests from a script; records every request body."""

    offline = False

    def __init__(self, answer: Any = None, error: BaseException | None = None) -> None:
        self.answer = answer
        self.error = error
        self.bodies: list[dict[str, Any]] = []

    async def complete_json(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        if self.error is not None:
            raise self.error
        if callable(self.answer):
            return completion(self.answer(body))
        if self.answer is not None:
            return completion(self.answer)
        # default: every numbered memory gets the entity "E<n>"
        lines = [l for l in body["messages"][1]["content"].splitlines()[1:] if l.strip()]
        return completion({"memories": [{"n": i, "things": [f"E{i}"]} for i in range(1, len(lines) + 1)]})


@pytest.fixture
async def db_store(tmp_path):
    import lancedb

    store = await MemoryStore.open(str(tmp_path / "db"), NoEmbedder())
    db = await lancedb.connect_async(str(tmp_path / "db"), read_consistency_interval=timedelta(0))
    yield store, db
    await store.close()


def mem(content: str, entities: list[str] | None = None, mid: str = "00000000-0000-4000-8000-000000000001") -> Memory:
    return Memory(id=mid, org_id="o", namespace="n", content=content, created_at=T0, updated_at=T0,
                  entities=entities or [])


# ---------------------------------------------------------------- parsing and extraction


def test_parse_entities_categories_aliases_and_flattening() -> None:
    resp = completion({"memories": [
        {"n": 1, "people": ["Alice", "alice"], "places": ["Paris"], "organizations": ["Acme"], "dates": ["2024-05-01"]},
        {"n": "2", "things": ["Fiat Panda"], "entities": ["Bruno"]},
        {"n": 9, "people": ["out of range"]},
    ]})
    assert parse_entities(resp, 2) == {1: ["Alice", "Paris", "Acme", "2024-05-01"], 2: ["Fiat Panda", "Bruno"]}
    fenced = completion('```json\n{"memories": [{"n": 1, "people": ["Bob"]}]}\n```')
    assert parse_entities(fenced, 1) == {1: ["Bob"]}


@pytest.mark.parametrize("content", ["not json at all", '{"memories": 5}', '{"memories": [{"n": 0}, "x"]}', ""])
def test_parse_entities_rejects_malformed(content: str) -> None:
    with pytest.raises(ExtractionParseError):
        parse_entities(completion(content), 2)


def test_heuristic_entities() -> None:
    found = heuristic_entities('I met Alice Smith in Paris on 2023-05-01. My favourite band is "The Beatles".')
    assert found == ["Alice Smith", "Paris", "2023-05-01", "The Beatles"]
    assert heuristic_entities("i like green tea") == []


async def test_extractor_one_call_per_chunk_json_mode() -> None:
    client = FakeClient()
    extractor = EntityExtractor(client, "fake-gpt")
    out = await extractor.extract([mem("one"), mem("two"), mem("three")])
    assert out == [["E1"], ["E2"], ["E3"]] and len(client.bodies) == 1
    body = client.bodies[0]
    assert body["response_format"] == {"type": "json_object"} and body["model"] == "fake-gpt"
    assert MARKER in body["messages"][0]["content"] and "3. three" in body["messages"][1]["content"]


@pytest.mark.parametrize("client", [
    FakeClient(answer="this is not JSON"),
    FakeClient(error=UpstreamError("boom")),
    FakeClient(error=RuntimeError("unexpected")),
    None,
])
async def test_extractor_falls_back_to_heuristic(client: FakeClient | None) -> None:
    out = await EntityExtractor(client, "m").extract([mem("I visited Rome with Bob."), mem("nothing here")])
    assert out == [["Rome", "Bob"], []]


async def test_extractor_offline_client_is_not_called() -> None:
    client = FakeClient()
    client.offline = True
    assert await EntityExtractor(client, "m").extract([mem("I met Carla.")]) == [["Carla"]]
    assert client.bodies == []


async def test_extractor_fills_unanswered_memories_with_heuristic() -> None:
    client = FakeClient(answer={"memories": [{"n": 2, "people": ["Zed"]}]})
    out = await EntityExtractor(client, "m").extract([mem("I met Ann."), mem("I met Zed.")])
    assert out == [["Ann"], ["Zed"]]


# ---------------------------------------------------------------- backfill


class FailingStore:
    """Delegates to a real store; updates of ``fail_ids`` raise."""

    def __init__(self, store: MemoryStore, fail_ids: set[str]) -> None:
        self.store, self.fail_ids = store, fail_ids

    async def list(self, *args: Any, **kw: Any) -> Any:
        return await self.store.list(*args, **kw)

    async def update(self, org: str, ns: str, mid: str, **kw: Any) -> Any:
        if mid in self.fail_ids:
            raise RuntimeError("disk on fire")
        return await self.store.update(org, ns, mid, **kw)


async def test_backfill_counters_pages_and_idempotence(db_store) -> None:
    store, db = db_store
    marks = await EntityMarks.open(db)
    contents = [f"memory {i}" for i in range(7)] + ["already tagged"]
    added = await store.add("o", "n", [
        NewMemory(content=c, entities=["Tag"] if c == "already tagged" else [], created_at=T0 + timedelta(minutes=i))
        for i, c in enumerate(contents)])
    by_content = {m.content: m for m in added}
    # the model finds nothing for "memory 3": it must count as processed, and be skipped next time
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        lines = body["messages"][1]["content"].splitlines()[1:]
        return {"memories": [{"n": i, "things": [] if line.endswith("memory 3") else [line.split(". ", 1)[1]]}
                             for i, line in enumerate(lines, 1)]}

    client = FakeClient(answer=answer)
    extractor = EntityExtractor(client, "m")
    pages = []
    offset = 0
    while True:
        page = await backfill_page(store, marks, extractor, "o", "n", limit=3, offset=offset, chunk_size=2)
        pages.append(page)
        if not page.has_more:
            break
        offset = page.next_offset
    assert [(p.offset, p.examined, p.next_offset, p.has_more) for p in pages] == [
        (0, 3, 3, True), (3, 3, 6, True), (6, 2, 8, False)]
    assert sum(p.examined for p in pages) == 8
    assert sum(p.processed for p in pages) == 7 and sum(p.skipped for p in pages) == 1
    assert sum(p.failed for p in pages) == 0
    # newest first: page 1 = "already tagged", memory 6, memory 5 -> one chunk of 2 (the tagged one skipped)
    assert pages[0].skipped == 1 and pages[0].processed == 2 and pages[0].limit == 3
    assert len(client.bodies) == 4  # chunks of <= 2 to-do memories per page: 1 + 2 + 1
    got = await store.get("o", "n", by_content["memory 5"].id)
    assert got.entities == ["memory 5"]
    assert (await store.get("o", "n", by_content["memory 3"].id)).entities == []
    assert (await store.get("o", "n", by_content["already tagged"].id)).entities == ["Tag"]
    assert (await store.list("o", "n", entity="memory 5"))[1] == 1
    # second run: nothing new, no model call
    calls = len(client.bodies)
    again = await backfill_page(store, marks, extractor, "o", "n", limit=50, offset=0, chunk_size=5)
    assert (again.examined, again.processed, again.skipped, again.failed, again.has_more) == (8, 0, 8, 0, False)
    assert len(client.bodies) == calls
    # a memory whose content changed (and has no entities) is processed again
    await store.update("o", "n", by_content["memory 3"].id, content="memory 3 now mentions Oslo")
    third = await backfill_page(store, marks, extractor, "o", "n", limit=50, offset=0, chunk_size=5)
    assert (third.processed, third.skipped) == (1, 7)
    # beyond the end
    empty = await backfill_page(store, marks, extractor, "o", "n", limit=5, offset=100, chunk_size=5)
    assert (empty.examined, empty.has_more, empty.next_offset) == (0, False, 100)


async def test_backfill_counts_failed_writes_and_retries_them(db_store) -> None:
    store, db = db_store
    marks = await EntityMarks.open(db)
    a, b = await store.add("o", "n", [NewMemory(content="I met Alice.", created_at=T0),
                                      NewMemory(content="I met Bob.", created_at=T0 + timedelta(seconds=1))])
    extractor = EntityExtractor(None, None)
    res = await backfill_page(FailingStore(store, {a.id}), marks, extractor, "o", "n", limit=10, offset=0,
                              chunk_size=5)
    assert (res.examined, res.processed, res.failed, res.skipped) == (2, 1, 1, 0)
    res = await backfill_page(store, marks, extractor, "o", "n", limit=10, offset=0, chunk_size=5)
    assert (res.processed, res.failed, res.skipped) == (1, 0, 1)
    assert (await store.get("o", "n", a.id)).entities == ["Alice"]
    assert await marks.delete_tenant("o", "n") == 2
    assert await marks.processed("o", "n", [a.id, b.id]) == {}


# ---------------------------------------------------------------- retrieval boost


def hit(content: str, score: float, entities: list[str], i: int) -> ScoredMemory:
    return ScoredMemory(memory=mem(content, entities, mid=f"00000000-0000-4000-8000-00000000000{i}"), score=score)


def test_entity_rerank_boosts_named_entities_only() -> None:
    hits = [hit("a", 0.50, ["Rome"], 1), hit("b", 0.45, ["Biscuit"], 2), hit("c", 0.44, ["Bo"], 3)]
    out = entity_rerank("When did we get BISCUIT, the puppy? Bob knows.", hits)
    assert [h.memory.content for h in out] == ["b", "a", "c"]
    assert out[0].score == pytest.approx(0.45 + ENTITY_BONUS) and out[1].score == 0.50 and out[2].score == 0.44
    assert [h.memory.content for h in entity_rerank("nothing named", hits)] == ["a", "b", "c"]


async def test_retriever_applies_entity_boost() -> None:
    from app.memory.retrieval import MemoryRetriever

    class Store:
        async def search(self, org_id: str, namespace: str, query: str, **kw: Any) -> list[ScoredMemory]:
            return [hit("The user likes long walks.", 0.5, [], 1),
                    hit("The user's dog Biscuit arrived in May.", 0.42, ["Biscuit"], 2)]

        async def may_have_memories(self, org_id: str, namespace: str) -> bool:
            return True

    got = await MemoryRetriever(Store()).retrieve("o", "n", [{"role": "user", "content": "How old is biscuit now?"}])
    assert got.memories[0].startswith("The user's dog Biscuit")
    assert got.used[0].score == pytest.approx(0.42 + ENTITY_BONUS)


# ---------------------------------------------------------------- versions


async def test_versions_history_and_crash_leftover(db_store) -> None:
    store, db = db_store
    versions = await VersionLog.open(db)
    [m] = await store.add("o", "n", [NewMemory(content="v1", created_at=T0)])
    await versions.record(m)
    await versions.record(m)  # a retried PATCH records the same version once
    v2 = await store.update("o", "n", m.id, content="v2")
    await versions.record(v2)  # a PATCH that crashed before its update: v2 is still current
    history = await versions.history(v2)
    assert [v.content for v in history] == ["v1", "v2"]
    assert history[0].replaced_at is not None and history[-1].replaced_at is None
    assert await versions.count("o", "n") == 2
    assert await versions.delete_memory("o", "n", m.id) == 2
    assert [v.content for v in await versions.history(v2)] == ["v2"]


# ---------------------------------------------------------------- export / import


async def _export(store: MemoryStore, namespace: str) -> bytes:
    return b"".join([chunk async for chunk in wire.export_lines(transfer.export_pages(store, "o", namespace))])


async def _import(store: MemoryStore, org: str, namespace: str, records: list, **options) -> transfer.ImportCounts:
    return await transfer.import_items(store, org, namespace, [wire.to_item(r) for r in records], **options)


def test_parse_import_forms_and_errors() -> None:
    line = {"content": "x", "id": "6F9619FF-8B86-D011-B42D-00C04FC964FF", "createdAt": "2024-01-02T03:04:05.123456Z"}
    jsonl = (json.dumps(line) + "\n\n" + json.dumps({"content": "y"}) + "\n").encode()
    records = wire.parse_import(jsonl)
    assert [r.content for r in records] == ["x", "y"]
    assert transfer.item_id(wire.to_item(records[0])) == "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    assert transfer.item_id(wire.to_item(records[1])) == transfer.item_id(wire.to_item(wire.parse_import(b'{"content": "y"}')[0]))
    assert [r.content for r in wire.parse_import(json.dumps([line]).encode())] == ["x"]
    assert wire.parse_import(b"[]") == []
    cases = [
        (b'{"content": "a"}\n{"content": ""}', ["body", 1, "content"]),
        (b'{"content": "a"}\n{"nope": 1}', ["body", 1]),
        (b'{"content": "a"}\n{bad', ["body", 1]),
        (b'[{"content": "a"}, {"content": "b", "state": "weird"}]', ["body", 1, "state"]),
        (b'[{"content": "a"}, {"content": "b", "id": "not-a-uuid"}]', ["body", 1, "id"]),
        (b'{"content": "   "}', ["body", 0, "content"]),
        (b'{"content": "a", "entities": ["ok", 3]}', ["body", 0, "entities", 1]),
        (b"[1,", ["body"]),
        (b"  \n ", ["body"]),
        (b'{"content": "a", "createdAt": "0480-01-01T00:00:00Z"}', ["body", 0, "createdAt"]),
        (b'{"content": "\\u2003\\ufeff"}', ["body", 0, "content"]),
    ]
    for body, loc in cases:
        with pytest.raises(InvalidRequest) as info:
            wire.parse_import(body)
        assert list(info.value.loc)[: len(loc)] == loc, (body, info.value.loc, info.value.message)


async def test_export_import_round_trip_links_and_idempotence(db_store) -> None:
    store, _ = db_store
    a, b, c = await store.add("o", "src", [
        NewMemory(content="I live in Paris", created_at=T0.replace(microsecond=123456), entities=["Paris"]),
        NewMemory(content="I live in Lyon", created_at=T0 + timedelta(days=1), source="explicit"),
        NewMemory(content="I live in Nice", created_at=T0 + timedelta(days=2), source_thread_id="t",
                  source_turn_id="u"),
    ])
    await store.supersede("o", "src", a.id, b.id)
    await store.supersede("o", "src", b.id, c.id)
    exported = await _export(store, "src")
    lines = [json.loads(l) for l in exported.splitlines()]
    assert [l["content"] for l in lines] == ["I live in Paris", "I live in Lyon", "I live in Nice"]
    assert lines[0]["createdAt"] == "2024-03-01T12:00:00.123456Z" and lines[0]["supersededBy"] == b.id
    assert set(lines[0]) == {"content", "createdAt", "id", "source", "sourceThreadId", "sourceTurnId", "entities",
                             "state", "supersededBy"}
    # reversed order: successors come after the memories they supersede; links still restored
    body = b"\n".join(reversed(exported.splitlines()))
    res = await _import(store, "o", "dst", wire.parse_import(body), batch=2)
    assert (res.received, res.written, res.batches, res.superseded_links, res.unresolved_links, res.total) == (
        3, 3, 2, 2, 0, 3)
    again = await _export(store, "dst")
    assert again == exported
    res2 = await _import(store, "o", "dst", wire.parse_import(exported))
    assert (res2.total, res2.superseded_links) == (3, 2)
    assert await _export(store, "dst") == exported
    # a link to a memory that exists nowhere stays unresolved, the memory current
    orphan = {"content": "orphan", "id": "11111111-1111-4111-8111-111111111111",
              "supersededBy": "22222222-2222-4222-8222-222222222222", "state": "superseded"}
    res3 = await _import(store, "o", "dst", wire.parse_import(json.dumps(orphan).encode()))
    assert (res3.unresolved_links, res3.total) == (1, 4)
    assert (await store.get("o", "dst", orphan["id"])).state == "current"


async def test_reimport_with_an_embedder_embeds_nothing_again(tmp_path) -> None:
    embedder = CountingEmbedder()
    store = await MemoryStore.open(str(tmp_path / "db"), embedder)
    try:
        body = b"\n".join(json.dumps({"content": f"fact {i}", "id": f"00000000-0000-4000-8000-{i:012d}"}).encode()
                          for i in range(5))
        first = await _import(store, "o", "n", wire.parse_import(body))
        assert (first.written, first.total, embedder.texts) == (5, 5, 5)
        more = body + b"\n" + json.dumps({"content": "a new one"}).encode()
        second = await _import(store, "o", "n", wire.parse_import(more))
        assert (second.received, second.written, second.total) == (6, 6, 6)
        assert embedder.texts == 6  # only the new record was embedded
    finally:
        await store.close()
