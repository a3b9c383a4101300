"""Group commit for the committer's LanceDB writes: concurrent commits' rows go into one write.

A commit makes several small writes (claim, saved facts, done, the turn log's mark); each costs a LanceDB
version (manifest, fragment, read-back) whatever its size, so while several commits run, their rows of the
same kind are written together. `WriteBatcher.submit` queues a row and waits for the write that carries it:
the first caller to find no write of this kind running writes everything queued (up to ``max_batch``); rows
queued meanwhile go with the next write. No background task and no timer: a lone row is written at once,
and batches grow only as far as writes are already waiting (the lane, the table). ``max_batch=1`` writes
each row on its own (the behaviour before batching; `scripts/bench_commits.py` compares the two).

Each write takes a slot of the committer's write lane. It runs shielded from cancellation: other callers'
rows ride on it, so it finishes (and each caller gets its own outcome) even if the caller that started it is
cancelled. An error fails every row of that write; the callers handle it as they would their own write's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[R]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class WriteBatcher(Generic[T, R]):
    def __init__(self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, lane: anyio.CapacityLimiter,
                 max_batch: int = 64) -> None:
        """``write(items)`` returns one result per item, in order."""
        self._write = write
        self._lane = lane
        self.max_batch = max(1, int(max_batch))
        self._queue: list[tuple[T, _Slot[R]]] = []
        self._writer = anyio.Lock()  # one write of this kind at a time: it carries everything queued
        self.writes = 0
        self.rows = 0

    async def submit(self, item: T) -> R:
        slot: _Slot[R] = _Slot()
        self._queue.append((item, slot))
        async with self._writer:
            if not slot.done:  # no earlier write carried it: this caller writes what is queued
                batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
                with anyio.CancelScope(shield=True):
                    await self._run(batch)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    async def _run(self, batch: list[tuple[T, _Slot[R]]]) -> None:
        try:
            async with self._lane:
                results = list(await self._write([item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"a batched write returned {len(results)} results for {len(batch)} rows")
        except Exception as exc:
            for _, slot in batch:
                slot.error, slot.done = exc, True
            return
        self.writes += 1
        self.rows += len(batch)
        for (_, slot), result in zip(batch, results, strict=True):
            slot.result, slot.done = result, True
