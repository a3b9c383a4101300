"""`app.storage.compaction`: a table is compacted once it took ``after_writes`` writes (by any process), and
reads of it then visit one fragment instead of one per write. Real LanceDB tables."""

from __future__ import annotations

from pathlib import Path

import anyio
import pyarrow as pa

from app.storage.compaction import Compactor
from app.storage.connection import connect


def row(i: int) -> pa.Table:
    return pa.table({"k": [f"k{i}"], "v": [i]})


async def fragments(table) -> int:  # type: ignore[no-untyped-def]
    return (await table.stats())["fragment_stats"]["num_fragments"]


async def test_a_table_is_compacted_after_enough_writes_and_not_before(tmp_path: Path) -> None:
    db = await connect(str(tmp_path))
    busy = await db.create_table("busy", row(0))
    quiet = await db.create_table("quiet", row(0))
    compactor = Compactor({"busy": busy, "quiet": quiet}, after_writes=10)
    assert await compactor.check_once() == []               # the first look only notes the versions
    for i in range(1, 10):
        await busy.add(row(i))
    await quiet.add(row(1))
    assert await compactor.check_once() == []               # 9 writes: not yet
    assert await fragments(busy) == 10
    await busy.add(row(10))
    assert await compactor.check_once() == ["busy"]
    assert await fragments(busy) == 1 and await busy.count_rows() == 11
    assert await fragments(quiet) == 2                      # untouched
    assert await compactor.check_once() == []               # the compaction's own version is not a write


async def test_writes_of_another_process_count(tmp_path: Path) -> None:
    mine, other = await connect(str(tmp_path)), await connect(str(tmp_path))
    table = await mine.create_table("t", row(0))
    compactor = Compactor({"t": table}, after_writes=5)
    await compactor.check_once()
    theirs = await other.open_table("t")
    for i in range(1, 6):
        await theirs.add(row(i))
    assert await compactor.check_once() == ["t"]
    assert await fragments(table) == 1


async def test_the_task_compacts_in_the_background_and_survives_a_failure(tmp_path: Path) -> None:
    db = await connect(str(tmp_path))
    table = await db.create_table("t", row(0))
    calls: list[str] = []

    async def optimize(t, name: str) -> str:  # type: ignore[no-untyped-def]
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("disk trouble")
        return str(await t.optimize())

    compactor = Compactor({"t": table}, after_writes=3, check_interval=0.05, optimize=optimize)
    async with anyio.create_task_group() as tg:
        await tg.start(compactor.run)
        await anyio.sleep(0.1)
        for i in range(1, 4):
            await table.add(row(i))
        with anyio.fail_after(10):
            while compactor.compactions == 0:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert calls == ["t", "t"] and await fragments(table) == 1


async def test_zero_turns_it_off(tmp_path: Path) -> None:
    db = await connect(str(tmp_path))
    table = await db.create_table("t", row(0))
    compactor = Compactor({"t": table}, after_writes=0, check_interval=0.01)
    with anyio.fail_after(5):
        await compactor.run()  # returns at once: nothing to watch


async def test_compaction_removes_versions_older_than_keep_versions_and_keeps_newer_ones(tmp_path: Path) -> None:
    from datetime import timedelta

    db = await connect(str(tmp_path))
    short, long = await db.create_table("short", row(0)), await db.create_table("long", row(0))
    kept = Compactor({"long": long}, after_writes=5, keep_versions=timedelta(minutes=10))
    trimmed = Compactor({"short": short}, after_writes=5, keep_versions=timedelta(seconds=1))
    for compactor in (kept, trimmed):
        await compactor.check_once()
    for i in range(1, 6):
        await short.add(row(i))
        await long.add(row(i))
    await anyio.sleep(1.2)  # the writes' versions are now older than the short setting
    assert await trimmed.check_once() == ["short"] and await kept.check_once() == ["long"]
    # Each read checks the latest version against the manifests kept, and LanceDB holds each in memory.
    assert len(await short.list_versions()) <= 2          # the compaction's own (and its commit) only
    assert len(await long.list_versions()) >= 7           # created, 5 writes, compaction
    assert await short.count_rows() == 6 and await long.count_rows() == 6
