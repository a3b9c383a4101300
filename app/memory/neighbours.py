"""Neighbour smoothing: a memory next to a strong hit in the same thread gets a share of its score.

In conversations an answer is often spread over consecutive turns ("Did you finish it?" / "Yes, last
Sunday!" / "It took me three months"), and a question matches one of them best. After fusion every
candidate's score becomes ``(s + weight * max(s_prev, s_next)) / (1 + weight)`` where ``s_prev`` and
``s_next`` are the fused scores of the memories just before and after it in its thread
(``source_thread_id``, by ``created_at``; memories without a thread id that were created at the very same
moment -- the turns of one dated session imported together -- count as one thread); a neighbour that no leg returned is scored by its cosine
alone (what `fuse_wsum` would have given it) and can join the results. Measured on LoCoMo
(docs/benchmarks.md, "LoCoMo"): R@5 +3 to +4; on the synthetic set (single-turn facts among unrelated
chit-chat) -1.

The thread order comes from `ThreadOrder`, built from the namespace's rows held by the vector cache
(`app.memory.vector_cache`), so it costs nothing per search beyond a few dictionary look-ups; a
namespace the cache does not hold is not smoothed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Row = dict[str, Any]
Hit = tuple[Row, float]


class ThreadOrder:
    """Previous / next row (positions) of every row in its thread, by time then position."""

    __slots__ = ("prev", "next")

    def __init__(self, threads: pa.Array | Sequence[str | None], times: np.ndarray | Sequence[int]) -> None:
        times = np.asarray(times, dtype=np.int64)
        code = thread_codes(threads)
        untied = code < 0
        if untied.any():  # no thread id: memories created at the very same moment form one (see `thread_key`)
            _, same_time = np.unique(times[untied], return_inverse=True)
            code[untied] = code.max(initial=-1) + 1 + same_time
        n = len(code)
        self.prev = np.full(n, -1, dtype=np.int64)
        self.next = np.full(n, -1, dtype=np.int64)
        if n < 2:
            return
        order = np.lexsort((np.arange(n), times, code))
        a, b = order[:-1], order[1:]
        same = (code[a] == code[b]) & (code[a] >= 0)
        self.prev[b[same]] = a[same]
        self.next[a[same]] = b[same]

    def around(self, pos: int) -> tuple[int, int]:
        return int(self.prev[pos]), int(self.next[pos])


def thread_times(memories: Sequence[Any]) -> tuple[list[str | None], list[int]]:
    """Thread ids and times (microseconds since the epoch, as Arrow stores ``created_at``) of memories,
    for the vector cache's thread order."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return [m.source_thread_id for m in memories], [(m.created_at - epoch) // timedelta(microseconds=1) for m in memories]


def thread_codes(threads: pa.Array | Sequence[str | None]) -> np.ndarray:
    """One integer per distinct thread id (vectorised through Arrow); -1 for no thread (null or "")."""
    arr = threads if isinstance(threads, pa.Array) else pa.array(list(threads), type=pa.string())
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    enc = pc.dictionary_encode(arr)
    codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    empty = [i for i, v in enumerate(enc.dictionary.to_pylist()) if not v]
    if empty:
        codes[np.isin(codes, empty)] = -1
    return codes


def smooth(fused: Sequence[Hit], links: dict[str, tuple[str | None, str | None]],
           extra: dict[str, Hit], weight: float, own: dict[str, float] | None = None) -> list[Hit]:
    """Re-score ``fused`` (best first) with its neighbours' scores (see the module doc). ``links``: id ->
    (previous id, next id) in the thread; ``extra``: neighbours not in ``fused`` with their own score;
    ``own``: id -> factor on that memory's *own* score only (`app.memory.priors`; its neighbours still get
    their share of the unscaled score), 1 for ids it lacks."""
    if (weight <= 0 or not links) and not own:
        return list(fused)
    base: dict[str, float] = {}
    rows: dict[str, Row] = {}
    for r, s in fused:
        base[r["id"]] = s
        rows[r["id"]] = r
    for i, (r, s) in extra.items():
        if i not in base:
            base[i] = s
            rows[i] = r
    out = []
    for i, s in base.items():
        p, n = links.get(i, (None, None))
        near = max(base.get(p, 0.0) if p else 0.0, base.get(n, 0.0) if n else 0.0)
        mine = s * own.get(i, 1.0) if own else s
        out.append((rows[i], (mine + weight * near) / (1.0 + weight)))
    out.sort(key=lambda h: (-h[1], h[0]["id"]))
    return out
