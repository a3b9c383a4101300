"""`app.commits.scheduler`: deadlines fire in order, touches postpone, failures retry (fake clock and committer)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import anyio
import pytest

from app.commits.committer import ChatKey, CommitResult
from app.commits.scheduler import CommitScheduler
from app.turns.turnlog import TurnRecord

A, B, C = ChatKey("org1", "ns", "a"), ChatKey("org1", "ns", "b"), ChatKey("org2", "", "c")
WAKE = ChatKey("wake", "", "never-due")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeCommitter:
    """Structurally a committer: ``commit(key)`` logs the call and plays the next planned outcome
    (a CommitResult, an exception to raise, or an anyio.Event to wait for first)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[ChatKey, float]] = []
        self.plans: dict[ChatKey, list[object]] = {}

    async def commit(self, key: ChatKey) -> CommitResult:
        self.calls.append((key, self.clock()))
        plan = self.plans.get(key) or []
        step = plan.pop(0) if plan else CommitResult("committed")
        if isinstance(step, anyio.Event):
            await step.wait()
            step = CommitResult("committed")
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, CommitResult)
        return step

    @property
    def keys(self) -> list[ChatKey]:
        return [k for k, _ in self.calls]


@asynccontextmanager
async def running(scheduler: CommitScheduler) -> AsyncIterator[None]:
    async with anyio.create_task_group() as group:
        await group.start(scheduler.run)
        yield
        group.cancel_scope.cancel()


async def settle() -> None:
    """Let every ready task run until it waits (no I/O here: a bounded number of loop turns is plenty;
    cheaper than anyio.wait_all_tasks_blocked, which polls every 0.1 s)."""
    for _ in range(100):
        await anyio.sleep(0)


async def at(scheduler: CommitScheduler, clock: Clock, now: float) -> None:
    """Move the clock, wake the scheduler (a touch of a key that is never due), let everything run."""
    clock.now = now
    scheduler.touch(WAKE, 1e12)
    await settle()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def committer(clock: Clock) -> FakeCommitter:
    return FakeCommitter(clock)


async def test_deadlines_fire_in_order(clock: Clock, committer: FakeCommitter) -> None:
    scheduler = CommitScheduler(committer, clock=clock)  # type: ignore[arg-type]
    async with running(scheduler):
        scheduler.touch(A, 30)
        scheduler.touch(B, 10)
        scheduler.touch(C, 20)
        await at(scheduler, clock, 5)
        assert committer.calls == [] and scheduler.pending == 4
        await at(scheduler, clock, 15)
        assert committer.calls == [(B, 15)]
        await at(scheduler, clock, 25)
        assert committer.keys == [B, C]
        await at(scheduler, clock, 35)
        assert committer.keys == [B, C, A]
        await at(scheduler, clock, 1000)
    assert committer.keys == [B, C, A]                    # each once
    assert scheduler.stats.committed == 3 and scheduler.pending == 1   # only the wake-up key is left


async def test_overdue_deadlines_run_earliest_first(clock: Clock, committer: FakeCommitter) -> None:
    scheduler = CommitScheduler(committer, clock=clock)  # type: ignore[arg-type]
    for key, due in ((A, 3), (B, 1), (C, 2)):
        scheduler.touch(key, due)
    clock.now = 100
    async with running(scheduler):
        await settle()
    assert committer.keys == [B, C, A]


async def test_a_touch_postpones_and_an_earlier_touch_advances(clock: Clock, committer: FakeCommitter) -> None:
    scheduler = CommitScheduler(committer, clock=clock)  # type: ignore[arg-type]
    async with running(scheduler):
        scheduler.touch(A, 10)
        scheduler.touch(A, 50)      # new activity: look later
        scheduler.touch(B, 50)
        scheduler.touch(B, 5)       # a deadline can also move earlier
        await at(scheduler, clock, 20)
        assert committer.keys == [B]
        await at(scheduler, clock, 49)
        assert committer.keys == [B]
        await at(scheduler, clock, 50)
        assert committer.keys == [B, A]
        await at(scheduler, clock, 500)
    assert committer.keys == [B, A]


async def test_a_failed_commit_is_retried_with_backoff(clock: Clock, committer: FakeCommitter) -> None:
    committer.plans[A] = [RuntimeError("store down"), RuntimeError("still down")]
    scheduler = CommitScheduler(committer, retry_delay=5, clock=clock)  # type: ignore[arg-type]
    async with running(scheduler):
        scheduler.touch(A, 10)
        await at(scheduler, clock, 10)
        assert committer.keys == [A] and scheduler.stats.failed == 1 and scheduler.committing == 0
        await at(scheduler, clock, 14.9)
        assert len(committer.calls) == 1
        await at(scheduler, clock, 15)                    # 10 + 5
        assert committer.keys == [A, A] and scheduler.stats.failed == 2
        await at(scheduler, clock, 24.9)
        assert len(committer.calls) == 2
        await at(scheduler, clock, 25)                    # 15 + 2 * 5
        assert committer.keys == [A, A, A]
    assert scheduler.stats.committed == 1 and scheduler.stats.failed == 2


async def test_retry_at_from_the_committer_is_honoured(clock: Clock, committer: FakeCommitter) -> None:
    committer.plans[A] = [CommitResult("not_idle", retry_at=40), CommitResult("busy", retry_at=45)]
    scheduler = CommitScheduler(committer, clock=clock)  # type: ignore[arg-type]
    async with running(scheduler):
        scheduler.touch(A, 10)
        await at(scheduler, clock, 10)
        await at(scheduler, clock, 39)
        assert committer.calls == [(A, 10)]
        await at(scheduler, clock, 40)
        await at(scheduler, clock, 45)
        await at(scheduler, clock, 99)
    assert committer.calls == [(A, 10), (A, 40), (A, 45)]
    assert scheduler.stats.committed == 1 and scheduler.stats.failed == 0


async def test_a_key_is_never_committed_twice_at_once(clock: Clock, committer: FakeCommitter) -> None:
    release = anyio.Event()
    committer.plans[A] = [release]
    scheduler = CommitScheduler(committer, clock=clock)  # type: ignore[arg-type]
    async with running(scheduler):
        scheduler.touch(A, 1)
        await at(scheduler, clock, 1)
        assert committer.keys == [A] and scheduler.committing == 1
        scheduler.touch(A, 2)                           # a new turn arrives while it commits
        await at(scheduler, clock, 3)
        assert committer.keys == [A]                    # not started a second time ...
        release.set()
        await settle()
        await at(scheduler, clock, 3)
        assert committer.keys == [A, A]                 # ... but looked at again once the first is over
        assert scheduler.committing == 0


async def test_max_concurrent_commits(clock: Clock, committer: FakeCommitter) -> None:
    gates = {key: anyio.Event() for key in (A, B, C)}
    for key, gate in gates.items():
        committer.plans[key] = [gate]
    scheduler = CommitScheduler(committer, max_concurrent=2, clock=clock)  # type: ignore[arg-type]
    async with running(scheduler):
        for key in gates:
            scheduler.touch(key, 1)
        await at(scheduler, clock, 1)
        # two started; the third waits as a deadline (pending, with the wake-up key of `at`), not as a task
        assert scheduler.committing == 2 and scheduler.committing_now == 2 and len(committer.calls) == 2
        assert scheduler.pending == 2
        gates[committer.keys[0]].set()
        await settle()
        assert len(committer.calls) == 3 and scheduler.committing == 2
        for gate in gates.values():
            gate.set()
        await settle()
    assert sorted(committer.keys, key=str) == sorted([A, B, C], key=str)
    assert scheduler.stats.committed == 3 and scheduler.committing == 0


async def test_touch_turn_uses_the_turn_deadline(clock: Clock, committer: FakeCommitter) -> None:
    scheduler = CommitScheduler(committer, clock=clock)  # type: ignore[arg-type]
    created = datetime(2026, 1, 1, tzinfo=UTC)
    scheduler.touch_turn(turn("a", 1, created, commit_after=90))
    async with running(scheduler):
        await at(scheduler, clock, created.timestamp() + 89)
        assert committer.calls == []
        await at(scheduler, clock, created.timestamp() + 90)
        assert committer.keys == [A]


def turn(chat: str, seq: int, created: datetime, *, org: str = "org1", ns: str = "ns",
         commit_after: int = 60) -> TurnRecord:
    return TurnRecord(turn_id=str(uuid.uuid4()), chat_id=chat, org_id=org, namespace=ns, seq=seq, user="u",
                      assistant="a", status="complete", model=None, surface="openai", commit_after=commit_after,
                      prefix_hash="p", transcript_hash=uuid.uuid4().hex, created_at=created)


async def test_watching_a_conversation(clock: Clock, committer: FakeCommitter) -> None:
    committer.plans[B] = [CommitResult("not_idle", retry_at=100)]
    scheduler = CommitScheduler(committer, clock=clock)  # type: ignore[arg-type]
    assert not scheduler.watching(A, last_turn_at=0)
    scheduler.touch(A, 10)
    assert scheduler.watching(A, last_turn_at=0)            # it has a deadline
    async with running(scheduler):
        await at(scheduler, clock, 10)                      # committed at 10
        assert committer.keys == [A] and scheduler.pending == 1
        assert scheduler.watching(A, last_turn_at=9)        # settled after its last turn
        assert not scheduler.watching(A, last_turn_at=11)   # a turn it has not seen
        scheduler.touch(B, 20)
        await at(scheduler, clock, 20)                      # not idle: re-armed, so still watched
        assert scheduler.watching(B, last_turn_at=19)


async def test_due_commits_beyond_the_slots_wait_as_deadlines_not_tasks(clock: Clock) -> None:
    committer = FakeCommitter(clock)
    keys = [ChatKey("org1", "ns", f"k{i}") for i in range(5)]
    gates = {k: anyio.Event() for k in keys}
    for k in keys:
        committer.plans[k] = [gates[k]]
    scheduler = CommitScheduler(committer, max_concurrent=2, clock=clock)  # type: ignore[arg-type]
    async with running(scheduler):
        for i, k in enumerate(keys):
            scheduler.touch(k, 10.0 + i)
        await at(scheduler, clock, 100.0)
        assert committer.keys == keys[:2]  # two slots: two commits started, the rest not even as tasks
        assert scheduler.committing == 2 and scheduler.pending == 3 + 1  # + the wake-up key of `at`
        gates[keys[0]].set()
        await settle()
        assert committer.keys == keys[:3]  # a slot freed: the next due one starts
        for k in keys:
            gates[k].set()
        await settle()
        await settle()
        assert committer.keys == keys and scheduler.committing == 0 and scheduler.stats.committed == 5


async def test_past_max_pending_new_conversations_are_left_to_the_sweeper(clock: Clock) -> None:
    scheduler = CommitScheduler(FakeCommitter(clock), max_pending=2, clock=clock)  # type: ignore[arg-type]
    scheduler.touch(A, 10.0)
    scheduler.touch(B, 10.0)
    scheduler.touch(C, 10.0)  # a third conversation: not held
    assert scheduler.pending == 2 and scheduler.deferred == 1 and not scheduler.watching(C, 0.0)
    scheduler.touch(A, 20.0)  # one already held is still postponed
    assert scheduler.pending == 2 and scheduler.deferred == 1


async def test_the_commit_lag_counts_the_wait_for_a_slot(clock: Clock) -> None:
    committer = FakeCommitter(clock)
    first, second = ChatKey("org1", "ns", "first"), ChatKey("org1", "ns", "second")
    gate = anyio.Event()
    committer.plans[first] = [gate]
    scheduler = CommitScheduler(committer, max_concurrent=1, clock=clock)  # type: ignore[arg-type]
    async with running(scheduler):
        scheduler.touch(first, 10.0)
        scheduler.touch(second, 10.0)
        await at(scheduler, clock, 10.0)
        assert committer.keys == [first]  # the only slot is taken
        clock.now = 100.0  # the second one waits 90 s past its deadline
        gate.set()
        await settle()
        await settle()
    assert committer.keys == [first, second]
    assert scheduler.stats.lag_max == 90.0  # deadline -> done, not just the commit's own (instant) time
