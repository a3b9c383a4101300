"""`app.turns.imports`: past turns as turn-log rows (times kept, deadline from now, hashes as if live)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.storage.connection import connect
from app.turns.conversations import Conversations, TurnOutcome
from app.turns.imports import INT32_MAX, PastTurn, build_records, deadline_commit_after
from app.turns.turnlog import TurnLog, TurnRecord

NOW = datetime(2026, 12, 2, 12, 0, 0, 500_000, tzinfo=UTC)
THEN = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


@pytest.fixture
async def turnlog(tmp_path: Path) -> AsyncIterator[TurnLog]:
    yield await TurnLog.open(await connect(str(tmp_path)))


def test_deadline_lands_at_now_plus_delay() -> None:
    for delay in (0, 60, 3600):
        stored = deadline_commit_after(THEN, NOW, delay)
        assert NOW + timedelta(seconds=delay - 1) < THEN + timedelta(seconds=stored) <= NOW + timedelta(seconds=delay)
        future = NOW + timedelta(days=400)  # a time in the future: still from now, a negative delay stored
        assert future + timedelta(seconds=deadline_commit_after(future, NOW, delay)) <= NOW + timedelta(seconds=delay)
    assert deadline_commit_after(datetime(1900, 1, 1, tzinfo=UTC), NOW, 0) == INT32_MAX  # outside the API's years


def test_records_keep_times_order_and_continue_a_conversation() -> None:
    turns = [PastTurn(user="I have a cat.", assistant="Nice.", created_at=THEN),
             PastTurn(user="", assistant="Hello there.", created_at=THEN + timedelta(seconds=1)),
             PastTurn(user="I live in Oslo.")]
    first = build_records("o", "n", "c", [], turns[:2], commit_after=0, now=NOW)
    assert [r.seq for r in first] == [1, 2] and [r.created_at for r in first] == [THEN, THEN + timedelta(seconds=1)]
    assert all(r.surface == "import" and r.status == "complete" and r.chat_id == "c" for r in first)
    assert first[1].prefix_hash == first[0].transcript_hash
    more = build_records("o", "n", "c", first, turns[2:], commit_after=0, now=NOW)
    assert more[0].seq == 3 and more[0].created_at == NOW and more[0].prefix_hash == first[1].transcript_hash


async def test_a_live_client_continues_an_imported_conversation(turnlog: TurnLog) -> None:
    seen: list[TurnRecord] = []
    conv = Conversations(turnlog, default_commit_after=60, on_recorded=seen.append)
    records = build_records("o", "n", "imported", [], [
        PastTurn(user="My sister  lives in Porto.", assistant="Lovely.", created_at=THEN)], commit_after=5, now=NOW)
    await conv.add_records(records)
    assert seen == records[-1:]
    assert [t.turn_id for t in await turnlog.chat_turns("o", "n", "imported")] == [records[0].turn_id]
    messages = [{"role": "user", "content": "My sister lives in Porto."}, {"role": "assistant", "content": "Lovely."},
                {"role": "user", "content": "She teaches."}]
    fresh = Conversations(turnlog, default_commit_after=60)  # another process: found through the table
    slot = await fresh.resolve_chat("o", "n", None, messages)
    assert (slot.chat_id, slot.seq, slot.is_new) == ("imported", 2, False)
    record = await fresh.record("o", "n", slot, messages, TurnOutcome(reply="ok", completed=True))
    assert record is not None and record.seq == 2


async def test_append_many_without_the_writer(turnlog: TurnLog) -> None:
    rows = build_records("o", "n", "c", [], [PastTurn(user=f"fact {i}", created_at=THEN) for i in range(5)],
                         commit_after=0, now=NOW)
    await turnlog.append_many(rows)
    await turnlog.append_many([])
    assert [t.seq for t in await turnlog.chat_turns("o", "n", "c")] == [1, 2, 3, 4, 5]
