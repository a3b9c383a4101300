"""Form priors (`app.memory.priors`) and the thread score (`app.memory.threads`), alone and through a store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.memory.models import NewMemory
from app.memory.neighbours import smooth
from app.memory.priors import asks, brevity, own_weight
from app.memory.search import SearchConfig
from app.memory.store import MemoryStore
from app.memory.threads import boost, thread_scores
from tests.unit.memory.test_store import HashEmbedder

T0 = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
PLAIN = {"neighbour_weight": 0.0, "thread_weight": 0.0, "question_penalty": 0.0, "short_penalty": 0.0}


@pytest.mark.parametrize(("text", "expected"), [
    ("Did you ever finish the quilt?", 1.0),
    ('Anna said, "Where did you go?" [shares a photo of a lake]', 1.0),  # a clause after it does not hide it
    ("Really? Yes, we went twice.", 0.0),  # the last sentence tells
    ("We went to the lake!", 0.0),
    ("no punctuation at all", 0.0),
    ("", 0.0),
])
def test_asks_reads_the_last_sentence(text, expected):
    assert asks(text) == expected


def test_brevity_and_own_weight():
    assert brevity("one two three four five", 20) == pytest.approx(0.75)
    assert brevity(" ".join(["word"] * 25), 20) == 0.0
    assert brevity("", 20) == 1.0
    assert own_weight("Did you go?", 0.2, 0.0, 20) == pytest.approx(0.8)
    assert own_weight("Did you go?", 0.2, 0.2, 20) == pytest.approx(0.8 * (1 - 0.2 * (1 - 3 / 20)))
    assert own_weight("Did you go?", 0.0, 0.0, 20) == 1.0


def test_smooth_scales_only_the_hits_own_score():
    """A penalised question still lends its full score to the answer next to it."""
    fused = [({"id": "q"}, 0.8), ({"id": "a"}, 0.5)]
    links = {"q": (None, "a"), "a": ("q", None)}
    assert [r["id"] for r, _ in smooth(fused, links, {}, 0.2)] == ["q", "a"]
    out = dict((r["id"], s) for r, s in smooth(fused, links, {}, 0.2, {"q": 0.5}))
    assert out["a"] == pytest.approx((0.5 + 0.2 * 0.8) / 1.2) and out["q"] == pytest.approx((0.4 + 0.2 * 0.5) / 1.2)
    assert out["a"] > out["q"]


def test_thread_scores_and_boost():
    key = lambda r: r["t"]  # noqa: E731
    fused = [({"id": "x", "t": "lone"}, 0.6), ({"id": "a", "t": "s"}, 0.55), ({"id": "b", "t": "s"}, 0.5)]
    keys = [key(r) for r, _ in fused]
    assert thread_scores(fused, keys, 2) == pytest.approx({"lone": 0.3, "s": 0.525})
    assert thread_scores(fused, keys, 1) == pytest.approx({"lone": 0.6, "s": 0.55})
    assert [r["id"] for r, _ in boost(fused, key, 0.5, 2)] == ["a", "b", "x"]  # two good hits beat one
    assert boost(fused, key, 0.0, 2) == fused


async def _store(tmp_path, memories: list[tuple[str, str]]) -> MemoryStore:
    store = await MemoryStore.open(str(tmp_path / "db"), HashEmbedder())
    store.context_chars = 0
    await store.add("o", "n", [NewMemory(content=text, source_thread_id=thread, created_at=T0 + timedelta(seconds=i))
                               for i, (text, thread) in enumerate(memories)])
    return store


@pytest.mark.parametrize(("memories", "query", "prior", "first_off", "first_on"), [
    ([("Where did you buy the blue bicycle?", "s1"),
      ("I had to buy the blue bicycle from a small shop by the harbour, second hand and cheap.", "s2"),
      ("The weather is nice today and the garden looks great after the rain.", "s3")],
     "where did you buy the blue bicycle", {"question_penalty": 0.8}, "Where", "I had"),
    ([("Lemon cake, yum!", "s1"),
      ("My grandmother baked a lemon cake for every birthday we had at the old farmhouse in the hills.", "s2")],
     "lemon cake", {"short_penalty": 0.8}, "Lemon", "My grandmother"),
])
async def test_store_prior_puts_the_telling_memory_first(tmp_path, memories, query, prior, first_off, first_on):
    store = await _store(tmp_path, memories)
    try:
        off = await store.search("o", "n", query, limit=2, config=SearchConfig(**PLAIN))
        on = await store.search("o", "n", query, limit=2, config=SearchConfig(**{**PLAIN, **prior}))
        assert off[0].memory.content.startswith(first_off) and on[0].memory.content.startswith(first_on)
    finally:
        await store.close()


async def test_store_thread_score_lifts_a_memory_of_the_matching_session(tmp_path):
    store = await _store(tmp_path, [
        ("We drove to the coast for the kite festival.", "trip"),
        ("The kite festival had a dragon kite as long as a bus.", "trip"),
        ("Parking at the festival was a nightmare, we walked a mile.", "trip"),
        ("My neighbour flies a kite at the festival in the park near the school every single autumn.", "home"),
    ])
    try:
        query = "kite festival parking"
        base = await store.search("o", "n", query, limit=4, config=SearchConfig(**PLAIN))
        boosted = await store.search("o", "n", query, limit=4, config=SearchConfig(**{**PLAIN, "thread_weight": 0.5}))
        assert "neighbour" in base[1].memory.content  # the other session's memory is second without it
        assert [h.memory.source_thread_id for h in boosted] == ["trip", "trip", "trip", "home"]
    finally:
        await store.close()
