"""Conversational context for the full-text index: each memory's FTS document (``search_text``) also
carries the text of the memory said just before it in the same thread.

Why: in a conversation the words of a question and of its answer are split over turns ("Where did
you go last weekend?" / "We finally made it to the lake!"), and a short reply ("Yes, twice!") shares
no word with a later query about it. Indexing each turn together with the turn before it lets BM25
find the reply through the words of the turn it answers, while search still returns the single memory
(its ``content`` is unchanged; only the FTS document grows). Measured on LoCoMo (docs/benchmarks.md,
"LoCoMo"): R@10 of full-text search 65 -> 74.

Only memories written in the same `MemoryStore.add` call are linked (an import batch, or one commit of a
conversation): the neighbour of a memory is the one before it in the batch with the same
``source_thread_id`` (`thread_key`: without one, the same creation time), in ``created_at`` order (ties
keep the batch order). The context is capped at `CONTEXT_MAX_CHARS` (its tail: the words nearest the turn).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.memory.models import Memory

#: At most this many characters of the previous memory go into a memory's FTS document.
CONTEXT_MAX_CHARS = 400


def thread_key(memory: Memory) -> str:
    """The memory's thread: its ``source_thread_id``; without one, its exact creation time -- records of
    one dated session imported together (all ``createdAt`` alike) are one thread, and memories written
    one by one (each at its own moment) are never linked."""
    return memory.source_thread_id or f"@{memory.created_at.isoformat()}"


def previous_in_thread(memories: Sequence[Memory], max_chars: int = CONTEXT_MAX_CHARS) -> list[str]:
    """For each memory (same order as given): the content of the memory before it in the same thread
    within ``memories`` (by ``created_at``, then position), cut to its last ``max_chars`` characters;
    ``""`` when there is none."""
    out = [""] * len(memories)
    if max_chars <= 0:
        return out
    order = sorted(range(len(memories)), key=lambda i: (memories[i].created_at, i))
    last: dict[str, int] = {}
    for i in order:
        thread = thread_key(memories[i])
        j = last.get(thread)
        if j is not None:
            text = " ".join(memories[j].content.split())
            out[i] = text[-max_chars:]
        last[thread] = i
    return out
