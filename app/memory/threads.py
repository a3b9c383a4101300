"""Thread-level scoring: a hit gains a share of how well its whole thread (a conversation session) matches.

After fusion, each thread's score is the sum of the best ``top`` fused scores among the candidates of that
thread divided by ``top`` (a thread with one good hit counts less than one with several); every candidate's
score becomes ``(s + weight * thread_score) / (1 + weight)``. A memory of the session the question is about
then outranks an equally good match in an unrelated one. Threads are `app.memory.context.thread_key`:
``source_thread_id``, or, without one, the creation time (memories of one dated session imported together).
Measured on LoCoMo and the synthetic set: docs/benchmarks.md ("LoCoMo").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Row = dict[str, Any]
Hit = tuple[Row, float]


def thread_scores(fused: Sequence[Hit], keys: Sequence[str], top: int) -> dict[str, float]:
    """Per thread: the sum of its ``top`` best scores in ``fused`` (best first; ``keys[i]`` is the thread of
    ``fused[i]``), divided by ``top``."""
    best: dict[str, list[float]] = {}
    for (_, s), key in zip(fused, keys):
        got = best.setdefault(key, [])
        if len(got) < top:
            got.append(s)
    return {k: sum(v) / top for k, v in best.items()}


def boost(fused: Sequence[Hit], key_of: Callable[[Row], str], weight: float, top: int) -> list[Hit]:
    """``fused`` (best first) re-scored with its threads' scores, best first."""
    if weight <= 0 or top <= 0 or not fused:
        return list(fused)
    keys = [key_of(r) for r, _ in fused]  # once per hit: a key may be a formatted timestamp
    ts = thread_scores(fused, keys, top)
    out = [(r, (s + weight * ts[key]) / (1.0 + weight)) for (r, s), key in zip(fused, keys)]
    out.sort(key=lambda h: (-h[1], h[0]["id"]))
    return out
