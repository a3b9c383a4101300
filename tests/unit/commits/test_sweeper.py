"""`app.commits.sweeper`: start-up recovery reads only the turns not marked committed (and heals the marks the
commit log proves), sweeps adopt conversations other processes left; the turns-table migration for stores
made before the ``committed`` column existed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from app.commits.committer import ChatKey
from app.commits.log import CommitLog
from app.commits.sweeper import CommitSweeper
from app.storage.connection import connect
from app.turns.turnlog import TURN_SCHEMA, TURNS, TurnLog, TurnRecord, to_arrow

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def record(chat: str, seq: int, *, at: datetime = T0, namespace: str = "ns") -> TurnRecord:
    return TurnRecord(turn_id=str(uuid.uuid4()), chat_id=chat, org_id="org1", namespace=namespace, seq=seq,
                      user=f"turn {seq}", assistant="ok", status="complete", model=None, surface="openai",
                      commit_after=60, prefix_hash="p", transcript_hash=uuid.uuid4().hex, created_at=at)


class Scheduler:
    """What the sweeper needs of a `CommitScheduler`: it records the deadlines it is given."""

    def __init__(self, watching: set[ChatKey] | None = None) -> None:
        self.due: dict[ChatKey, float] = {}
        self._watching = watching or set()

    def touch(self, key: ChatKey, due: float) -> None:
        self.due[key] = due

    def touch_turn(self, turn: TurnRecord) -> None:
        self.touch(ChatKey(turn.org_id, turn.namespace, turn.chat_id), turn.created_at.timestamp() + turn.commit_after)

    def watching(self, key: ChatKey, last_turn_at: float) -> bool:
        return key in self._watching


async def done(commits: CommitLog, chat: str, through: int) -> None:
    row = await commits.claim("org1", "ns", chat, 1, through, "w")
    assert row is not None and await commits.finish(row, [])


async def test_recovery_schedules_pending_conversations_and_heals_committed_ones(tmp_path: Path) -> None:
    db = await connect(str(tmp_path))
    turnlog, commits = await TurnLog.open(db), await CommitLog.open(db, lease=timedelta(minutes=1))
    for chat, seqs in {"marked": (1, 2), "unmarked": (1, 2), "pending": (1, 2, 3), "half": (1, 2)}.items():
        for seq in seqs:
            await turnlog.append(record(chat, seq))
    await done(commits, "marked", 2)
    await turnlog.mark_committed("org1", "ns", "marked", 2)
    await done(commits, "unmarked", 2)        # committed, but the mark was never written (a crash between)
    await done(commits, "half", 1)            # turn 2 came after the commit
    scheduler = Scheduler()
    scheduled = await CommitSweeper(scheduler, turnlog, commits).recover()  # type: ignore[arg-type]
    assert scheduled == 2
    assert set(scheduler.due) == {ChatKey("org1", "ns", "pending"), ChatKey("org1", "ns", "half")}
    assert {(t.chat_id, t.seq) for t in await turnlog.uncommitted()} == {
        ("pending", 1), ("pending", 2), ("pending", 3), ("half", 2)}


async def test_a_sweep_adopts_what_no_deadline_here_covers(tmp_path: Path) -> None:
    """Whatever its age (an imported past conversation too), a conversation with turns not marked committed
    that this process is not watching is adopted at its deadline + grace (not before now + grace)."""
    db = await connect(str(tmp_path))
    turnlog, commits = await TurnLog.open(db), await CommitLog.open(db, lease=timedelta(minutes=1))
    now = datetime.now(UTC)
    await turnlog.append(record("mine", 1, at=now))
    await turnlog.append(record("theirs", 1, at=now))
    await turnlog.append(record("old", 1, at=now - timedelta(days=400)))
    await turnlog.append(record("done", 1, at=now))
    await turnlog.mark_committed("org1", "ns", "done", 1)
    scheduler = Scheduler(watching={ChatKey("org1", "ns", "mine")})
    sweeper = CommitSweeper(scheduler, turnlog, commits, grace=7, clock=lambda: now.timestamp())  # type: ignore[arg-type]
    assert await sweeper.sweep_once() == 2
    assert scheduler.due == {ChatKey("org1", "ns", "theirs"): now.timestamp() + 60 + 7,
                             ChatKey("org1", "ns", "old"): now.timestamp() + 7}


async def test_a_turns_table_made_before_the_committed_column_is_migrated(tmp_path: Path) -> None:
    """The previous release's table: exactly today's schema without ``committed``, with rows in it."""
    db = await connect(str(tmp_path))
    old_schema = pa.schema([f for f in TURN_SCHEMA if f.name != "committed"])
    old_rows = to_arrow([record("before", 1), record("before", 2)]).drop_columns(["committed"])
    await db.create_table(TURNS, data=old_rows.cast(old_schema), schema=old_schema)
    turnlog = await TurnLog.open(db)
    assert "committed" in (await turnlog._table.schema()).names
    assert sorted(t.seq for t in await turnlog.uncommitted()) == [1, 2]   # every old row: not yet marked
    commits = await CommitLog.open(db, lease=timedelta(minutes=1))
    await done(commits, "before", 2)
    assert await CommitSweeper(Scheduler(), turnlog, commits).recover() == 0  # type: ignore[arg-type]
    assert await turnlog.uncommitted() == []
    await TurnLog.open(db)  # a second start finds the column and changes nothing
    assert len(await turnlog.chat_turns("org1", "ns", "before")) == 2


@pytest.mark.parametrize("chat", ["o'hara", "x' OR 1=1 --", "back\\slash"])
async def test_marks_are_scoped_to_the_conversation(tmp_path: Path, chat: str) -> None:
    db = await connect(str(tmp_path))
    turnlog = await TurnLog.open(db)
    await turnlog.append(record(chat, 1))
    await turnlog.append(record("bystander", 1))
    assert await turnlog.mark_committed("org1", "ns", chat, 1) == 1
    assert [t.chat_id for t in await turnlog.uncommitted()] == ["bystander"]


@pytest.mark.parametrize("hostile", ["o'hara", "x') OR (1=1", "back\\slash"])
async def test_a_mark_leaves_the_turns_it_is_told_to(tmp_path: Path, hostile: str) -> None:
    db = await connect(str(tmp_path))
    turnlog = await TurnLog.open(db)
    kept = msgspec.structs.replace(record("c", 2), turn_id=hostile)
    for turn in (record("c", 1), kept):
        await turnlog.append(turn)
    assert await turnlog.mark_committed("org1", "ns", "c", 2, except_turns=[hostile]) == 1
    assert [t.turn_id for t in await turnlog.uncommitted()] == [hostile]


async def test_recovery_schedules_an_edit_of_a_committed_turn(tmp_path: Path) -> None:
    """A crash after an edit of a committed turn was recorded, before its revision was committed."""
    db = await connect(str(tmp_path))
    turnlog, commits = await TurnLog.open(db), await CommitLog.open(db, lease=timedelta(minutes=1))
    first = record("edited", 1)
    await turnlog.append(first)
    row = await commits.claim("org1", "ns", "edited", 1, 1, "w", turn_ids=[first.turn_id])
    assert row is not None and await commits.finish(row, [])
    await turnlog.mark_committed("org1", "ns", "edited", 1)
    edit = record("edited", 1, at=T0 + timedelta(minutes=1))
    await turnlog.append(edit)
    scheduler = Scheduler()
    assert await CommitSweeper(scheduler, turnlog, commits).recover() == 1  # type: ignore[arg-type]
    assert set(scheduler.due) == {ChatKey("org1", "ns", "edited")}
    assert [t.turn_id for t in await turnlog.uncommitted()] == [edit.turn_id]  # not marked: nothing covers it


async def test_a_commit_marks_its_turns_so_the_next_start_reads_nothing(tmp_path: Path) -> None:
    from app.commits.committer import Committer
    from app.memory.embed import NullEmbedder
    from app.memory.extractors import build_extractor
    from app.memory.store import MemoryStore

    db = await connect(str(tmp_path / "db"))
    turnlog, commits = await TurnLog.open(db), await CommitLog.open(db, lease=timedelta(minutes=1))
    store = await MemoryStore.open(str(tmp_path / "db"), NullEmbedder())
    try:
        await turnlog.append(record("c", 1, at=datetime.now(UTC) - timedelta(hours=1)))
        committer = Committer(turnlog, commits, store, build_extractor("heuristic", client=None, model=None,
                                                                       offline=True), owner="w")
        assert (await committer.commit(ChatKey("org1", "ns", "c"))).status in ("committed", "nothing")
        assert await turnlog.uncommitted() == []
        assert await CommitSweeper(Scheduler(), turnlog, commits).recover() == 0  # type: ignore[arg-type]
    finally:
        await store.close()


async def test_a_mark_with_nothing_to_mark_writes_no_table_version(tmp_path: Path) -> None:
    db = await connect(str(tmp_path))
    turnlog = await TurnLog.open(db)
    await turnlog.append(record("c", 1))
    assert await turnlog.mark_committed("org1", "ns", "c", 1) == 1
    version = await turnlog._table.version()
    assert await turnlog.mark_committed("org1", "ns", "c", 1) == 0
    assert await turnlog._table.version() == version
