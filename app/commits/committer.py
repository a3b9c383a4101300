"""Committing an idle conversation: its not-yet-committed turns become memories, exactly once.

turns → claim (``CommitLog``) → extract (saved in the claim) → embed + write memories under ids derived
from the commit key (re-running writes nothing new) → supersede contradicted memories → done.

Every write a commit makes (claim, saved facts, memories, supersessions, done, the turn log's mark) takes the
committer's write lane (``write_concurrency``, default 2) first; the extraction call and the reads do not.
A commit spends most of its time waiting for the extraction model, so many commits can run at once
(``MEMCHAT_COMMIT_CONCURRENCY``) while LanceDB sees at most two of their writes at a time: concurrent writes
to one table conflict and retry, which cost more than the wait. The claims, saved facts, done rows and marks
of commits running at once are written together, one LanceDB write per kind (`app.commits.batching`,
``write_batch`` rows at most).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import anyio
import msgspec

from app.commits.batching import WriteBatcher
from app.commits.log import Claim, CommitLog, CommitRow, commit_key, covered, revision_digest, revision_of
from app.memory.embed import background_embedding
from app.memory.extract import ConversationTurn, ExtractedFact, Extractor
from app.memory.models import Memory, NewMemory
from app.memory.store import MemoryStore
from app.turns.records import CommittedMark
from app.turns.turnlog import TurnLog, TurnRecord

log = logging.getLogger("memchat.commit")

_ID_NAMESPACE = uuid.UUID("6f1f1c1e-6d65-6d63-6861-74636f6d6d69")
_facts_decoder = msgspec.json.Decoder(list[ExtractedFact])


class ChatKey(msgspec.Struct, frozen=True):
    org_id: str
    namespace: str
    chat_id: str


class CommitResult(msgspec.Struct, frozen=True):
    """``status``: committed | nothing | not_idle | busy | lost. ``retry_at`` (epoch seconds) when the
    conversation must be looked at again."""

    status: str
    retry_at: float | None = None
    memories: list[Memory] = msgspec.field(default_factory=list)
    superseded: int = 0


def memory_id(key: str, index: int) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{key}#{index}"))


def due_time(turns: Sequence[TurnRecord]) -> float:
    last = max(turns, key=lambda t: t.created_at)
    return last.created_at.timestamp() + last.commit_after


def _replaced_candidates(rows: Sequence[CommitRow], turns: Sequence[TurnRecord],
                         pending: Sequence[TurnRecord]) -> list[str]:
    """For a revision: the memories of the done commits that covered a turn row since replaced at one of the
    pending seqs (each memory's own source turn is checked in `Committer._retire_replaced`)."""
    current = {t.turn_id for t in turns}
    seqs = {t.seq for t in pending}
    return [memory_id for row in rows
            if row.state == "done" and row.turn_ids is not None and not set(row.turn_ids) <= current
            and any(row.from_seq <= s <= row.to_seq for s in seqs)
            for memory_id in row.memory_ids]


class Committer:
    def __init__(self, turnlog: TurnLog, commits: CommitLog, store: MemoryStore, extractor: Extractor, *,
                 owner: str, memory_model: str | None = None,
                 on_committed: Callable[[ChatKey, list[Memory]], None] | None = None,
                 clock: Callable[[], float] = time.time, write_concurrency: int = 2, write_batch: int = 64) -> None:
        self.turnlog = turnlog
        self.commits = commits
        self.store = store
        self.extractor = extractor
        self.owner = owner
        self.memory_model = memory_model
        self.on_committed = on_committed
        self.clock = clock  # epoch seconds: idleness is judged against it
        self.writes = anyio.CapacityLimiter(max(1, int(write_concurrency)))  # the write lane (module docstring)
        self.claims = WriteBatcher(commits.claim_many, lane=self.writes, max_batch=write_batch)
        self.row_updates = WriteBatcher(commits.update_many, lane=self.writes, max_batch=write_batch)
        self.marks = WriteBatcher(self._mark_many, lane=self.writes, max_batch=write_batch)

    async def pending_turns(self, key: ChatKey, turns: Sequence[TurnRecord]) -> tuple[list[TurnRecord], list[CommitRow], int]:
        """The turns no done commit covers (new ones, and edits or regenerations of committed ones), the
        conversation's commit rows, and the last seq a done commit reaches."""
        rows = await self.commits.for_chat(key.org_id, key.namespace, key.chat_id)
        done = [r for r in rows if r.state == "done"]
        done_through = max((r.to_seq for r in done), default=0)
        return [t for t in turns if t.seq > done_through or not covered(done, t)], rows, done_through

    async def _mark(self, key: ChatKey, through_seq: int, uncovered: Sequence[TurnRecord] = ()) -> None:
        """Record in the turn log that the conversation is committed through ``through_seq``, except the
        turns still ``uncovered`` (it only spares start-up recovery the rows; a failure is logged, never
        fatal)."""
        try:
            await self.marks.submit(CommittedMark(key.org_id, key.namespace, key.chat_id, through_seq,
                                                  tuple(t.turn_id for t in uncovered)))
        except Exception as exc:
            log.warning("marking chat %s committed through %d failed: %s", key.chat_id, through_seq, exc)

    async def _mark_many(self, marks: list[CommittedMark]) -> list[None]:
        await self.turnlog.mark_many(marks)
        return [None] * len(marks)

    async def commit(self, key: ChatKey) -> CommitResult:
        with background_embedding():  # no client waits for a commit: its embeddings queue behind requests'
            return await self._commit(key)

    async def _commit(self, key: ChatKey) -> CommitResult:
        turns = await self.turnlog.chat_turns(key.org_id, key.namespace, key.chat_id)
        if not turns:
            return CommitResult("nothing")
        due = due_time(turns)
        if due > self.clock():
            return CommitResult("not_idle", retry_at=due)
        pending, rows, done_through = await self.pending_turns(key, turns)
        now = datetime.now(UTC)
        active = [r for r in rows if r.lease_valid(now) and r.owner != self.owner]
        if active:
            return CommitResult("busy", retry_at=max(r.lease_until for r in active).timestamp() + 0.5)
        stale = [r for r in rows if r.state != "done"]
        revision = ""
        if stale:  # a commit whose owner died: finish that exact range first, with its saved facts
            target = min(stale, key=lambda r: r.from_seq)
            from_seq, to_seq, revision = target.from_seq, target.to_seq, revision_of(target.commit_key)
            pending = [t for t in turns if from_seq <= t.seq <= to_seq]
        elif not pending:  # marks what is left unmarked: a crash between commit and mark, or turn rows
            await self._mark(key, done_through)  # an edit replaced before their commit (not in ``turns``)
            return CommitResult("nothing")
        else:
            from_seq, to_seq = pending[0].seq, pending[-1].seq
            if from_seq <= done_through:  # an edit of committed turns: a revision (app.commits.log)
                revision = revision_digest([t.turn_id for t in pending])
        target_key = commit_key(key.org_id, key.namespace, key.chat_id, from_seq, to_seq, revision)
        row = await self.claims.submit(Claim(key.org_id, key.namespace, key.chat_id, from_seq, to_seq, self.owner,
                                             tuple(t.turn_id for t in pending), revision,
                                             seen=next((r for r in rows if r.commit_key == target_key), None),
                                             seen_known=True))
        if row is None:
            return CommitResult("busy", retry_at=self.clock() + self.commits.lease.total_seconds())
        replaced = _replaced_candidates(rows, turns, pending) if revision else []
        result = await self._run(key, row, pending, retire=(replaced, turns))
        if result.status == "committed":
            done = [r for r in rows if r.state == "done"] + [msgspec.structs.replace(row, state="done")]
            await self._mark(key, max(row.to_seq, done_through), [t for t in turns if not covered(done, t)])
        if stale:  # more turns may be waiting behind the recovered range
            return msgspec.structs.replace(result, retry_at=self.clock())
        return result

    async def _existing(self, key: ChatKey, pending: Sequence[TurnRecord]) -> list[Memory]:
        text = " ".join(t.user for t in pending)[-2000:]
        if not text.strip():
            return []
        hits = await self.store.search(key.org_id, key.namespace, text, limit=10)
        return [h.memory for h in hits]

    async def _retire_replaced(self, key: ChatKey, candidates: Sequence[str], turns: Sequence[TurnRecord],
                               pending: Sequence[TurnRecord], memories: Sequence[Memory]) -> int:
        """Supersede the current memories made from a turn row an edit replaced, each by the first new memory
        made from the turn now at that seq. A replaced turn whose edit yields no memory keeps its memories
        (nothing says they are wrong); the extractor may still supersede them as contradicted."""
        current = {t.turn_id for t in turns}
        new_turn_at = {t.seq: t.turn_id for t in pending}
        first_from: dict[str, str] = {}
        for memory in memories:
            first_from.setdefault(memory.source_turn_id or "", memory.id)
        superseded = 0
        for old_id in candidates:
            old = await self.store.get(key.org_id, key.namespace, old_id)
            if old is None or old.state != "current" or not old.source_turn_id or old.source_turn_id in current:
                continue
            source = await self.turnlog.find_turn(key.org_id, key.namespace, old.source_turn_id)
            new_id = None if source is None else first_from.get(new_turn_at.get(source.seq, ""))
            if new_id is not None and new_id != old_id:
                superseded += int(await self.store.supersede(key.org_id, key.namespace, old_id, new_id))
        return superseded

    async def _run(self, key: ChatKey, row: CommitRow, pending: Sequence[TurnRecord], *,
                   retire: tuple[Sequence[str], Sequence[TurnRecord]] = ((), ())) -> CommitResult:
        existing = await self._existing(key, pending)
        if row.facts is not None:
            facts = _facts_decoder.decode(row.facts)
        else:
            turns = [ConversationTurn(seq=t.seq, turn_id=t.turn_id, user=t.user, assistant=t.assistant,
                                      created_at=t.created_at) for t in pending]
            model = self.memory_model or next((t.model for t in reversed(pending) if t.model), None)
            facts = await self.extractor.extract(turns, existing, model=model, now=datetime.now(UTC))
            saved = await self.row_updates.submit(self.commits.facts_saved(row, msgspec.json.encode(facts).decode()))
            if not saved:
                return CommitResult("lost")
            row = msgspec.structs.replace(row, state="extracted")
        by_turn = {t.turn_id: t for t in pending}
        items = []
        for index, fact in enumerate(facts):
            turn = by_turn.get(fact.source_turn_id or "") or pending[-1]
            items.append(NewMemory(content=fact.content, source="conversation", source_thread_id=key.chat_id,
                                   source_turn_id=turn.turn_id, entities=list(fact.entities),
                                   created_at=turn.created_at, id=memory_id(row.commit_key, index)))
        known = {m.id for m in existing}
        superseded = 0
        async with self.writes:
            memories = await self.store.add(key.org_id, key.namespace, items) if items else []
            for fact, memory in zip(facts, memories, strict=False):
                for old_id in fact.supersedes:
                    if old_id in known and old_id != memory.id:
                        superseded += int(await self.store.supersede(key.org_id, key.namespace, old_id, memory.id))
            if retire[0]:  # a revision: what the replaced turns said (see `_retire_replaced`)
                superseded += await self._retire_replaced(key, retire[0], retire[1], pending, memories)
        finished = await self.row_updates.submit(self.commits.finished(row, [m.id for m in memories]))
        if not finished:
            return CommitResult("lost")
        log.info("committed chat %s turns %d-%d: %d memories, %d superseded", key.chat_id, row.from_seq,
                 row.to_seq, len(memories), superseded)
        if self.on_committed is not None and memories:
            self.on_committed(key, memories)
        return CommitResult("committed", memories=memories, superseded=superseded)

