"""Memory records as the store hands them out (msgspec Structs, no LanceDB types).

Scores (`ScoredMemory.score`) are always "higher = better" and depend on the retrieval mode
the store searches with (see `app.memory.search.SearchMode`):

* ``fts``    -- Lance BM25 score, >= 0, unbounded (compare only within one query).
* ``dense``  -- cosine similarity of L2-normalised embeddings, in [-1, 1].
* ``rrf`` / ``hybrid`` (LanceDB's RRF) -- reciprocal-rank-fusion sum,
  ``sum_i w_i / (k + rank_i)``; tiny numbers (<= sum(w)/(k+1)).
* ``wsum`` (the default, see docs/benchmarks.md) -- mean of the two legs' scores, each
  mapped to [0, 1]: BM25 ``s`` as ``s / (s + 20)`` and cosine as ``(cos - 0.1) / 0.9``
  clipped to [0, 1]; a memory found by one leg only gets 0 from the other. The result lies
  in [0, 1]; a memory sharing no word with the query and with cosine <= 0.1 scores exactly
  0, so ``score > 0`` means "some evidence of relevance". With MiniLM, clearly relevant
  memories typically score ~0.3-0.6.

`min_score` filters on that same scale.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

Source = Literal["explicit", "conversation"]
State = Literal["current", "superseded"]

def new_id() -> str:
    return str(uuid.uuid4())


class Memory(msgspec.Struct, frozen=True, kw_only=True):
    """One stored memory. ``created_at``/``updated_at`` are timezone-aware UTC datetimes."""

    id: str
    org_id: str
    namespace: str
    content: str
    created_at: datetime
    updated_at: datetime
    source: Source = "conversation"
    source_thread_id: str | None = None
    source_turn_id: str | None = None
    entities: list[str] = msgspec.field(default_factory=list)
    state: State = "current"
    superseded_by: str | None = None


class ScoredMemory(msgspec.Struct, frozen=True, kw_only=True):
    """A search hit. ``score``: higher is better; its scale depends on the search mode
    (documented at the top of this module)."""

    memory: Memory
    score: float


class NewMemory(msgspec.Struct, frozen=True, kw_only=True):
    """Input to `MemoryStore.add`.

    ``id``: pass a deterministic id (e.g. uuid5 of thread/turn) to make a commit idempotent:
    re-adding the same id in the same org/namespace never creates a second row.
    ``created_at``: defaults to "now" (UTC); naive datetimes are taken to be UTC.
    """

    content: str
    source: Source = "conversation"
    source_thread_id: str | None = None
    source_turn_id: str | None = None
    entities: list[str] = msgspec.field(default_factory=list)
    created_at: datetime | None = None
    id: str | None = None
