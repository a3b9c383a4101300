"""`app.commits.log`: claims, leases, saved facts and finishing on a real LanceDB table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from lancedb.db import AsyncConnection

from app.commits.log import Claim, CommitLog, commit_key
from app.storage.connection import connect

LEASE = timedelta(minutes=5)
EXPIRED = timedelta(seconds=-1)   # every claim made with this lease has already run out


@pytest.fixture
async def db(tmp_path: Path) -> AsyncConnection:
    return await connect(str(tmp_path))


def test_commit_keys_are_injective() -> None:
    assert commit_key("o", "n", "c", 1, 3) != commit_key("o", "n", "c", 1, 4)
    assert commit_key("a/b", "c", "d", 1, 1) != commit_key("a", "b/c", "d", 1, 1)
    assert commit_key("o", "n", "c/1", 1, 1) != commit_key("o", "n/c", "1", 1, 1)


async def test_a_claim_is_held_by_its_owner_only(db: AsyncConnection) -> None:
    log = await CommitLog.open(db, lease=LEASE)
    row = await log.claim("org1", "ns", "chat", 1, 2, "worker-a")
    assert row is not None and (row.owner, row.state, row.from_seq, row.to_seq) == ("worker-a", "claimed", 1, 2)
    assert row.facts is None and row.memory_ids == []
    assert row.lease_until > datetime.now(UTC) + LEASE - timedelta(minutes=1)
    assert await log.claim("org1", "ns", "chat", 1, 2, "worker-b") is None
    again = await log.claim("org1", "ns", "chat", 1, 2, "worker-a")            # idempotent for the owner
    assert again is not None and again.commit_key == row.commit_key
    other = await log.claim("org1", "ns", "chat", 3, 3, "worker-b")            # another range is free
    assert other is not None and other.owner == "worker-b"
    assert len(await log.for_chat("org1", "ns", "chat")) == 2


async def test_two_owners_racing_for_one_claim(db: AsyncConnection) -> None:
    logs = [await CommitLog.open(db, lease=LEASE) for _ in range(4)]
    won: dict[str, object] = {}

    async def claim(i: int) -> None:
        won[f"w{i}"] = await logs[i].claim("org1", "ns", "chat", 1, 1, f"w{i}")

    async with anyio.create_task_group() as group:
        for i in range(len(logs)):
            group.start_soon(claim, i)
    holders = [owner for owner, row in won.items() if row is not None]
    assert len(holders) == 1
    [row] = await logs[0].for_chat("org1", "ns", "chat")
    assert row.owner == holders[0]


async def test_owners_racing_to_take_over_an_expired_lease(db: AsyncConnection) -> None:
    dead = await CommitLog.open(db, lease=EXPIRED)
    row = await dead.claim("org1", "ns", "chat", 1, 1, "dead")
    assert row is not None and await dead.save_facts(row, "[]")
    logs = [await CommitLog.open(db, lease=LEASE) for _ in range(3)]
    won: dict[str, object] = {}

    async def claim(i: int) -> None:
        won[f"w{i}"] = await logs[i].claim("org1", "ns", "chat", 1, 1, f"w{i}")

    async with anyio.create_task_group() as group:
        for i in range(len(logs)):
            group.start_soon(claim, i)
    holders = [owner for owner, held in won.items() if held is not None]
    assert len(holders) == 1
    [stored] = await logs[0].for_chat("org1", "ns", "chat")
    assert (stored.owner, stored.state, stored.facts) == (holders[0], "extracted", "[]")


async def test_an_expired_lease_is_taken_over_with_the_saved_facts(db: AsyncConnection) -> None:
    dying = await CommitLog.open(db, lease=EXPIRED)
    log = await CommitLog.open(db, lease=LEASE)
    row = await dying.claim("org1", "ns", "chat", 1, 2, "dead")
    assert row is not None
    assert await dying.save_facts(row, '[{"content": "I live in Lyon."}]')
    taken = await log.claim("org1", "ns", "chat", 1, 2, "alive")
    assert taken is not None and taken.owner == "alive"
    assert (taken.state, taken.facts) == ("extracted", '[{"content": "I live in Lyon."}]')
    # the old owner learns it lost the commit: its updates no longer apply
    assert not await dying.finish(row, ["m1"])
    stored = await log.get(taken.commit_key)
    assert stored is not None and (stored.owner, stored.state) == ("alive", "extracted")


async def test_a_valid_lease_is_not_taken_over(db: AsyncConnection) -> None:
    log = await CommitLog.open(db, lease=LEASE)
    row = await log.claim("org1", "ns", "chat", 1, 1, "a")
    assert row is not None and await log.save_facts(row, "[]")
    assert await log.claim("org1", "ns", "chat", 1, 1, "b") is None
    assert (await log.get(row.commit_key)).owner == "a"


async def test_finish_makes_a_commit_final(db: AsyncConnection) -> None:
    log = await CommitLog.open(db, lease=EXPIRED)   # even an expired lease cannot reopen a done commit
    row = await log.claim("org1", "ns", "chat", 1, 3, "a")
    assert row is not None
    assert await log.save_facts(row, "[]")
    extracted = await log.get(row.commit_key)
    assert extracted is not None and extracted.state == "extracted" and extracted.facts == "[]"
    assert await log.finish(extracted, ["m1", "m2"])
    done = await log.get(row.commit_key)
    assert done is not None and (done.state, done.memory_ids) == ("done", ["m1", "m2"])
    assert not done.lease_valid(datetime.now(UTC) - timedelta(days=1))
    assert await log.claim("org1", "ns", "chat", 1, 3, "a") is None
    assert await log.claim("org1", "ns", "chat", 1, 3, "b") is None
    await log.finish(extracted, ["m3"])              # a second finish changes nothing
    assert (await log.get(row.commit_key)).memory_ids == ["m1", "m2"]
    assert await log.done_through([("org1", "ns", "chat"), ("org1", "ns", "other"), ("org2", "ns", "chat")]) == {
        ("org1", "ns", "chat"): 3}


async def test_rows_are_scoped_by_tenant_and_forgotten_per_tenant(db: AsyncConnection) -> None:
    log = await CommitLog.open(db, lease=LEASE)
    tenants = [("org1", "ns"), ("org1", "' OR 1=1 --"), ("org'", "ns"), ("org1", "ns\\"), ("org1", "ns\x00")]
    for org, ns in tenants:
        assert await log.claim(org, ns, "chat", 1, 1, "a") is not None
    for org, ns in tenants:
        assert [r.chat_id for r in await log.for_chat(org, ns, "chat")] == ["chat"]
    assert await log.delete_tenant("org1", "' OR 1=1 --") == 1
    assert await log.for_chat("org1", "' OR 1=1 --", "chat") == []
    for org, ns in [t for t in tenants if t != ("org1", "' OR 1=1 --")]:
        assert len(await log.for_chat(org, ns, "chat")) == 1
    assert await log.get("no such key") is None


async def test_a_commits_table_made_before_turn_ids_is_migrated_and_its_rows_still_cover(db: AsyncConnection) -> None:
    """The previous release's table: today's schema without ``turn_ids``, with a done row in it."""
    import pyarrow as pa

    from app.commits.log import COMMIT_SCHEMA, COMMITS, covered
    from app.storage.filters import tenant_key
    from app.turns.records import TurnRecord

    old_schema = pa.schema([f for f in COMMIT_SCHEMA if f.name != "turn_ids"])
    finished = datetime.now(UTC)
    old_row = {"commit_key": commit_key("org1", "ns", "chat", 1, 2), "tenant": tenant_key("org1", "ns"), "chat_id": "chat",
               "from_seq": 1, "to_seq": 2, "state": "done", "owner": "w", "lease_until": finished, "facts": None,
               "memory_ids": ["m1"], "updated_at": finished}
    await db.create_table(COMMITS, data=pa.Table.from_pylist([old_row], schema=old_schema), schema=old_schema)
    log = await CommitLog.open(db, lease=LEASE)
    assert "turn_ids" in (await log._table.schema()).names
    [row] = await log.for_chat("org1", "ns", "chat")
    assert (row.state, row.memory_ids, row.turn_ids) == ("done", ["m1"], None)

    def turn(seq: int, at: datetime) -> TurnRecord:
        return TurnRecord(turn_id=f"t{seq}-{at.timestamp()}", chat_id="chat", org_id="org1", namespace="ns",
                          seq=seq, user="u", assistant="a", status="complete", model=None, surface="openai",
                          commit_after=1, prefix_hash="p", transcript_hash="h", created_at=at)

    # a row without turn ids covers the turns of its range recorded before it was finished
    assert covered([row], turn(1, finished - timedelta(seconds=5)))
    assert not covered([row], turn(1, finished + timedelta(seconds=5)))  # an edit made after it
    assert not covered([row], turn(3, finished - timedelta(seconds=5)))  # outside its range
    new = await log.claim("org1", "ns", "chat", 3, 3, "w", turn_ids=["t3"])
    assert new is not None and new.turn_ids == ["t3"]
    await CommitLog.open(db, lease=LEASE)  # a second start finds the column and changes nothing
    assert len(await log.for_chat("org1", "ns", "chat")) == 2


HOSTILE_CHATS = ["chat", "c'); DROP TABLE commits; --", "' OR 1=1 --", "c\\", "c\x00", "ünï'cödé"]


async def test_claims_of_several_commits_share_one_write(db: AsyncConnection) -> None:
    log = await CommitLog.open(db, lease=LEASE)
    other = await CommitLog.open(db, lease=LEASE)
    held = await other.claim("org1", "ns", "held", 1, 1, "b")        # another owner's valid lease
    assert held is not None
    version = await log._table.version()
    claims = [Claim("org1", "ns", chat, 1, 2, "a", ("t1", "t2")) for chat in HOSTILE_CHATS]
    claims += [Claim("org1", "ns", "held", 1, 1, "a"), Claim("org1", "ns", "chat", 1, 2, "a", ("t1", "t2"))]
    rows = await log.claim_many(claims)
    assert await log._table.version() == version + 1                # one write for all of them
    assert [r is not None and (r.chat_id, r.owner, r.turn_ids) for r in rows[:len(HOSTILE_CHATS)]] == [
        (chat, "a", ["t1", "t2"]) for chat in HOSTILE_CHATS]
    assert rows[-2] is None                                           # held by "b"
    assert rows[-1] is not None and rows[-1].commit_key == rows[0].commit_key  # the same key twice: one row
    for chat in HOSTILE_CHATS:
        assert len(await log.for_chat("org1", "ns", chat)) == 1
    assert (await log.get(held.commit_key)).owner == "b"


async def test_updates_of_several_commits_share_one_write_and_leave_done_and_lost_rows_alone(db: AsyncConnection) -> None:
    log = await CommitLog.open(db, lease=LEASE)
    rows = await log.claim_many([Claim("org1", "ns", chat, 1, 1, "a") for chat in HOSTILE_CHATS])
    assert all(rows)
    finished = rows[0]
    assert await log.finish(finished, ["m0"])                        # done: a later update must not apply
    dead = await CommitLog.open(db, lease=EXPIRED)
    stale = await dead.claim("org1", "ns", "expired", 1, 1, "gone")
    assert stale is not None
    taken = await log.claim("org1", "ns", "expired", 1, 1, "a")       # "gone" lost it to "a"
    assert taken is not None
    version = await log._table.version()
    updates = [log.facts_saved(r, f'["fact of {r.chat_id}"]') for r in rows[1:]]
    updates += [log.finished(finished, ["changed"]), log.facts_saved(stale, "[]")]
    # a done row stays as it was (the owner's repeat is answered True, as `finish` always did); a lost row: False
    assert await log.update_many(updates) == [True] * (len(rows) - 1) + [True, False]
    assert await log._table.version() == version + 1
    for row in rows[1:]:
        stored = await log.get(row.commit_key)
        assert (stored.state, stored.facts) == ("extracted", f'["fact of {row.chat_id}"]')
    assert (await log.get(finished.commit_key)).memory_ids == ["m0"]
    assert (await log.get(taken.commit_key)).owner == "a"


async def test_a_claim_made_on_rows_just_read_skips_the_read_and_never_drops_saved_facts(db: AsyncConnection) -> None:
    log = await CommitLog.open(db, lease=LEASE)
    reads: list[int] = []
    by_keys = log._by_keys

    async def counted(keys):  # type: ignore[no-untyped-def]
        reads.append(len(keys))
        return await by_keys(keys)

    log._by_keys = counted  # type: ignore[method-assign]
    row = (await log.claim_many([Claim("org1", "ns", "fresh", 1, 1, "a", seen=None, seen_known=True)]))[0]
    assert row is not None and row.owner == "a"
    assert reads == [0, 1]  # nothing read before the write (the caller had), one read back after it
    # a dead owner saved its facts; this caller's view of the row is from before that: it must not win with it
    dying = await CommitLog.open(db, lease=EXPIRED)
    dead = await dying.claim("org1", "ns", "taken", 1, 1, "dead")
    assert dead is not None
    stale_view = dead                                   # read before the facts were saved
    assert await dying.save_facts(dead, '["the user lives in Lyon"]')
    lost = await log.claim_many([Claim("org1", "ns", "taken", 1, 1, "a", seen=stale_view, seen_known=True)])
    assert lost == [None]
    stored = await log.get(dead.commit_key)
    assert (stored.owner, stored.facts) == ("dead", '["the user lives in Lyon"]')
    taken = await log.claim("org1", "ns", "taken", 1, 1, "a")  # read afresh: taken over, facts kept
    assert taken is not None and (taken.owner, taken.facts) == ("a", '["the user lives in Lyon"]')
