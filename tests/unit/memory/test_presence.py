"""TenantPresence: an empty namespace skips retrieval, and a write makes it searchable at once."""

from __future__ import annotations

import anyio

from app.memory.presence import TenantPresence


class Counter:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], int] = {}
        self.calls = 0
        self.gate: anyio.Event | None = None

    async def __call__(self, org: str, namespace: str) -> int:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.rows.get((org, namespace), 0)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_empty_answer_is_trusted_for_the_ttl_then_asked_again() -> None:
    count, clock = Counter(), Clock()
    presence = TenantPresence(count, empty_ttl=2.0, clock=clock)
    assert not presence.known_empty("o", "n")            # never asked: unknown, not empty
    assert await presence.may_have_memories("o", "n") is False
    assert presence.known_empty("o", "n")
    assert await presence.may_have_memories("o", "n") is False
    assert count.calls == 1
    count.rows[("o", "n")] = 3                           # written by another process
    clock.now += 2.5
    assert not presence.known_empty("o", "n")
    assert await presence.may_have_memories("o", "n") is True
    assert count.calls == 2
    clock.now += 3600
    assert await presence.may_have_memories("o", "n") is True   # "yes" does not expire
    assert count.calls == 2


async def test_local_write_and_delete_take_effect_immediately() -> None:
    count = Counter()
    presence = TenantPresence(count, empty_ttl=60.0)
    assert await presence.may_have_memories("o", "n") is False
    presence.mark_present("o", "n")
    assert not presence.known_empty("o", "n")
    assert await presence.may_have_memories("o", "n") is True
    presence.forget("o", "n")
    assert await presence.may_have_memories("o", "n") is False
    assert await presence.may_have_memories("o", "other") is False   # tenants are separate
    assert count.calls == 3


async def test_a_write_during_the_count_wins() -> None:
    count = Counter()
    count.gate = anyio.Event()
    presence = TenantPresence(count, empty_ttl=60.0)
    answers: list[bool] = []

    async def ask() -> None:
        answers.append(await presence.may_have_memories("o", "n"))

    async with anyio.create_task_group() as group:
        group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        presence.mark_present("o", "n")                   # the store's count is already stale
        count.gate.set()
    assert answers == [False]
    assert not presence.known_empty("o", "n") and await presence.may_have_memories("o", "n") is True


async def test_the_map_is_bounded() -> None:
    presence = TenantPresence(Counter(), max_tenants=3)
    for i in range(10):
        presence.mark_present("o", f"n{i}")
    assert len(presence._known) == 3  # noqa: SLF001
