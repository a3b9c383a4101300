"""`Conversations`: chat ids are unique per tenant only (clients choose them), so nothing keyed by a chat id
may mix two tenants' conversations."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio
import lancedb

from app.turns.conversations import Conversations, TurnOutcome
from app.turns.turnlog import TurnLog


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_the_same_chat_id_in_two_tenants_keeps_their_first_turns_apart(tmp_path: Path) -> None:
    db = await lancedb.connect_async(str(tmp_path / "lancedb"), read_consistency_interval=timedelta(0))
    turnlog = await TurnLog.open(db)
    conversations = Conversations(turnlog, default_commit_after=60)
    done = TurnOutcome(reply="ok", completed=True)
    async with anyio.create_task_group() as group:
        await group.start(turnlog.run_writer)
        slot_a = await conversations.resolve_chat("org1", "alice", "s1", user("hello"))
        await conversations.record("org1", "alice", slot_a, user("hello"), done)
        slot_b = await conversations.resolve_chat("org1", "bob", "s1", user("hi"))
        await conversations.record("org1", "bob", slot_b, user("hi"), done)
        second = await conversations.resolve_chat("org1", "alice", "s1", user("and then?"))
        assert (second.chat_id, second.seq) == ("s1", 2)
        await conversations.record("org1", "alice", second, user("and then?"), done)
        # alice's "s1" has two turns now: a lone "hello" is a new conversation, not a regenerate of its turn 1
        again = await conversations.resolve_chat("org1", "alice", None, user("hello"))
        assert again.is_new and again.chat_id != "s1"
        # bob's "s1" is still a one-turn conversation: his lone "hi" regenerates it
        regen = await conversations.resolve_chat("org1", "bob", None, user("hi"))
        assert (regen.chat_id, regen.seq, regen.is_new) == ("s1", 1, False)
        group.cancel_scope.cancel()
