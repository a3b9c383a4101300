"""Thread context in the FTS document (`app.memory.context`): unit tests and through a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.memory.context import previous_in_thread
from app.memory.models import Memory, NewMemory
from app.memory.search import SearchConfig
from app.memory.store import MemoryStore

from .test_store import HashEmbedder

ORG = "org-ctx"

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _m(content: str, thread: str | None, seconds: int) -> Memory:
    t = T0 + timedelta(seconds=seconds)
    return Memory(id=content, org_id="o", namespace="n", content=content, created_at=t, updated_at=t,
                  source_thread_id=thread)


def test_previous_in_thread_links_by_thread_and_time():
    ms = [_m("b2", "b", 1), _m("a1", "a", 0), _m("a2", "a", 5), _m("b1", "b", 0), _m("x", None, 2), _m("a3", "a", 9)]
    assert previous_in_thread(ms) == ["b1", "", "a1", "", "", "a2"]


def test_previous_in_thread_cuts_to_the_tail_and_can_be_off():
    ms = [_m("one two   three four", "t", 0), _m("next", "t", 1)]
    assert previous_in_thread(ms, max_chars=10) == ["", "three four"]
    assert previous_in_thread(ms, max_chars=0) == ["", ""]


@pytest.fixture
async def store(tmp_path):
    s = await MemoryStore.open(str(tmp_path / "db"), HashEmbedder())
    yield s
    await s.close()


async def _turns(store: MemoryStore, ns: str = "u") -> list[Memory]:
    return await store.add(ORG, ns, [
        NewMemory(content="Where did you go hiking last weekend?", source_thread_id="s1", created_at=T0),
        NewMemory(content="Yes, finally made it up there!", source_thread_id="s1",
                  created_at=T0 + timedelta(seconds=1)),
        NewMemory(content="Unrelated: my cat sleeps all day.", source_thread_id="s2",
                  created_at=T0 + timedelta(seconds=2)),
    ])


async def test_reply_is_found_through_the_turn_it_answers(store: MemoryStore):
    added = await _turns(store)
    hits = await store.search(ORG, "u", "hiking weekend", limit=5, config=SearchConfig(mode="fts"))
    found = [h.memory.content for h in hits]
    assert added[1].content in found  # only its context mentions hiking
    assert hits[0].memory.content == added[0].content  # the turn that says it ranks first
    assert added[2].content not in found  # other thread: no context
    # The returned memory is the memory itself, not its context.
    assert hits[found.index(added[1].content)].memory.content == "Yes, finally made it up there!"


async def test_context_survives_entity_update_but_not_new_content(store: MemoryStore):
    added = await _turns(store)
    cfg = SearchConfig(mode="fts")
    await store.update(ORG, "u", added[1].id, entities=["trip"])
    hits = await store.search(ORG, "u", "hiking weekend", limit=5, config=cfg)
    assert added[1].id in [h.memory.id for h in hits]
    await store.update(ORG, "u", added[1].id, content="We went to the lake instead.")
    hits = await store.search(ORG, "u", "hiking weekend", limit=5, config=cfg)
    assert added[1].id not in [h.memory.id for h in hits]


async def test_no_context_when_turned_off(store: MemoryStore):
    store.context_chars = 0
    added = await _turns(store)
    hits = await store.search(ORG, "u", "hiking weekend", limit=5, config=SearchConfig(mode="fts"))
    assert added[1].id not in [h.memory.id for h in hits]


def test_search_text_weighs_own_words_over_the_context():
    from app.memory.schema import search_text

    assert search_text("hi there", T0) == "hi there\n1 May 2024"
    doc = search_text("hi there", T0, "how are you")
    assert doc.count("hi there") == 2 and doc.count("how are you") == 1 and "1 May 2024" in doc


async def test_the_turn_itself_ranks_above_its_reply(store: MemoryStore):
    added = await store.add(ORG, "w", [
        NewMemory(content="I adopted a greyhound named Pixel.", source_thread_id="s", created_at=T0),
        NewMemory(content="Oh, lovely! How old is Pixel?", source_thread_id="s", created_at=T0 + timedelta(seconds=1)),
        NewMemory(content="Three, and very lazy.", source_thread_id="s", created_at=T0 + timedelta(seconds=2)),
    ])
    hits = await store.search(ORG, "w", "greyhound adopted", limit=3, config=SearchConfig(mode="fts"))
    assert [h.memory.id for h in hits][:2] == [added[0].id, added[1].id]


def test_records_without_a_thread_share_context_only_when_dated_alike():
    ms = [_m("s1", None, 0), _m("s2", None, 0), _m("s3", None, 0), _m("later", None, 60)]
    assert previous_in_thread(ms) == ["", "s1", "s2", ""]
