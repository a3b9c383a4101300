"""Idle-timeout commits: one task in the app's task group owns every conversation's deadline.

Deadline = last activity + ``commit_after``; a new turn pushes it back. The task sleeps in an anyio
cancel scope until the earliest deadline (``move_on_after``) or until a deadline changes, then hands due
conversations to the committer (a few at a time). The turn log is the truth: a deadline is only a hint to
look, and the committer re-checks idleness, so a turn served by another worker simply postpones it.

The backlog is bounded: a due conversation becomes a task only when one of the ``max_concurrent`` slots is
free (the others wait as heap entries, ~100 bytes each), and at most ``max_pending`` conversations are held
here at all. Past that, a new conversation is not tracked (`deferred` counts them): its turns are durable
in the turn log, not yet marked committed, and the sweeper (`app.commits.sweeper`) schedules it on one of
its rounds once there is room -- late, never lost.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from app.commits.committer import ChatKey, Committer, CommitResult
from app.obs.metrics import Metrics
from app.turns.turnlog import TurnRecord

log = logging.getLogger("memchat.scheduler")

SETTLED_MEMORY = 100_000  # conversations remembered as committed (bounds the sweeper's re-checks)
MAX_PENDING = 100_000  # conversations with a deadline held in memory (the rest wait in the turn log)


class CommitStats:
    def __init__(self) -> None:
        self.committed = 0
        self.failed = 0
        self.memories_written = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self.last_latency = 0.0
        self.lag_max = 0.0  # deadline -> done, the longest seen


class CommitScheduler:
    def __init__(self, committer: Committer, *, max_concurrent: int = 4, retry_delay: float = 15.0,
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None,
                 max_pending: int = MAX_PENDING) -> None:
        """``clock``: epoch seconds, the scale of deadlines (injectable, so tests can move time)."""
        self.committer = committer
        self.clock = clock
        self.metrics = metrics
        self.stats = CommitStats()
        self._due: dict[ChatKey, float] = {}
        self._heap: list[tuple[float, int, ChatKey]] = []
        self._counter = 0
        self._wake = anyio.Event()
        self._running: set[ChatKey] = set()
        self._limiter = anyio.CapacityLimiter(max_concurrent)
        self.max_concurrent = max_concurrent
        self.max_pending = max_pending
        self.deferred = 0  # new conversations not tracked because max_pending were (the sweeper finds them)
        self._retry_delay = retry_delay
        self._failures: dict[ChatKey, int] = {}
        # conversation -> when this process last found it fully committed (its own commit, or nothing left)
        self._settled: OrderedDict[ChatKey, float] = OrderedDict()

    @property
    def pending(self) -> int:
        return len(self._due)

    @property
    def committing(self) -> int:
        """Conversations whose commit has started (at most ``max_concurrent``; due ones beyond that wait
        in `pending`)."""
        return len(self._running)

    @property
    def committing_now(self) -> int:
        """Commits holding a slot right now (at most ``max_concurrent``)."""
        return int(self._limiter.borrowed_tokens)

    def touch(self, key: ChatKey, due: float) -> None:
        """Look at ``key`` at ``due`` (epoch seconds); replaces any earlier deadline. A new key is not taken
        while ``max_pending`` are held (see the module's docstring)."""
        if key not in self._due and len(self._due) >= self.max_pending:
            self.deferred += 1
            if self.metrics:
                self.metrics.commits_deferred.inc()
            return
        self._due[key] = due
        self._counter += 1
        heapq.heappush(self._heap, (due, self._counter, key))
        self._wake.set()

    def touch_turn(self, record: TurnRecord) -> None:
        self.touch(ChatKey(record.org_id, record.namespace, record.chat_id),
                   record.created_at.timestamp() + record.commit_after)

    def watching(self, key: ChatKey, last_turn_at: float) -> bool:
        """Whether this process already has ``key`` in hand: a deadline, a commit running, or a commit
        that started after its last turn."""
        if key in self._due or key in self._running:
            return True
        settled = self._settled.get(key)
        return settled is not None and settled > last_turn_at

    def _settle(self, key: ChatKey, at: float) -> None:
        self._settled[key] = at
        self._settled.move_to_end(key)
        while len(self._settled) > SETTLED_MEMORY:
            self._settled.popitem(last=False)

    def _pop_due(self, now: float, room: int) -> list[tuple[ChatKey, float]]:
        ready: list[tuple[ChatKey, float]] = []
        while self._heap and self._heap[0][0] <= now and len(ready) < room:
            due, _, key = heapq.heappop(self._heap)
            if self._due.get(key) != due or key in self._running:
                continue  # superseded by a later touch, or being committed (re-touched after)
            del self._due[key]
            ready.append((key, due))
        return ready

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as commits:
            task_status.started()
            while True:
                for key, due in self._pop_due(self.clock(), self.max_concurrent - len(self._running)):
                    self._running.add(key)
                    commits.start_soon(self._commit, key, due)
                full = len(self._running) >= self.max_concurrent  # woken when a commit ends
                delay = self._heap[0][0] - self.clock() if self._heap and not full else math.inf
                self._wake = anyio.Event()
                with anyio.move_on_after(max(delay, 0.0)):
                    await self._wake.wait()

    async def _commit(self, key: ChatKey, due: float | None = None) -> None:
        """Commit ``key``, whose deadline was ``due`` (epoch seconds): the commit's own time and its lag
        (deadline → done, the wait for a slot included) are observed."""
        started = time.perf_counter()
        started_at = self.clock()
        result: CommitResult | None = None
        try:
            async with self._limiter:
                result = await self.committer.commit(key)
        except Exception:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            self.stats.failed += 1
            if self.metrics:
                self.metrics.commits.labels("failed").inc()
            delay = min(self._retry_delay * 2 ** (failures - 1), 3600)
            log.exception("commit of chat %s failed (attempt %d); retrying in %.0fs", key.chat_id, failures, delay)
            self._running.discard(key)
            self._wake.set()  # a slot is free
            self.touch(key, max(self.clock() + delay, self._due.get(key, 0.0)))
            return
        self._running.discard(key)
        self._wake.set()  # a slot is free
        self._failures.pop(key, None)
        if result.status in ("committed", "nothing"):
            self._settle(key, started_at)
        if result.status == "committed":
            elapsed = time.perf_counter() - started
            self.stats.committed += 1
            self.stats.memories_written += len(result.memories)
            self.stats.latency_sum += elapsed
            self.stats.latency_count += 1
            self.stats.last_latency = elapsed
            lag = max(0.0, self.clock() - due) if due is not None else elapsed
            self.stats.lag_max = max(self.stats.lag_max, lag)
            if self.metrics:
                self.metrics.commits.labels("done").inc()
                self.metrics.commit_seconds.observe(elapsed)
                self.metrics.commit_lag.observe(lag)
                self.metrics.memories_written.inc(len(result.memories))
        if key in self._due:  # touched while committing: its heap entry was skipped, so re-arm it
            self.touch(key, self._due[key])
        elif result.retry_at is not None:
            self.touch(key, result.retry_at)
