"""Commit records: who commits which turns of a conversation, exactly once.

One row per (conversation, turn range) in the LanceDB table ``commits``, keyed by ``commit_key`` (a
LanceDB unenforced primary key, so concurrent inserts of one key conflict at commit time instead of
duplicating). A commit goes ``claimed`` → ``extracted`` (the extracted facts are saved in the row) →
``done``. A claim carries a lease: if its owner dies, the lease runs out and another process (or the
restarted one) takes the row over *with the facts already saved*, so the LLM is not asked twice and the
memories written — under ids derived from the commit key — are the same ones. Every transition is a
conditional merge-insert followed by a read-back, so two workers or replicas never both own a commit.

A row records the turn ids it covers (``turn_ids``). A turn edited or regenerated after its commit is a new
turn row with the same seq and a new id, which no done commit covers (`covered`): it is committed again as a
*revision*, a commit of the same seqs whose key carries a digest of the new turns' ids (``…/1-1~<digest>``),
so it never collides with the first commit and is itself committed exactly once. Rows written before
``turn_ids`` existed (null after the start-up migration) cover the turns of their range recorded before the
row was last updated.
"""

from __future__ import annotations

import logging
import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec
import pyarrow as pa
from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from app.storage import filters as F
from app.storage import tables
from app.storage.tables import PK_META, TIMESTAMP, retry
from app.times import as_utc

log = logging.getLogger("memchat.commits")

COMMITS = "commits"
_TS = TIMESTAMP

COMMIT_SCHEMA = pa.schema([
    pa.field("commit_key", pa.string(), nullable=False, metadata={PK_META: b"1"}),
    pa.field("tenant", pa.string(), nullable=False),
    pa.field("chat_id", pa.string(), nullable=False),
    pa.field("from_seq", pa.int32(), nullable=False),
    pa.field("to_seq", pa.int32(), nullable=False),
    pa.field("state", pa.string(), nullable=False),
    pa.field("owner", pa.string(), nullable=False),
    pa.field("lease_until", _TS, nullable=False),
    pa.field("facts", pa.string()),
    pa.field("memory_ids", pa.list_(pa.string())),
    pa.field("updated_at", _TS, nullable=False),
    pa.field("turn_ids", pa.list_(pa.string())),  # added by a start-up migration (`CommitLog.open`)
])


class CommitRow(msgspec.Struct, kw_only=True):
    commit_key: str
    tenant: str
    chat_id: str
    from_seq: int
    to_seq: int
    state: str            # claimed | extracted | done
    owner: str
    lease_until: datetime
    facts: str | None = None
    memory_ids: list[str] = msgspec.field(default_factory=list)
    updated_at: datetime
    turn_ids: list[str] | None = None   # None: a row written before the column existed

    def lease_valid(self, now: datetime) -> bool:
        return self.state != "done" and self.lease_until > now


class Claim(msgspec.Struct, frozen=True):
    """What `CommitLog.claim` is asked: ``owner`` wants to commit turns ``from_seq..to_seq`` of a chat."""

    org_id: str
    namespace: str
    chat_id: str
    from_seq: int
    to_seq: int
    owner: str
    turn_ids: tuple[str, ...] | None = None
    revision: str = ""
    # the caller read this commit's row a moment ago (None: there was none): `claim_many` need not read it
    # again; a stale view is harmless (the write is conditional and read back; saved facts are never dropped)
    seen: CommitRow | None = None
    seen_known: bool = False


def commit_key(org_id: str, namespace: str, chat_id: str, from_seq: int, to_seq: int, revision: str = "") -> str:
    key = f"{F.tenant_key(org_id, namespace)}/{len(chat_id)}:{chat_id}/{from_seq}-{to_seq}"
    return f"{key}~{revision}" if revision else key


def revision_of(key: str) -> str:
    """The revision digest of a commit key ("" for a first commit)."""
    return key.rpartition("/")[2].partition("~")[2]


def revision_digest(turn_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(turn_ids).encode()).hexdigest()[:16]


class TurnRef(Protocol):
    """What `covered` needs of a turn (`app.turns.records.TurnRecord` has it)."""

    @property
    def turn_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


def covered(rows: Iterable[CommitRow], turn: TurnRef) -> bool:
    """Whether a done commit covers ``turn`` (this exact turn row, not just its seq)."""
    for row in rows:
        if row.state != "done" or not row.from_seq <= turn.seq <= row.to_seq:
            continue
        if turn.turn_id in row.turn_ids if row.turn_ids is not None else turn.created_at <= row.updated_at:
            return True
    return False


def _to_arrow(rows: list[CommitRow]) -> pa.Table:
    return pa.Table.from_pylist([msgspec.structs.asdict(r) for r in rows], schema=COMMIT_SCHEMA)


def _from_row(row: dict[str, object]) -> CommitRow:
    data = dict(row)
    data["lease_until"] = as_utc(row["lease_until"])  # type: ignore[arg-type]
    data["updated_at"] = as_utc(row["updated_at"])  # type: ignore[arg-type]
    data["memory_ids"] = list(row.get("memory_ids") or [])  # type: ignore[call-overload]
    ids = row.get("turn_ids")
    data["turn_ids"] = None if ids is None else list(ids)  # type: ignore[call-overload]
    return msgspec.convert(data, CommitRow)


class CommitLog:
    def __init__(self, table: AsyncTable, *, lease: timedelta) -> None:
        self._table = table
        self.lease = lease

    @property
    def table(self) -> AsyncTable:
        return self._table

    @classmethod
    async def open(cls, db: AsyncConnection, *, lease: timedelta) -> CommitLog:
        table = await tables.open_or_create(db, COMMITS, COMMIT_SCHEMA)
        await tables.add_missing_columns(table, COMMIT_SCHEMA, what=COMMITS)  # stores of earlier releases
        return cls(table, lease=lease)

    async def _query(self, where: str) -> list[CommitRow]:
        table = await self._table.query().where(where).to_arrow()
        return [_from_row(r) for r in table.to_pylist()]

    async def for_chat(self, org_id: str, namespace: str, chat_id: str) -> list[CommitRow]:
        return await self._query(F.chat_filter(org_id, namespace, chat_id))

    async def done_through(self, chats: Iterable[tuple[str, str, str]], chunk: int = 200) -> dict[tuple[str, str, str], int]:
        """For each (org, namespace, chat id): the last seq a done commit covers (absent: none)."""
        by_tenant: dict[tuple[str, str], list[str]] = {}
        for org_id, namespace, chat_id in chats:
            by_tenant.setdefault((org_id, namespace), []).append(chat_id)
        out: dict[tuple[str, str, str], int] = {}
        for (org_id, namespace), chat_ids in by_tenant.items():
            for start in range(0, len(chat_ids), chunk):
                where = F.and_(F.tenant_filter(org_id, namespace), "state = 'done'",
                               F.in_("chat_id", chat_ids[start:start + chunk]))
                for row in await self._query(where):
                    key = (org_id, namespace, row.chat_id)
                    out[key] = max(out.get(key, 0), row.to_seq)
        return out

    async def get(self, key: str) -> CommitRow | None:
        rows = await self._query(f"commit_key = {F.sql_str(key)}")
        return rows[0] if rows else None

    async def _by_keys(self, keys: Sequence[str]) -> dict[str, CommitRow]:
        if not keys:
            return {}
        return {r.commit_key: r for r in await self._query(F.in_("commit_key", sorted(set(keys))))}

    async def claim(self, org_id: str, namespace: str, chat_id: str, from_seq: int, to_seq: int,
                    owner: str, *, turn_ids: Sequence[str] | None = None, revision: str = "") -> CommitRow | None:
        """Own the commit of turns ``from_seq..to_seq`` (the turn rows ``turn_ids``; ``revision``: see the
        module docstring): a new row, or a row whose lease ran out (its saved facts and turn ids kept).
        Returns the row if ``owner`` now holds it, else None."""
        claim = Claim(org_id, namespace, chat_id, from_seq, to_seq, owner,
                      None if turn_ids is None else tuple(turn_ids), revision)
        return (await self.claim_many([claim]))[0]

    async def claim_many(self, claims: Sequence[Claim]) -> list[CommitRow | None]:
        """`claim` for several commits in one LanceDB write (one read before it, of the rows the callers have not
        just read themselves, and one after)."""
        keys = [commit_key(c.org_id, c.namespace, c.chat_id, c.from_seq, c.to_seq, c.revision) for c in claims]
        now = datetime.now(UTC)
        before = await self._by_keys([k for c, k in zip(claims, keys, strict=True) if not c.seen_known])
        before.update({k: c.seen for c, k in zip(claims, keys, strict=True) if c.seen_known and c.seen is not None})
        settled: dict[int, CommitRow | None] = {}
        rows: dict[str, CommitRow] = {}
        for i, (claim, key) in enumerate(zip(claims, keys, strict=True)):
            existing = before.get(key)
            if existing is not None and (existing.state == "done" or existing.lease_valid(now)):
                settled[i] = existing if existing.owner == claim.owner and existing.state != "done" else None
                continue
            rows.setdefault(key, CommitRow(
                commit_key=key, tenant=F.tenant_key(claim.org_id, claim.namespace), chat_id=claim.chat_id,
                from_seq=claim.from_seq, to_seq=claim.to_seq, state=existing.state if existing else "claimed",
                owner=claim.owner, lease_until=now + self.lease, facts=existing.facts if existing else None,
                memory_ids=[], updated_at=now,
                turn_ids=existing.turn_ids if existing else (None if claim.turn_ids is None else list(claim.turn_ids)),
            ))
        if not rows:
            return [settled[i] for i in range(len(claims))]
        expired = (f"target.state <> 'done' AND target.lease_until < {F.sql_timestamp(now)}"
                   " AND (target.facts IS NULL OR source.facts IS NOT NULL)")  # a stale view never drops saved facts
        data = _to_arrow(list(rows.values()))
        await retry(
            lambda: self._table.merge_insert("commit_key")
            .when_matched_update_all(where=expired)
            .when_not_matched_insert_all()
            .execute(data),
            what="commits.claim",
        )
        after = await self._by_keys(list(rows))
        out: list[CommitRow | None] = []
        for i, (claim, key) in enumerate(zip(claims, keys, strict=True)):
            if i in settled:
                out.append(settled[i])
                continue
            mine = after.get(key)
            out.append(None if mine is None or mine.owner != claim.owner or mine.state == "done" else mine)
        return out

    async def update_many(self, rows: Sequence[CommitRow]) -> list[bool]:
        """Write rows their owner holds (`facts_saved`, `finished`) in one LanceDB write: each is stored
        only if the stored row still has that owner and is not done. True for each row now stored as given."""
        latest = {r.commit_key: r for r in rows}
        data = _to_arrow(list(latest.values()))
        await retry(
            lambda: self._table.merge_insert("commit_key")
            .when_matched_update_all(where="target.owner = source.owner AND target.state <> 'done'")
            .execute(data),
            what="commits.update",
        )
        stored = await self._by_keys(list(latest))
        return [(s := stored.get(r.commit_key)) is not None and s.owner == r.owner and s.state == r.state
                for r in rows]

    def facts_saved(self, row: CommitRow, facts_json: str) -> CommitRow:
        """``row`` with the extracted facts saved (state ``extracted``, the lease renewed)."""
        now = datetime.now(UTC)
        return msgspec.structs.replace(row, state="extracted", facts=facts_json, updated_at=now,
                                       lease_until=now + self.lease)

    @staticmethod
    def finished(row: CommitRow, memory_ids: list[str]) -> CommitRow:
        """``row`` done, with the ids of the memories it wrote."""
        return msgspec.structs.replace(row, state="done", memory_ids=memory_ids, updated_at=datetime.now(UTC))

    async def save_facts(self, row: CommitRow, facts_json: str) -> bool:
        return (await self.update_many([self.facts_saved(row, facts_json)]))[0]

    async def finish(self, row: CommitRow, memory_ids: list[str]) -> bool:
        return (await self.update_many([self.finished(row, memory_ids)]))[0]

    async def delete_tenant(self, org_id: str, namespace: str) -> int:
        """Forget a tenant's commit records (forget-user)."""
        return await tables.delete_tenant(self._table, org_id, namespace, what=COMMITS)

    async def maintain(self) -> None:
        await tables.ensure_btree(self._table, ("commit_key",), what=COMMITS)
        await tables.optimize(self._table, what=COMMITS)
