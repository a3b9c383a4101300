"""Retrieval over the memories table: full-text (Lance native BM25), dense (flat or ANN
cosine search over the embedder's vectors), and hybrids of the two.

Every leg is a LanceDB query with the tenant filter as a *prefilter* (``where`` before
``limit``): a tenant never sees -- or is ranked against -- another tenant's rows (BM25
statistics are still table-wide). Superseded memories are dropped after the index search
(see `run_search`). The fusion modes run both legs concurrently, ``candidates`` hits each.

Modes (`SearchConfig.mode`) and the scale of the score they return (higher = better):

``fts``     BM25 ``_score`` from Lance's native inverted index (>= 0, unbounded).
``dense``   cosine similarity, [-1, 1].
``hybrid``  LanceDB's own hybrid query with its ``RRFReranker(K=rrf_k)`` (``_relevance_score``).
``rrf``     reciprocal rank fusion done here: ``sum_leg w_leg / (rrf_k + rank_leg)``.
``wsum``    weighted sum of per-leg scores mapped to [0, 1] (BM25 ``s^2 / (s^2 + bm25_c^2)``, see `bm25_unit`;
            cosine ``(cos - cos_floor) / (1 - cos_floor)`` clipped), divided by the sum of
            the weights, so the result is in [0, 1]; a hit found by one leg only gets 0
            from the other.

The default -- ``wsum`` with BM25 mapped by ``s^2 / (s^2 + 20^2)``, ``cos_floor=0.1``,
``w_dense=0.5``, question stop words dropped from the FTS query, 50 candidates per leg (a full-text
hit outside the dense top 50 still gets its real cosine, `complete_dense`), then (`app.memory.rescore`)
0.2 of the hit's thread score added (`app.memory.threads`), questions and memories under 30 words scaled
down (`app.memory.priors`), 0.2 of the best thread neighbour's score added to each hit
(`app.memory.neighbours`), FTS on ``search_text``
(content + date + the previous memory of the thread, see `app.memory.context`) -- was chosen on
LoCoMo conversations 0-4 (``scripts/bench_locomo.py``) and checked on conversations 5-9 and on the
synthetic set (``scripts/bench_retrieval.py``); see docs/benchmarks.md ("LoCoMo").
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import msgspec
import numpy as np

from app.memory.rescore import rescore
from app.storage.filters import and_, current_filter

SearchMode = Literal["fts", "dense", "hybrid", "rrf", "wsum"]
MODES: tuple[str, ...] = ("fts", "dense", "hybrid", "rrf", "wsum")

# Interrogatives, pronouns and auxiliaries that questions are made of but stored memories
# rarely share in a useful way. Lance's English tokenizer already drops the Lucene stop
# words ("the", "of", "is", ...); this list is applied to *queries* only (``preprocess``).
QUESTION_STOP_WORDS = frozenset(
    """
    what whats what's which who whom whose when where why how
    i me my mine myself we us our ours you your yours he him his she her hers it its they them
    their do does did done doing am is are was were be been being have has had having
    can could would should will shall may might must
    a an the of to in on at for from by with about as into and or but not no
    this that these those there here any some ever again
    tell remind recall remember know say said mention mentioned
    """.split()
)

_WORD = re.compile(r"[\w']+", re.UNICODE)


class SearchConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How `MemoryStore.search` retrieves. The default is the benchmark's pick."""

    mode: SearchMode = "wsum"
    # FTS column: "search_text" (content + the memory's date in words) or "content".
    fts_column: str = "search_text"
    # Candidates fetched per leg before fusion (fusion modes only); at least ``limit``.
    candidates: int = 50
    rrf_k: float = 60.0
    w_fts: float = 1.0
    w_dense: float = 0.5
    # wsum normalisation constants (tuned on the "tune" split, see docs/benchmarks.md).
    bm25_c: float = 20.0
    # How BM25 is mapped to [0, 1] (`bm25_unit`): "sat" s/(s+c), "sat2" s^2/(s^2+c^2).
    bm25_curve: Literal["sat", "sat2"] = "sat2"
    cos_floor: float = 0.1
    # "none" or "questions" (drop QUESTION_STOP_WORDS from the FTS query text).
    preprocess: Literal["none", "questions"] = "questions"
    # wsum only: share of the best thread neighbour's score added to each hit (`app.memory.neighbours`).
    neighbour_weight: float = 0.2
    # wsum only: share of the thread's score (its best ``thread_top`` fused scores summed, / thread_top)
    # added to each hit (`app.memory.threads`).
    thread_weight: float = 0.2
    thread_top: int = 2
    # wsum only: a hit's own score times (1 - question_penalty) when it is a question, and times
    # (1 - short_penalty * (1 - words / short_words)) when it has fewer than short_words words (`app.memory.priors`).
    question_penalty: float = 0.2
    short_penalty: float = 0.2
    short_words: int = 30

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"search mode must be one of {MODES}, not {self.mode!r}")
        if self.preprocess not in ("none", "questions"):
            raise ValueError("preprocess must be 'none' or 'questions'")
        if not 0.0 <= self.neighbour_weight <= 1.0:
            raise ValueError("neighbour_weight must be in [0, 1]")
        if not (0.0 <= self.question_penalty <= 1.0 and 0.0 <= self.short_penalty <= 1.0):
            raise ValueError("question_penalty and short_penalty must be in [0, 1]")
        if self.thread_weight < 0 or self.thread_top < 1 or self.short_words < 1:
            raise ValueError("thread_weight must be >= 0, thread_top and short_words >= 1")
        if self.bm25_curve not in ("sat", "sat2"):
            raise ValueError("bm25_curve must be 'sat' or 'sat2'")
        if self.fts_column not in ("search_text", "content"):
            raise ValueError("fts_column must be 'search_text' or 'content'")

    @property
    def needs_vectors(self) -> bool:
        return self.mode != "fts"


def preprocess_query(text: str, how: str) -> str:
    if how == "none":
        return text
    words = [w for w in _WORD.findall(text) if w.lower() not in QUESTION_STOP_WORDS]
    # Never turn a query into nothing: fall back to the raw text.
    return " ".join(words) if words else text


Row = dict[str, Any]
Hit = tuple[Row, float]
Where = str


def _rows(tbl) -> list[Row]:
    return tbl.to_pylist()


async def fts_leg(table, text: str, where: Where, k: int, column: str, select: Sequence[str]) -> list[Hit]:
    """BM25 hits, best first. Lance searches rows not yet in the inverted index with a flat
    scan (and, because ``columns`` is given, works even before any FTS index exists)."""
    if not text.strip():
        return []
    q = (
        table.query()
        .nearest_to_text(text, columns=column)
        .where(where)
        .select([*select, "_score"])
        .limit(k)
    )
    rows = _rows(await q.to_arrow())
    return [(r, float(r.pop("_score"))) for r in rows]


async def dense_leg(table, vector: np.ndarray, where: Where, k: int, select: Sequence[str], **opts: Any) -> list[Hit]:
    """Cosine-similarity hits, best first (score = 1 - cosine distance)."""
    q = (
        table.query()
        .nearest_to(np.asarray(vector, dtype=np.float32))
        .column("vector")
        .distance_type("cosine")
        .where(where)
        .select([*select, "_distance"])
        .limit(k)
    )
    if opts.get("nprobes"):
        q = q.nprobes(int(opts["nprobes"]))
    if opts.get("refine_factor"):
        q = q.refine_factor(int(opts["refine_factor"]))
    rows = _rows(await q.to_arrow())
    return [(r, 1.0 - float(r.pop("_distance"))) for r in rows]


async def lancedb_hybrid(
    table, text: str, vector: np.ndarray, where: Where, k: int, column: str, select: Sequence[str], rrf_k: float
) -> list[Hit]:
    from lancedb.rerankers import RRFReranker

    q = (
        table.query()
        .nearest_to(np.asarray(vector, dtype=np.float32))
        .column("vector")
        .distance_type("cosine")
        .nearest_to_text(text, columns=column)
        .where(where)
        .select(list(select))  # (Lance logs a deprecation WARN per query for this; harmless)
        .rerank(RRFReranker(K=int(rrf_k)))
        .limit(k)
    )
    rows = _rows(await q.to_arrow())
    out = []
    for r in rows:
        s = float(r.pop("_relevance_score"))
        for extra in ("_score", "_distance", "_rowid"):
            r.pop(extra, None)
        out.append((r, s))
    return out


def fuse_rrf(legs: Sequence[tuple[list[Hit], float]], k: float) -> list[Hit]:
    score: dict[str, float] = {}
    row: dict[str, Row] = {}
    for hits, w in legs:
        for rank, (r, _s) in enumerate(hits, 1):
            score[r["id"]] = score.get(r["id"], 0.0) + w / (k + rank)
            row.setdefault(r["id"], r)
    return sorted(((row[i], s) for i, s in score.items()), key=lambda h: (-h[1], h[0]["id"]))


def bm25_unit(s: float, cfg: SearchConfig) -> float:
    """A BM25 score mapped to [0, 1): ``s / (s + c)`` ("sat"), or ``s^2 / (s^2 + c^2)`` ("sat2"), which
    keeps a weak match (one common word, s << c) near 0 while a strong one still nears 1: a chance match
    on "called" or "name" then cannot outweigh the dense leg, a match on rare words still can."""
    if s <= 0:
        return 0.0
    if cfg.bm25_curve == "sat2":
        return s * s / (s * s + cfg.bm25_c * cfg.bm25_c)
    return s / (s + cfg.bm25_c)


def dense_unit(cos: float, cfg: SearchConfig) -> float:
    """A cosine similarity mapped to [0, 1]: ``(cos - cos_floor) / (1 - cos_floor)``, clipped."""
    span = 1.0 - cfg.cos_floor
    return min(1.0, max(0.0, (cos - cfg.cos_floor) / span)) if span > 0 else float(cos > cfg.cos_floor)


def fuse_wsum(fts: list[Hit], dense: list[Hit], cfg: SearchConfig) -> list[Hit]:
    wsum = cfg.w_fts + cfg.w_dense
    score: dict[str, float] = {}
    row: dict[str, Row] = {}
    for r, s in fts:
        score[r["id"]] = score.get(r["id"], 0.0) + cfg.w_fts * bm25_unit(s, cfg)
        row.setdefault(r["id"], r)
    for r, s in dense:
        score[r["id"]] = score.get(r["id"], 0.0) + cfg.w_dense * dense_unit(s, cfg)
        row.setdefault(r["id"], r)
    return sorted(((row[i], s / wsum) for i, s in score.items()), key=lambda h: (-h[1], h[0]["id"]))


async def complete_dense(fts: list[Hit], dense: list[Hit],
                         scores: Callable[[Sequence[str]], Awaitable[dict[str, float] | None]]) -> list[Hit]:
    """``dense`` plus, for each full-text hit it lacks, that row with its cosine similarity from
    ``scores(ids)`` (rows it cannot score are left out, i.e. get 0 from the dense leg as before).
    Without it, a memory ranked 51st by cosine counts as cosine 0 beside one ranked 50th."""
    have = {r["id"] for r, _ in dense}
    missing = {r["id"]: r for r, _ in fts if r["id"] not in have}
    if not missing:
        return dense
    found = await scores(list(missing))
    if not found:
        return dense
    return dense + [(missing[i], s) for i, s in found.items() if i in missing]


async def _post_filtered(run: Callable[[int], Awaitable[list[Hit]]], k: int, keep: Callable[[Row], bool] | None) -> list[Hit]:
    """Run a leg for ``k`` hits that satisfy ``keep``. Over-fetches a little and, in the rare
    case that too many hits were dropped, asks again for more."""
    if keep is None:
        return await run(k)
    fetch = k + max(8, k // 2)
    while True:
        hits = await run(fetch)
        kept = [h for h in hits if keep(h[0])]
        if len(kept) >= k or len(hits) < fetch or fetch >= MAX_FETCH:
            return kept[:k]
        fetch *= 4


MAX_FETCH = 2000


def _is_current(row: Row) -> bool:
    return row.get("state") == "current"


async def run_search(
    table,
    cfg: SearchConfig,
    query: str,
    where: Where,
    limit: int,
    select: Sequence[str],
    embed_query: Callable[[str], Awaitable[np.ndarray]] | None,
    *,
    current_only: bool = True,
    decode: Callable[[Row], Row] | None = None,
    ann_opts: dict[str, Any] | None = None,
    dense_search: Callable[[np.ndarray, int], Awaitable[list[Hit] | None]] | None = None,
    dense_scores: Callable[[np.ndarray, Sequence[str]], Awaitable[dict[str, float] | None]] | None = None,
    neighbourhood: Callable[[np.ndarray, Sequence[str]], Awaitable[Any]] | None = None,
) -> list[Hit]:
    """Run one search in the given mode; returns up to ``limit`` (row, score), best first.

    ``where`` is the tenant prefilter (SQL). ``dense_search(vector, n)``, when given, answers the dense leg
    from memory (rows with the ``select``ed columns, cosine similarity) or returns None to use LanceDB. ``current_only`` drops superseded memories
    *after* the index search instead of adding ``state = 'current'`` to the prefilter:
    with only the BTree-indexed tenant equality in the prefilter Lance needs no extra read
    of the ``state`` column for every row of the tenant (a third of the latency at 1M rows,
    see docs/benchmarks.md); superseded rows are few, and the legs over-fetch to cover them.
    ``dense_scores(vector, ids)``, when given, returns the cosine similarity of the named rows (or None):
    ``wsum`` uses it to give full-text hits that the dense leg's top ``candidates`` missed their real
    dense score instead of 0 (`complete_dense`). ``neighbourhood(vector, ids)``, when given, returns the
    thread links and neighbour rows of `VectorCache.neighbourhood` (or None) for neighbour smoothing.
    """
    ann_opts = ann_opts or {}
    if limit <= 0 or not query or not query.strip():
        return []
    if decode is None and "state" not in select:
        select = [*select, "state"]
    keep = _is_current if current_only else None
    text = preprocess_query(query, cfg.preprocess)

    def decoded(leg: Awaitable[list[Hit]]) -> Awaitable[list[Hit]]:
        if decode is None:
            return leg

        async def run() -> list[Hit]:
            return [(decode(r), s) for r, s in await leg]

        return run()

    def fts(k: int) -> Awaitable[list[Hit]]:
        return _post_filtered(lambda n: decoded(fts_leg(table, text, where, n, cfg.fts_column, select)), k, keep)

    async def dense_n(vec: np.ndarray, n: int) -> list[Hit]:
        if dense_search is not None:  # in-memory vectors of the namespace, when it has them
            hits = await dense_search(vec, n)
            if hits is not None:
                return hits
        return await dense_leg(table, vec, where, n, select, **ann_opts)

    def dense_k(vec: np.ndarray, k: int) -> Awaitable[list[Hit]]:
        return _post_filtered(lambda n: decoded(dense_n(vec, n)), k, keep)

    if cfg.mode == "fts" or embed_query is None:
        return await fts(limit)
    if cfg.mode == "dense":
        return await dense_k(await embed_query(query), limit)
    k = max(limit, cfg.candidates)
    if cfg.mode == "hybrid":
        vec = await embed_query(query)
        w = and_(where, current_filter()) if current_only else where
        hits = await decoded(lancedb_hybrid(table, text, vec, w, k, cfg.fts_column, select, cfg.rrf_k))
        return hits[:limit]

    query_vector: list[np.ndarray] = []

    async def dense() -> list[Hit]:
        query_vector.append(await embed_query(query))
        return await dense_k(query_vector[0], k)

    fts_hits, dense_hits = await asyncio.gather(fts(k), dense())
    if cfg.mode == "wsum" and dense_scores is not None:
        dense_hits = await complete_dense(fts_hits, dense_hits, lambda ids: dense_scores(query_vector[0], ids))
    if cfg.mode == "rrf":
        fused = fuse_rrf([(fts_hits, cfg.w_fts), (dense_hits, cfg.w_dense)], cfg.rrf_k)
    else:
        fused = fuse_wsum(fts_hits, dense_hits, cfg)
        if decode is not None:  # thread score, form priors, neighbour smoothing (`app.memory.rescore`)
            wsum = cfg.w_fts + cfg.w_dense
            fused = await rescore(fused, cfg, limit, None if neighbourhood is None else
                                  lambda ids: neighbourhood(query_vector[0], ids), decode, keep,
                                  lambda cos: cfg.w_dense * dense_unit(cos, cfg) / wsum)
    return fused[:limit]
