"""`app.commits.batching`: rows submitted while a write runs go into the next write, each caller gets its own
result, and a write survives the cancellation of the caller that started it."""

from __future__ import annotations

import anyio
import pytest

from app.commits.batching import WriteBatcher


class Table:
    """A write that takes ``pause`` seconds and records every batch it was given."""

    def __init__(self, pause: float = 0.05, fail_on: str | None = None) -> None:
        self.pause = pause
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self.inside = self.most_inside = 0

    async def write(self, items: list[str]) -> list[str]:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await anyio.sleep(self.pause)
            if self.fail_on in items:
                raise ValueError(f"cannot write {self.fail_on}")
            self.batches.append(list(items))
            return [item.upper() for item in items]
        finally:
            self.inside -= 1


async def submit_all(batcher: WriteBatcher[str, str], items: list[str]) -> dict[str, object]:
    results: dict[str, object] = {}

    async def one(item: str) -> None:
        try:
            results[item] = await batcher.submit(item)
        except ValueError as exc:
            results[item] = exc

    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(one, item)
            await anyio.sleep(0)  # in order: the first one starts a write before the rest arrive
    return results


async def test_a_lone_row_is_written_at_once_on_its_own() -> None:
    table = Table(pause=0)
    batcher = WriteBatcher(table.write, lane=anyio.CapacityLimiter(2))
    assert await batcher.submit("a") == "A"
    assert table.batches == [["a"]]
    assert (batcher.writes, batcher.rows) == (1, 1)


async def test_rows_that_arrive_during_a_write_share_the_next_one() -> None:
    table = Table()
    batcher = WriteBatcher(table.write, lane=anyio.CapacityLimiter(2))
    results = await submit_all(batcher, list("abcdef"))
    assert results == {item: item.upper() for item in "abcdef"}
    assert table.batches == [["a"], ["b", "c", "d", "e", "f"]]
    assert table.most_inside == 1  # one write of a kind at a time


async def test_a_write_carries_at_most_max_batch_rows() -> None:
    table = Table()
    batcher = WriteBatcher(table.write, lane=anyio.CapacityLimiter(2), max_batch=2)
    results = await submit_all(batcher, list("abcde"))
    assert results == {item: item.upper() for item in "abcde"}
    assert table.batches == [["a"], ["b", "c"], ["d", "e"]]


async def test_max_batch_one_writes_each_row_on_its_own() -> None:
    table = Table()
    batcher = WriteBatcher(table.write, lane=anyio.CapacityLimiter(2), max_batch=1)
    await submit_all(batcher, list("abc"))
    assert table.batches == [["a"], ["b"], ["c"]]


async def test_a_failed_write_fails_its_rows_only() -> None:
    table = Table(fail_on="c")
    batcher = WriteBatcher(table.write, lane=anyio.CapacityLimiter(2))
    results = await submit_all(batcher, list("abcd"))
    assert results["a"] == "A"
    assert all(isinstance(results[item], ValueError) for item in "bcd")  # written together with "c"
    assert await batcher.submit("e") == "E"  # the next write is not affected


async def test_each_write_takes_a_slot_of_the_lane() -> None:
    lane = anyio.CapacityLimiter(1)
    table = Table(pause=0)
    batcher = WriteBatcher(table.write, lane=lane)
    results: list[str] = []

    async def write_a() -> None:
        results.append(await batcher.submit("a"))

    async with anyio.create_task_group() as tg:
        async with lane:  # another write holds the only slot: "a" waits for it
            tg.start_soon(write_a)
            await anyio.sleep(0.1)
            assert table.batches == [] and results == []
    assert results == ["A"]


@pytest.mark.parametrize("who", ["leader", "follower"])
async def test_a_cancelled_caller_does_not_lose_the_rows_of_others(who: str) -> None:
    table = Table(pause=0.2)
    batcher = WriteBatcher(table.write, lane=anyio.CapacityLimiter(2))
    results: dict[str, object] = {}

    async def submit(item: str, scope_holder: dict[str, anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_holder[item] = scope
            results[item] = await batcher.submit(item)

    scopes: dict[str, anyio.CancelScope] = {}
    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, "a", scopes)        # the first write: "a" alone
        await anyio.sleep(0.05)
        tg.start_soon(submit, "b", scopes)        # leads the second write: "b", "c"
        await anyio.sleep(0)
        tg.start_soon(submit, "c", scopes)
        await anyio.sleep(0.25)                   # the second write is running
        scopes["b" if who == "leader" else "c"].cancel()
    written = [item for batch in table.batches for item in batch]
    assert written == ["a", "b", "c"]  # the shielded write went through
    survivor = "c" if who == "leader" else "b"
    assert results[survivor] == survivor.upper()
