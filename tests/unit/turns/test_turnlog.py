"""The turn log's journal: durable before the table, visible to readers, replayed exactly once after a crash."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import lancedb
import pytest

from app.turns.journal import Journal, read_segment
from app.turns.records import CommittedMark
from app.turns.turnlog import TurnLog, TurnRecord


def record(chat_id: str = "chat-1", seq: int = 1, *, org: str = "org1", namespace: str = "ns",
           user: str = "hello", transcript: str | None = None) -> TurnRecord:
    return TurnRecord(turn_id=str(uuid.uuid4()), chat_id=chat_id, org_id=org, namespace=namespace, seq=seq,
                      user=user, assistant=f"reply to {user}", status="complete", model="m", surface="openai",
                      commit_after=60, prefix_hash="p", transcript_hash=transcript or uuid.uuid4().hex,
                      created_at=datetime.now(UTC))


async def table_rows(db: lancedb.AsyncConnection) -> list[dict]:
    table = await db.open_table("turns")
    return (await table.query().to_arrow()).to_pylist()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[lancedb.AsyncConnection]:
    yield await lancedb.connect_async(str(tmp_path / "lancedb"), read_consistency_interval=timedelta(0))


@pytest.mark.parametrize("fsync", [False, True], ids=["write", "write+fsync"])
async def test_journaled_turns_are_readable_before_the_flush_and_in_the_table_after(db, tmp_path: Path,
                                                                                   fsync: bool) -> None:
    journal = tmp_path / "journal"
    turnlog = await TurnLog.open(db, journal, flush_interval=3600, fsync=fsync)
    async with anyio.create_task_group() as group:
        await group.start(turnlog.run_writer)
        first, second = record(seq=1, transcript="t1"), record(seq=2, transcript="t2")
        await turnlog.append(first)
        await turnlog.append(second)
        assert await table_rows(db) == []                              # not flushed yet ...
        assert [t.turn_id for t in await turnlog.chat_turns("org1", "ns", "chat-1")] == [first.turn_id,
                                                                                          second.turn_id]
        found = await turnlog.find_by_transcript("org1", "ns", "t2")   # ... but this process reads them
        assert found is not None and found.turn_id == second.turn_id
        assert await turnlog.find_by_transcript("org2", "ns", "t2") is None   # scoped by tenant
        segments = list(journal.glob("*.wal"))
        assert len(segments) == 1 and len(read_segment(segments[0], TurnRecord)) == 2

        assert await turnlog.flush() == 2
        assert sorted(r["turn_id"] for r in await table_rows(db)) == sorted([first.turn_id, second.turn_id])
        assert not segments[0].exists()                                # its rows are in the table now
        assert len(await turnlog.chat_turns("org1", "ns", "chat-1")) == 2   # no double counting
        group.cancel_scope.cancel()


async def test_flusher_moves_rows_on_its_interval(db, tmp_path: Path) -> None:
    turnlog = await TurnLog.open(db, tmp_path / "journal", flush_interval=0.05)
    async with anyio.create_task_group() as group:
        await group.start(turnlog.run_writer)
        await turnlog.append(record())
        with anyio.fail_after(10):
            while not await table_rows(db):
                await anyio.sleep(0.02)
        assert turnlog.flushes >= 1
        group.cancel_scope.cancel()


async def test_shutdown_flushes_what_is_journaled(db, tmp_path: Path) -> None:
    turnlog = await TurnLog.open(db, tmp_path / "journal", flush_interval=3600)
    async with anyio.create_task_group() as group:
        await group.start(turnlog.run_writer)
        await turnlog.append(record())
        group.cancel_scope.cancel()
    assert len(await table_rows(db)) == 1
    assert not list((tmp_path / "journal").glob("*.wal"))


def crashed_segment(directory: Path, records: list[TurnRecord], torn_tail: bytes = b"") -> Path:
    """A segment as a killed process leaves it: written, unlocked (its fd is gone), never flushed."""
    journal = Journal(directory)
    segment = journal.write(records)
    if torn_tail:
        segment.write(torn_tail)
    journal.close()  # the flock goes with the fd, as when the process dies
    return segment.path


async def test_a_write_cut_short_is_taken_back(db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    journal = Journal(tmp_path / "journal")
    first, torn, third = record(seq=1), record(seq=2), record(seq=3)
    journal.write([first])
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[:10]))          # part of the line reaches the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        journal.write([torn])
    monkeypatch.setattr(os, "write", real_write)
    journal.write([third])
    path = journal.current.path
    journal.close()
    assert [r.turn_id for r in read_segment(path, TurnRecord)] == [first.turn_id, third.turn_id]


async def test_restart_replays_a_dead_process_segment_exactly_once(db, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    rows = [record(seq=1), record(seq=2)]
    path = crashed_segment(journal, rows, torn_tail=b'{"turn_id": "half-writ')
    turnlog = await TurnLog.open(db, journal)
    assert turnlog.rows_recovered == 2                       # the torn line was never acknowledged
    assert not path.exists()
    assert sorted(r["turn_id"] for r in await table_rows(db)) == sorted(r.turn_id for r in rows)

    # A crash between the table write and the segment's removal replays the same rows again: no duplicate.
    crashed_segment(journal, rows)
    await TurnLog.open(db, journal)
    assert sorted(r["turn_id"] for r in await table_rows(db)) == sorted(r.turn_id for r in rows)


async def test_a_live_process_segment_is_left_alone(db, tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    live = Journal(journal_dir)           # another worker, alive, holding its segment's lock
    live.write([record()])
    try:
        turnlog = await TurnLog.open(db, journal_dir)
        assert turnlog.rows_recovered == 0
        assert live.current.path.exists()
    finally:
        live.close()
    await TurnLog.open(db, journal_dir)   # once that worker is gone, its rows are recovered
    assert len(await table_rows(db)) == 1


async def test_other_workers_read_journaled_turns_before_the_flush(db, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    writer = await TurnLog.open(db, journal, flush_interval=3600)
    reader = await TurnLog.open(db, journal, flush_interval=3600)   # a second worker on the same host
    async with anyio.create_task_group() as group:
        await group.start(writer.run_writer)
        await group.start(reader.run_writer)
        turn = record(chat_id="shared", transcript="t-shared")
        await writer.append(turn)
        assert [t.turn_id for t in await reader.chat_turns("org1", "ns", "shared")] == [turn.turn_id]
        found = await reader.find_by_transcript("org1", "ns", "t-shared")
        assert found is not None and found.turn_id == turn.turn_id
        assert await reader.chat_turns("org2", "ns", "shared") == []       # still scoped by tenant
        await writer.flush()                                               # now from the table, once
        assert [t.turn_id for t in await reader.chat_turns("org1", "ns", "shared")] == [turn.turn_id]
        group.cancel_scope.cancel()


async def test_a_failing_flush_keeps_its_rows_and_opens_no_new_segments(db, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    turnlog = await TurnLog.open(db, journal, flush_interval=3600)
    async with anyio.create_task_group() as group:
        await group.start(turnlog.run_writer)
        await turnlog.append(record())

        working = turnlog._write_table  # noqa: SLF001

        async def landed_then_failed(rows: object) -> None:   # the commit landed, the answer got lost
            await working(rows)
            raise OSError("object store timed out")

        async def unavailable(rows: object) -> None:
            raise OSError("object store unavailable")

        turnlog._write_table = landed_then_failed  # noqa: SLF001
        with pytest.raises(OSError):
            await turnlog.flush()
        turnlog._merge_table = unavailable  # noqa: SLF001
        for _ in range(4):
            with pytest.raises(OSError):
                await turnlog.flush()
        assert len(list(journal.glob("*.wal"))) == 2                      # the full one + the current one
        del turnlog._write_table, turnlog._merge_table                      # working again
        assert await turnlog.flush() == 1
        assert len(await table_rows(db)) == 1                              # merged: no duplicate row
        group.cancel_scope.cancel()


async def test_forgetting_a_tenant_cannot_be_undone_by_a_replay(db, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    turnlog = await TurnLog.open(db, journal, flush_interval=3600)
    async with anyio.create_task_group() as group:
        await group.start(turnlog.run_writer)
        await turnlog.append(record(org="org1", namespace="gone"))
        await turnlog.append(record(org="org1", namespace="kept"))
        assert await turnlog.delete_tenant("org1", "gone") == 1
        assert await turnlog.chat_turns("org1", "gone", "chat-1") == []
        group.cancel_scope.cancel()
    await TurnLog.open(db, journal)
    assert [r["namespace"] for r in await table_rows(db)] == ["kept"]


async def test_without_a_journal_turns_go_straight_to_the_table(db) -> None:
    turnlog = await TurnLog.open(db)
    async with anyio.create_task_group() as group:
        await group.start(turnlog.run_writer)
        await turnlog.append(record())
        assert len(await table_rows(db)) == 1
        group.cancel_scope.cancel()


async def test_several_conversations_are_marked_committed_in_one_write(db) -> None:
    turnlog = await TurnLog.open(db)
    chats = ["chat", "c'); DELETE FROM turns; --", "' OR 1=1 --", "c\\", "ünï'cödé"]
    rows = {chat: [record(chat, seq) for seq in (1, 2, 3)] for chat in chats + ["untouched"]}
    rows["other-tenant"] = [record("chat", 1, namespace="' OR 1=1 --")]
    for records in rows.values():
        for turn in records:
            await turnlog.append(turn)
    edited = rows["chat"][1]  # an edit no commit covers yet: stays unmarked
    version = await turnlog._table.version()
    marks = [CommittedMark("org1", "ns", chat, 2, (edited.turn_id,) if chat == "chat" else ()) for chat in chats]
    assert await turnlog.mark_many(marks) == 2 * len(chats) - 1
    assert await turnlog._table.version() == version + 1
    pending = {(t.namespace, t.chat_id, t.seq) for t in await turnlog.uncommitted()}
    assert pending == ({("ns", chat, 3) for chat in chats} | {("ns", "chat", 2)}
                       | {("ns", "untouched", seq) for seq in (1, 2, 3)} | {("' OR 1=1 --", "chat", 1)})
    assert await turnlog.mark_many(marks) == 0
    assert await turnlog._table.version() == version + 1  # nothing left to mark: no write
