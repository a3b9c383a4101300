"""`app.commits.committer`: idle conversations become memories exactly once (real LanceDB, heuristic extractor)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from app.commits.committer import ChatKey, Committer, due_time, memory_id
from app.commits.log import CommitLog
from app.memory.embed import NullEmbedder
from app.memory.extract import ExtractedFact
from app.memory.extractors import build_extractor
from app.memory.store import MemoryStore
from app.storage.connection import connect
from app.turns.turnlog import TurnLog, TurnRecord

LEASE = timedelta(minutes=5)
KEY = ChatKey("org1", "ns", "chat-1")


class Clock:
    """Epoch seconds that only move when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    turnlog: TurnLog
    store: MemoryStore
    db: Any
    clock: Clock

    async def committer(self, owner: str = "w1", lease: timedelta = LEASE, store: Any = None,
                        **kw: Any) -> Committer:
        return Committer(self.turnlog, await CommitLog.open(self.db, lease=lease), store or self.store,
                         build_extractor("heuristic", client=None, model=None, offline=True), owner=owner,
                         clock=self.clock, **kw)

    async def turn(self, seq: int, user: str, *, key: ChatKey = KEY, commit_after: int = 60) -> TurnRecord:
        record = TurnRecord(turn_id=str(uuid.uuid4()), chat_id=key.chat_id, org_id=key.org_id,
                            namespace=key.namespace, seq=seq, user=user, assistant="ok", status="complete",
                            model="m", surface="openai", commit_after=commit_after, prefix_hash="p",
                            transcript_hash=uuid.uuid4().hex, created_at=datetime.now(UTC))
        await self.turnlog.append(record)
        return record

    async def memories(self, key: ChatKey = KEY) -> list:
        page, _ = await self.store.list(key.org_id, key.namespace, limit=100)
        return page


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    db = await connect(str(tmp_path / "db"))
    store = await MemoryStore.open(str(tmp_path / "db"), NullEmbedder())
    yield Env(await TurnLog.open(db), store, db, Clock(datetime.now(UTC).timestamp()))
    await store.close()


async def test_an_idle_conversation_becomes_memories_with_their_sources(env: Env) -> None:
    t1 = await env.turn(1, "I live in Lyon. What is the weather like?")
    t2 = await env.turn(2, "My sister Anna works as a nurse.")
    committed: list[tuple[ChatKey, list]] = []
    committer = await env.committer(on_committed=lambda key, memories: committed.append((key, memories)))
    env.clock.now = due_time([t1, t2]) + 1
    result = await committer.commit(KEY)
    assert result.status == "committed" and result.retry_at is None
    by_content = {m.content: m for m in result.memories}
    assert set(by_content) == {"I live in Lyon.", "My sister Anna works as a nurse."}
    lyon, anna = by_content["I live in Lyon."], by_content["My sister Anna works as a nurse."]
    assert (lyon.source_thread_id, lyon.source_turn_id) == ("chat-1", t1.turn_id)
    assert (anna.source_thread_id, anna.source_turn_id) == ("chat-1", t2.turn_id)
    assert lyon.source == "conversation" and lyon.org_id == "org1" and lyon.namespace == "ns"
    assert "Anna" in anna.entities
    assert {m.id for m in await env.memories()} == {lyon.id, anna.id}
    assert committed == [(KEY, result.memories)]
    [row] = await committer.commits.for_chat("org1", "ns", "chat-1")
    assert (row.state, row.from_seq, row.to_seq, sorted(row.memory_ids)) == ("done", 1, 2, sorted(by_content[c].id
                                                                                                 for c in by_content))
    assert sorted(m.id for m in result.memories) == sorted(memory_id(row.commit_key, i) for i in range(2))


async def test_committing_twice_writes_nothing_new(env: Env) -> None:
    t1 = await env.turn(1, "I play the cello every weekend.")
    committer = await env.committer()
    env.clock.now = due_time([t1]) + 1
    first = await committer.commit(KEY)
    assert first.status == "committed" and len(first.memories) == 1
    second = await committer.commit(KEY)
    assert second.status == "nothing" and second.memories == []
    other = await env.committer(owner="w2")
    assert (await other.commit(KEY)).status == "nothing"
    assert [m.id for m in await env.memories()] == [first.memories[0].id]


async def test_a_conversation_that_is_not_idle_yet_waits(env: Env) -> None:
    t1 = await env.turn(1, "I work at a bakery in Nantes.", commit_after=60)
    committer = await env.committer()
    env.clock.now = t1.created_at.timestamp() + 30
    result = await committer.commit(KEY)
    assert result.status == "not_idle" and result.retry_at == pytest.approx(t1.created_at.timestamp() + 60)
    assert await env.memories() == [] and await committer.commits.for_chat("org1", "ns", "chat-1") == []
    t2 = await env.turn(2, "I have two cats.", commit_after=120)   # the newest turn's deadline counts
    env.clock.now = t1.created_at.timestamp() + 61
    later = await committer.commit(KEY)
    assert later.status == "not_idle" and later.retry_at == pytest.approx(due_time([t1, t2]))
    env.clock.now = due_time([t1, t2])
    assert (await committer.commit(KEY)).status == "committed"


async def test_nothing_to_commit(env: Env) -> None:
    committer = await env.committer()
    assert (await committer.commit(ChatKey("org1", "ns", "no-such-chat"))).status == "nothing"
    t1 = await env.turn(1, "What time is it?")   # a question: no fact in it
    env.clock.now = due_time([t1]) + 1
    result = await committer.commit(KEY)
    assert result.status == "committed" and result.memories == []
    assert (await committer.commit(KEY)).status == "nothing"


async def test_later_turns_are_committed_separately(env: Env) -> None:
    t1 = await env.turn(1, "I live in Porto.")
    committer = await env.committer()
    env.clock.now = due_time([t1]) + 1
    first = await committer.commit(KEY)
    t2 = await env.turn(2, "I started learning Japanese.")
    env.clock.now = due_time([t1, t2]) + 1
    second = await committer.commit(KEY)
    assert second.status == "committed"
    assert [(m.content, m.source_turn_id) for m in second.memories] == [("I started learning Japanese.", t2.turn_id)]
    rows = sorted(await committer.commits.for_chat("org1", "ns", "chat-1"), key=lambda r: r.from_seq)
    assert [(r.from_seq, r.to_seq, r.state) for r in rows] == [(1, 1, "done"), (2, 2, "done")]
    assert len(await env.memories()) == len(first.memories) + 1


async def test_an_edit_after_the_commit_is_committed_too(env: Env) -> None:
    t1 = await env.turn(1, "I live in Paris.")
    committer = await env.committer()
    env.clock.now = due_time([t1]) + 1
    assert [m.content for m in (await committer.commit(KEY)).memories] == ["I live in Paris."]
    edit = await env.turn(1, "I live in Rome.")    # the user edits that message later: it replaces turn 1
    env.clock.now = due_time([edit]) + 1
    result = await committer.commit(KEY)
    assert result.status == "committed" and [m.content for m in result.memories] == ["I live in Rome."]
    assert (await committer.commit(KEY)).status == "nothing"     # the revision is committed once
    rows = await committer.commits.for_chat("org1", "ns", "chat-1")
    assert {(r.from_seq, r.to_seq, r.state, tuple(r.turn_ids or ())) for r in rows} == {
        (1, 1, "done", (edit.turn_id,)), (1, 1, "done", (t1.turn_id,))}
    assert len({r.commit_key for r in rows}) == 2
    # what the replaced message said is superseded by what it says now
    assert result.superseded == 1 and [m.content for m in await env.memories()] == ["I live in Rome."]
    assert await env.turnlog.uncommitted() == []


async def committed_then_edited(env: Env, said: str, edited: str) -> tuple[Committer, TurnRecord, TurnRecord]:
    """Turn 1 says ``said`` and is committed; then the user edits it to ``edited`` and the chat goes idle."""
    t1 = await env.turn(1, said)
    committer = await env.committer()
    env.clock.now = due_time([t1]) + 1
    assert (await committer.commit(KEY)).status == "committed"
    edit = await env.turn(1, edited)
    env.clock.now = due_time([edit]) + 1
    return committer, t1, edit


async def test_a_revision_taken_over_from_a_dead_owner_keeps_its_key_and_saved_facts(env: Env) -> None:
    committer, _, edit = await committed_then_edited(env, "I live in Paris.", "I live in Rome.")
    dead = await CommitLog.open(env.db, lease=timedelta(seconds=-1))
    from app.commits.log import revision_digest
    row = await dead.claim("org1", "ns", "chat-1", 1, 1, "dead-worker", turn_ids=[edit.turn_id],
                           revision=revision_digest([edit.turn_id]))
    saved = [ExtractedFact("I keep bees on my roof.", ["bees"], edit.turn_id)]
    assert row is not None and await dead.save_facts(row, msgspec.json.encode(saved).decode())
    result = await committer.commit(KEY)
    assert result.status == "committed" and [m.content for m in result.memories] == ["I keep bees on my roof."]
    assert result.memories[0].id == memory_id(row.commit_key, 0)
    assert (await committer.commit(KEY)).status == "nothing"
    assert len(await committer.commits.for_chat("org1", "ns", "chat-1")) == 2


async def test_an_edit_and_a_new_turn_are_committed_together(env: Env) -> None:
    t1 = await env.turn(1, "I live in Paris.")
    t2 = await env.turn(2, "I play the oboe.")
    committer = await env.committer()
    env.clock.now = due_time([t1, t2]) + 1
    await committer.commit(KEY)
    edit = await env.turn(2, "I play the bassoon.")           # turn 2 edited, then the conversation goes on
    t3 = await env.turn(3, "My brother Tom is a pilot.")
    env.clock.now = due_time([edit, t3]) + 1
    result = await committer.commit(KEY)
    assert sorted(m.content for m in result.memories) == ["I play the bassoon.", "My brother Tom is a pilot."]
    rows = await committer.commits.for_chat("org1", "ns", "chat-1")
    assert sorted((r.from_seq, r.to_seq) for r in rows) == [(1, 2), (2, 3)]
    assert (await committer.commit(KEY)).status == "nothing"
    # what the edited message said is superseded by what it says now; the untouched turn's memory stays
    assert sorted(m.content for m in await env.memories()) == [
        "I live in Paris.", "I play the bassoon.", "My brother Tom is a pilot."]
    everything, _ = await env.store.list("org1", "ns", limit=100, include_superseded=True)
    oboe = [m for m in everything if m.state == "superseded"]
    assert [(m.content, m.superseded_by) for m in oboe] == [
        ("I play the oboe.", next(m.id for m in result.memories if m.content == "I play the bassoon."))]


async def test_an_edit_that_says_nothing_to_remember_keeps_the_old_memories(env: Env) -> None:
    committer, _, _ = await committed_then_edited(env, "I live in Paris.", "What time is it?")
    assert (await committer.commit(KEY)).status == "committed"
    assert [m.content for m in await env.memories()] == ["I live in Paris."]


async def test_a_regenerated_reply_after_the_commit_adds_no_second_copy(env: Env) -> None:
    t1 = await env.turn(1, "I have a dog named Biscuit.")
    committer = await env.committer()
    env.clock.now = due_time([t1]) + 1
    await committer.commit(KEY)
    again = await env.turn(1, "I have a dog named Biscuit.")   # same message, a new reply
    env.clock.now = due_time([again]) + 1
    assert (await committer.commit(KEY)).status == "committed"
    assert [m.content for m in await env.memories()] == ["I have a dog named Biscuit."]


async def test_a_commit_held_by_a_live_owner_is_busy(env: Env) -> None:
    t1 = await env.turn(1, "I grew up in Oslo.")
    env.clock.now = due_time([t1]) + 1
    holder = await env.committer(owner="holder")
    row = await holder.commits.claim("org1", "ns", "chat-1", 1, 1, "holder")
    assert row is not None
    result = await (await env.committer(owner="w2")).commit(KEY)
    assert result.status == "busy" and result.retry_at >= row.lease_until.timestamp()
    assert await env.memories() == []


async def test_two_committers_racing_commit_once(env: Env) -> None:
    t1 = await env.turn(1, "I drive a red bicycle to work.")
    env.clock.now = due_time([t1]) + 1
    committers = [await env.committer(owner=f"w{i}") for i in range(2)]
    results: list = []

    async def run(c: Committer) -> None:
        results.append(await c.commit(KEY))

    async with anyio.create_task_group() as group:
        for c in committers:
            group.start_soon(run, c)
    statuses = sorted(r.status for r in results)
    assert statuses.count("committed") == 1 and set(statuses) <= {"committed", "busy", "nothing"}
    assert len(await env.memories()) == 1


async def test_an_expired_lease_is_taken_over_with_the_saved_facts(env: Env) -> None:
    t1 = await env.turn(1, "I live in Lyon.")
    env.clock.now = due_time([t1]) + 1
    dead = await CommitLog.open(env.db, lease=timedelta(seconds=-1))   # its lease ran out the moment it claimed
    row = await dead.claim("org1", "ns", "chat-1", 1, 1, "dead-worker")
    saved = [ExtractedFact("I keep bees on my roof.", ["bees"], t1.turn_id)]   # not what the heuristic would say
    assert row is not None and await dead.save_facts(row, msgspec.json.encode(saved).decode())
    result = await (await env.committer(owner="w2")).commit(KEY)
    assert result.status == "committed" and result.retry_at is not None   # more turns may wait: look again
    [memory] = result.memories
    assert (memory.content, memory.source_turn_id, memory.id) == ("I keep bees on my roof.", t1.turn_id,
                                                                  memory_id(row.commit_key, 0))
    assert [m.content for m in await env.memories()] == ["I keep bees on my roof."]


class CrashAfterAdd:
    """The memory store as seen by a worker that dies right after writing the memories."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def add(self, *args: Any, **kwargs: Any) -> Any:
        await self._store.add(*args, **kwargs)
        raise RuntimeError("worker killed")


async def test_a_takeover_after_the_memories_were_written_rewrites_the_same_ids(env: Env) -> None:
    # two facts: a sentence stating an attribute (where the user lives) stays a fact of its own
    t1 = await env.turn(1, "I was born in Quebec. I live in Lyon.")
    env.clock.now = due_time([t1]) + 1
    dying = await env.committer(owner="dying", lease=timedelta(seconds=-1), store=CrashAfterAdd(env.store))
    with pytest.raises(RuntimeError, match="worker killed"):
        await dying.commit(KEY)
    written = sorted(m.id for m in await env.memories())
    assert len(written) == 2
    result = await (await env.committer(owner="w2")).commit(KEY)
    assert result.status == "committed" and sorted(m.id for m in result.memories) == written
    assert sorted(m.id for m in await env.memories()) == written
    [row] = await result_rows(env)
    assert (row.state, row.owner) == ("done", "w2")


async def result_rows(env: Env) -> list:
    return await (await CommitLog.open(env.db, lease=LEASE)).for_chat("org1", "ns", "chat-1")


async def test_tenants_are_committed_apart(env: Env) -> None:
    other = ChatKey("org2", "ns", "chat-1")
    t1 = await env.turn(1, "I own a sailboat.")
    t2 = await env.turn(1, "I collect old maps.", key=other)
    env.clock.now = due_time([t1, t2]) + 1
    committer = await env.committer()
    assert [m.content for m in (await committer.commit(other)).memories] == ["I collect old maps."]
    assert await env.memories() == []
    assert [m.content for m in (await committer.commit(KEY)).memories] == ["I own a sailboat."]
    assert [m.content for m in await env.memories(other)] == ["I collect old maps."]


class _LaneRecordingEmbedder:
    """4-d vectors from the text's length; records whether each call was marked background."""

    name = "test:lanes"
    dim = 4

    def __init__(self) -> None:
        self.marks: list[bool] = []

    async def embed(self, texts: Any) -> Any:
        import numpy as np

        from app.memory.embed import _BACKGROUND

        self.marks.append(_BACKGROUND.get())
        vecs = np.array([[1.0, len(t) % 7 + 1.0, 1.0, 1.0] for t in texts], dtype=np.float32)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)

    async def aclose(self) -> None:
        return None


async def test_a_commits_embeddings_are_background_work(env: Env, tmp_path: Path) -> None:
    embedder = _LaneRecordingEmbedder()
    store = await MemoryStore.open(str(tmp_path / "lanes"), embedder)
    try:
        await store.search("org1", "ns", "before any commit")
        assert embedder.marks == [False]  # a request's search is not
        t1 = await env.turn(1, "I live in Lyon and I work as a baker.")
        committer = await env.committer(store=store)
        env.clock.now = due_time([t1]) + 1
        assert (await committer.commit(KEY)).status == "committed"
        assert len(embedder.marks) >= 3 and all(embedder.marks[1:])  # the commit's search and its writes
        await store.search("org1", "ns", "after the commit")
        assert embedder.marks[-1] is False  # the mark does not leak out of the commit
    finally:
        await store.close()
