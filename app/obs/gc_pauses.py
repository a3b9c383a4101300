"""How long CPython's garbage collector holds the process, by generation (``memchat_gc_pause_seconds``).

A collection runs inside whatever code allocated the object that tipped a generation over its threshold: on
the event loop, that is some request's step, and a full (generation 2) collection walks every tracked object
that is not frozen -- under a burst of new users, the requests in flight. The loop-lag probe and the
slow-callback report see such a pause as "a request step took 120 ms"; this module says whether it was the
collector.

`GcPauses` is a ``gc.callbacks`` hook. It must not take a lock (a collection can start while any thread holds
one, a metric's included) and must not allocate much, so it only appends ``(generation, seconds)`` to a
bounded deque; `GcPauses.drain` hands them to a histogram later, from ordinary code (the app drains them
from its loop-lag probe). No nested collection can run inside the hook: CPython marks itself as collecting
for the whole pass, its callbacks included.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable
from typing import Any

PENDING_LIMIT = 4096  # pauses kept between drains; the oldest are dropped past it (and counted in `dropped`)


class GcPauses:
    """Times every collection of this process; `install` adds the hook, the returned callable removes it."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, limit: int = PENDING_LIMIT) -> None:
        self._clock = clock
        self._started: float | None = None  # None: no collection seen starting since the hook was added
        self._pending: deque[tuple[int, float]] = deque(maxlen=limit)
        self.recorded = 0
        self._drained = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        if self._started is None:  # the hook came in while a pass (another thread's) was running
            return
        self.recorded += 1
        self._pending.append((info["generation"], self._clock() - self._started))
        self._started = None

    def install(self) -> Callable[[], None]:
        gc.callbacks.append(self)

        def remove() -> None:
            if self in gc.callbacks:
                gc.callbacks.remove(self)

        return remove

    def drain(self, observe: Callable[[int, float], None]) -> int:
        """Pass every pause recorded since the last drain to ``observe(generation, seconds)``; how many."""
        drained = 0
        while self._pending:
            generation, seconds = self._pending.popleft()
            observe(generation, seconds)
            drained += 1
        self._drained += drained
        return drained

    @property
    def dropped(self) -> int:
        """Pauses recorded but never drained (more than the deque's limit came between two drains)."""
        return self.recorded - len(self._pending) - self._drained
