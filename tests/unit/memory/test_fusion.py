"""wsum fusion gets the real dense score of full-text hits outside the dense leg's top candidates."""

from __future__ import annotations

import numpy as np

from app.memory.search import SearchConfig, complete_dense, fuse_wsum
from app.memory.vector_cache import VectorCache
from tests.unit.memory.test_vector_cache import Loader, rows


async def test_similarities_scores_named_ids_only() -> None:
    vecs = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    cache = VectorCache(Loader(rows(vecs, ["a", "b", "c"])))
    got = await cache.similarities("o", "n", np.array([1, 0], dtype=np.float32), ["c", "a", "zzz"])
    assert set(got) == {"a", "c"}
    assert abs(got["a"] - 1.0) < 1e-6 and abs(got["c"] - 2 ** -0.5) < 1e-6
    assert await VectorCache(Loader(rows(vecs, ["a", "b", "c"])), max_bytes=0).similarities(
        "o", "n", np.array([1, 0], dtype=np.float32), ["a"]) is None


async def test_complete_dense_fills_in_missing_fts_hits() -> None:
    fts = [({"id": "x"}, 30.0), ({"id": "y"}, 10.0)]
    dense = [({"id": "y"}, 0.9)]
    asked: list[list[str]] = []

    async def scores(ids):
        asked.append(list(ids))
        return {"x": 0.5}

    out = await complete_dense(fts, dense, scores)
    assert asked == [["x"]]
    assert sorted((r["id"], s) for r, s in out) == [("x", 0.5), ("y", 0.9)]
    # x now gets its dense share too, so it ranks above what it would have without the fill-in
    cfg = SearchConfig(w_dense=1.0)
    before = dict((r["id"], s) for r, s in fuse_wsum(fts, dense, cfg))
    after = dict((r["id"], s) for r, s in fuse_wsum(fts, out, cfg))
    assert after["x"] > before["x"] and after["y"] == before["y"]


async def test_complete_dense_without_scores_keeps_dense() -> None:
    dense = [({"id": "y"}, 0.9)]

    async def none(ids):
        return None

    assert await complete_dense([({"id": "x"}, 3.0)], dense, none) == dense
    assert await complete_dense([({"id": "y"}, 3.0)], dense, none) == dense


def test_sat2_keeps_weak_matches_small_and_strong_ones_high() -> None:
    from app.memory.search import bm25_unit

    sat, sat2 = SearchConfig(bm25_curve="sat"), SearchConfig()
    assert sat2.bm25_curve == "sat2" and bm25_unit(0.0, sat2) == 0.0
    assert bm25_unit(5.0, sat2) < 0.06 < 0.2 == bm25_unit(5.0, sat)  # a one-common-word match
    assert bm25_unit(60.0, sat2) > 0.89 > bm25_unit(60.0, sat) - 0.0 >= 0.75
    # a weak lexical match no longer beats a good semantic one under the default weights
    fts = [({"id": "weak"}, 5.0)]
    dense = [({"id": "semantic"}, 0.7), ({"id": "weak"}, 0.15)]
    assert fuse_wsum(fts, dense, sat2)[0][0]["id"] == "semantic"
    assert fuse_wsum(fts, dense, SearchConfig(bm25_curve="sat", w_dense=0.25))[0][0]["id"] == "weak"


def test_bad_curve_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError):
        SearchConfig(bm25_curve="cubic")  # type: ignore[arg-type]
