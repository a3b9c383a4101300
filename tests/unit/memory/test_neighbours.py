"""Neighbour smoothing (`app.memory.neighbours`): thread order, re-scoring, and through a real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from app.memory.models import NewMemory
from app.memory.neighbours import ThreadOrder, smooth
from app.memory.search import SearchConfig
from app.memory.store import MemoryStore
from app.memory.vector_cache import VectorCache
from tests.unit.memory.test_store import HashEmbedder
from tests.unit.memory.test_vector_cache import Loader, rows

T0 = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)


def test_thread_order_links_rows_of_a_thread_by_time():
    order = ThreadOrder(["a", "b", "a", None, "a", "b"], [30, 5, 10, 0, 20, 1])
    # thread a by time: pos 2 (10), pos 4 (20), pos 0 (30); thread b: pos 5 (1), pos 1 (5)
    assert order.around(2) == (-1, 4) and order.around(4) == (2, 0) and order.around(0) == (4, -1)
    assert order.around(5) == (-1, 1) and order.around(1) == (5, -1)
    assert order.around(3) == (-1, -1)  # no thread: no neighbours


def test_smooth_lifts_neighbours_of_strong_hits():
    fused = [({"id": "hit"}, 0.8), ({"id": "far"}, 0.3), ({"id": "reply"}, 0.25)]
    links = {"hit": (None, "reply"), "reply": ("hit", "after"), "far": (None, None), "after": ("reply", None)}
    out = smooth(fused, links, {"after": ({"id": "after"}, 0.05)}, 0.5)
    ids = [r["id"] for r, _ in out]
    assert ids[:2] == ["hit", "reply"] and "after" in ids
    assert dict((r["id"], s) for r, s in out)["far"] == 0.3 / 1.5
    assert smooth(fused, links, {}, 0.0) == fused


async def test_neighbourhood_needs_thread_columns():
    vecs = np.eye(3, dtype=np.float32)
    plain = VectorCache(Loader(rows(vecs, ["a", "b", "c"])))
    assert await plain.neighbourhood("o", "n", vecs[0], ["a"]) is None
    table = rows(vecs, ["a", "b", "c"]).append_column("source_thread_id", [["t", "t", "t"]]).append_column(
        "created_at", [[1, 2, 3]])
    cache = VectorCache(Loader(table))
    links, extra = await cache.neighbourhood("o", "n", vecs[1], ["b"])
    assert links["b"] == ("a", "c") and links["a"] == (None, "b") and set(extra) == {"a", "c"}
    assert extra["a"][0] == {"payload": "a"} and abs(extra["a"][1]) < 1e-6


async def test_store_returns_the_reply_next_to_a_strong_hit(tmp_path):
    store = await MemoryStore.open(str(tmp_path / "db"), HashEmbedder())
    store.context_chars = 0  # the reply shares no word with the query: only smoothing can bring it
    try:
        turns = ["Did you ever finish the quilt for your sister?", "Yes! Took me three whole months.",
                 "The weather is nice today.", "I bought new running shoes.", "My quilt group meets Fridays."]
        await store.add("o", "n", [NewMemory(content=t, source_thread_id="s1" if i < 2 else f"x{i}",
                                             created_at=T0 + timedelta(seconds=i)) for i, t in enumerate(turns)])
        hits = await store.search("o", "n", "quilt sister finish", limit=2, config=SearchConfig(neighbour_weight=1.0))
        assert {h.memory.content for h in hits} == set(turns[:2])
        assert all(0.0 <= h.score <= 1.0 for h in hits)
        off = await store.search("o", "n", "quilt sister finish", limit=2, config=SearchConfig(neighbour_weight=0.0))
        assert [h.memory.content for h in off] == [turns[0], turns[4]]
    finally:
        await store.close()


def test_empty_thread_id_means_no_thread():
    order = ThreadOrder(["", "", "t", "t"], [1, 2, 3, 4])
    assert order.around(0) == (-1, -1) and order.around(1) == (-1, -1) and order.around(3) == (2, -1)


async def test_appended_rows_join_the_thread_order():
    vecs = np.eye(3, dtype=np.float32)
    table = rows(vecs[:2], ["a", "b"]).append_column("source_thread_id", [["t", "t"]]).append_column(
        "created_at", [[1, 2]])
    cache = VectorCache(Loader(table))
    await cache.search("o", "n", vecs[0], 1)  # loaded
    cache.appended("o", "n", ["c"], vecs[2:], ["c"], ["t"], [3])
    links, _ = await cache.neighbourhood("o", "n", vecs[0], ["c"])
    assert links["c"] == ("b", None) and links["b"] == ("a", "c")
    cache.appended("o", "n", ["d"], vecs[:1], ["d"])  # no thread info given: the order is dropped
    assert await cache.neighbourhood("o", "n", vecs[0], ["c"]) is None


def test_rows_without_a_thread_created_at_one_moment_are_one_thread():
    """An import of a dated session without thread ids: every record has the session's date."""
    order = ThreadOrder([None, None, "", None, "t"], [7, 7, 7, 9, 7])
    assert order.around(0) == (-1, 1) and order.around(1) == (0, 2) and order.around(2) == (1, -1)
    assert order.around(3) == (-1, -1) and order.around(4) == (-1, -1)  # another moment; a real thread
