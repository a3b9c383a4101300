"""The durable turn log: every answered turn, written before its response ends.

Turns live in the LanceDB table ``turns`` next to the memories (so it works on a local directory and on
an object store shared by several replicas). ``append`` queues the row and waits; one writer task in the
app's task group drains the queue and makes everything queued durable in one go (group commit):

* with a journal (default, ``MEMCHAT_TURNLOG_JOURNAL=true``): one ``write`` (+ one ``fsync``) to a local
  write-ahead segment (`app.turns.journal`); a flusher moves the rows to the table in batches every
  ``flush_interval`` seconds (or ``flush_rows`` rows). Until then readers of this process see them from
  memory and other workers on the same host from the segment files; processes on *other* hosts (replicas
  sharing an object store) see them after the flush (<= ``flush_interval``). A crash leaves the segment,
  which the next start replays into the table (idempotent on ``turn_id``).
* without (for replicas without a durable local disk): one LanceDB ``add`` per group.

Under load many concurrent turns share one write; alone, a turn waits for exactly one write. Table
versions are compacted by ``maintain()`` in the background.

Rows are append-only. Editing or regenerating the last turn appends a new row with the same ``seq``;
readers take the newest row per (chat, seq).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from app.obs.metrics import Metrics, timed_store_call
from app.storage import filters as F
from app.storage import tables
from app.storage.tables import retry
from app.turns.journal import Journal, Segment, SegmentTail, orphan_segments, read_segment
from app.turns.records import (TURN_SCHEMA, TURNS, CommittedMark, TurnRecord, from_row, latest_per_seq, migrate,
                               to_arrow)

log = logging.getLogger("memchat.turnlog")

MAX_BATCH = 1000


class _Pending:
    __slots__ = ("record", "done", "error")

    def __init__(self, record: TurnRecord) -> None:
        self.record = record
        self.done = anyio.Event()
        self.error: BaseException | None = None


class TurnLog:
    """Append and read turns. ``run_writer`` must run in the app's task group for group commit."""

    def __init__(self, table: AsyncTable, journal_dir: Path | None = None, *, fsync: bool = False,
                 flush_interval: float = 1.0, flush_rows: int = MAX_BATCH, metrics: Metrics | None = None) -> None:
        self._table = table
        self.metrics = metrics
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](math.inf)
        self._writer_running = False
        self.journal_dir = journal_dir
        self.fsync = fsync
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self._journal: Journal | None = None
        self._others = SegmentTail(TurnRecord)  # other workers' unflushed turns, read incrementally
        self._unflushed: dict[str, TurnRecord] = {}   # journaled, not yet in the table (turn_id -> row)
        self._full_segments: list[Segment] = []         # rotated out, waiting for their rows to be flushed
        self._journal_lock = anyio.Lock()               # write+fsync vs rotation
        self._flush_lock = anyio.Lock()
        self._flush_wanted = anyio.Event()
        self.batches_written = 0
        self.rows_written = 0
        self.flushes = 0
        self.rows_recovered = 0
        self._flush_failed = False

    @property
    def table(self) -> AsyncTable:
        return self._table

    @classmethod
    async def open(cls, db: AsyncConnection, journal_dir: Path | None = None, **options: Any) -> TurnLog:
        """Open (or create) the table; with a journal, first replay what a dead process left in it."""
        table = await tables.open_or_create(db, TURNS, TURN_SCHEMA)
        await migrate(table)
        turnlog = cls(table, journal_dir, **options)
        if journal_dir is not None:
            await turnlog.recover_journal()
        return turnlog

    # -- writing -------------------------------------------------------------------------------------
    async def append(self, record: TurnRecord) -> None:
        """Durably append one turn; returns once it is in the journal (or the table)."""
        if not self._writer_running:
            await self._write_table([record])
            return
        if self._journal is not None and not self.fsync:
            self._journal_write([record])  # one write(): cheaper than a hop through the writer task
            return
        pending = _Pending(record)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error

    async def append_many(self, records: Sequence[TurnRecord]) -> None:
        """Durably append several turns at once (an imported conversation): one journal write (or one
        table write), the same guarantee as `append`."""
        if not records:
            return
        if not self._writer_running:
            await self._write_table(records)
            return
        if self._journal is not None and not self.fsync:
            self._journal_write(records)
            return
        pendings = [_Pending(r) for r in records]
        for pending in pendings:
            await self._send.send(pending)
        for pending in pendings:
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error

    @timed_store_call("turns_add")
    async def _write_table(self, rows: Sequence[TurnRecord]) -> None:
        data = to_arrow(rows)
        await retry(lambda: self._table.add(data), what="turns.add")

    async def _merge_table(self, rows: Sequence[TurnRecord]) -> None:
        """Insert the rows whose ``turn_id`` is not in the table yet (replays, retried flushes)."""
        data = to_arrow(rows)
        await retry(lambda: self._table.merge_insert("turn_id").when_not_matched_insert_all().execute(data),
                    what="turns.merge")

    def _journal_write(self, rows: Sequence[TurnRecord]) -> Segment:
        """Synchronous part of a journal write (no await: the flusher's rotation cannot interleave)."""
        assert self._journal is not None
        segment = self._journal.write(rows)
        for row in rows:  # visible to this process's readers (and the next flush) from now on
            self._unflushed[row.turn_id] = row
        self._count_written(rows)
        if len(self._unflushed) >= self.flush_rows:
            self._flush_wanted.set()
        return segment

    def _count_written(self, rows: Sequence[TurnRecord]) -> None:
        self.batches_written += 1
        self.rows_written += len(rows)
        if self.metrics:
            self.metrics.turn_batches.inc()
            self.metrics.turns_written.inc(len(rows))

    async def _write(self, rows: Sequence[TurnRecord]) -> None:
        if self._journal is None:
            await self._write_table(rows)
            self._count_written(rows)
            return
        async with self._journal_lock:  # held across the fsync, so a rotation waits for it
            segment = self._journal_write(rows)
            if self.fsync:
                await anyio.to_thread.run_sync(segment.sync)

    async def run_writer(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self.journal_dir is not None:
            self._journal = Journal(self.journal_dir)
        try:
            async with anyio.create_task_group() as group:
                if self._journal is not None:
                    group.start_soon(self._run_flusher)
                self._writer_running = True
                task_status.started()
                await self._drain()
        finally:
            self._writer_running = False
            if self._journal is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.flush()
                    except Exception as exc:  # the segments stay; the next start replays them
                        log.error("turn log flush at shutdown failed: %s", exc)
                self._journal.close()
                self._journal = None

    async def _drain(self) -> None:
        async for first in self._receive:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            try:
                with anyio.CancelScope(shield=True):
                    await self._write([p.record for p in batch])
            except Exception as exc:  # reported to every waiter; the writer keeps serving
                log.error("turn log write of %d rows failed: %s", len(batch), exc)
                for pending in batch:
                    pending.error = exc
            for pending in batch:
                pending.done.set()

    async def _run_flusher(self) -> None:
        while True:
            with anyio.move_on_after(self.flush_interval):
                await self._flush_wanted.wait()
            self._flush_wanted = anyio.Event()
            try:
                await self.flush()
            except Exception as exc:  # rows stay journaled and in memory; retried next round
                log.error("turn log flush of %d rows failed: %s", len(self._unflushed), exc)

    async def flush(self) -> int:
        """Move every journaled row to the table, then remove the segments they were in."""
        async with self._flush_lock:
            if self._journal is None or not self._unflushed:
                return 0
            async with self._journal_lock:  # no write is between its write() and its fsync now
                rows = list(self._unflushed.values())
                if self._journal.current.rows:  # a retry after a failed flush needs no new segment
                    self._full_segments.append(self._journal.rotate())
            with anyio.CancelScope(shield=True):
                try:
                    # After a failed flush the rows may have landed anyway (an error after the commit):
                    # write them idempotently then, as a replay does.
                    await (self._merge_table(rows) if self._flush_failed else self._write_table(rows))
                except BaseException:
                    self._flush_failed = True
                    raise
                self._flush_failed = False
                for row in rows:
                    self._unflushed.pop(row.turn_id, None)
                segments, self._full_segments = self._full_segments, []
                for segment in segments:
                    segment.remove()
            self.flushes += 1
            if self.metrics:
                self.metrics.turn_flushes.inc()
                self.metrics.turns_flushed.inc(len(rows))
            return len(rows)

    async def recover_journal(self) -> int:
        """Replay segments no live process holds into the table (idempotent), then remove them."""
        assert self.journal_dir is not None
        recovered = 0
        for segment in orphan_segments(self.journal_dir):
            try:
                rows = read_segment(segment.path, TurnRecord)
                if rows:
                    await self._merge_table(rows)
                segment.remove()
            finally:
                segment.close()
            recovered += len(rows)
        if recovered:
            log.warning("turn log: replayed %d journaled turns into the table", recovered)
        self.rows_recovered += recovered
        if self.metrics and recovered:
            self.metrics.turns_recovered.inc(recovered)
        return recovered

    # -- reading -------------------------------------------------------------------------------------
    def _journaled_elsewhere(self, keep: Callable[[TurnRecord], bool]) -> list[TurnRecord]:
        """Unflushed rows of the other workers on this host (their journal segments), matching ``keep``.
        Read *before* the table: a segment disappears only after its rows are in the table."""
        if self.journal_dir is None:
            return []
        own = self._journal.prefix if self._journal is not None else "\0"
        return [r for r in self._others.read(self.journal_dir, own) if keep(r)]

    async def _query(self, where: str, keep: Callable[[TurnRecord], bool]) -> list[TurnRecord]:
        """Rows matching ``where`` in the table, plus the journaled, not yet flushed rows matching ``keep``
        (this process's from memory, other workers' from their segments)."""
        pending = self._journaled_elsewhere(keep)
        pending += [r for r in self._unflushed.values() if keep(r)] if self._unflushed else []
        table = await self._table.query().where(where).to_arrow()
        rows = [from_row(row) for row in table.to_pylist()]
        if pending:
            seen = {r.turn_id for r in rows}
            for r in pending:
                if r.turn_id not in seen:
                    seen.add(r.turn_id)
                    rows.append(r)
        return rows

    async def chat_turns(self, org_id: str, namespace: str, chat_id: str) -> list[TurnRecord]:
        rows = await self._query(F.chat_filter(org_id, namespace, chat_id),
                                 lambda r: (r.chat_id, r.org_id, r.namespace) == (chat_id, org_id, namespace))
        return latest_per_seq(rows)

    async def find_by_transcript(self, org_id: str, namespace: str, transcript_hash: str) -> TurnRecord | None:
        rows = await self._query(
            F.and_(F.tenant_filter(org_id, namespace), f"transcript_hash = {F.sql_str(transcript_hash)}"),
            lambda r: (r.transcript_hash, r.org_id, r.namespace) == (transcript_hash, org_id, namespace))
        if not rows:
            return None
        return max(rows, key=lambda r: (r.created_at, r.turn_id))

    async def find_turn(self, org_id: str, namespace: str, turn_id: str) -> TurnRecord | None:
        rows = await self._query(
            F.and_(F.tenant_filter(org_id, namespace), f"turn_id = {F.sql_str(turn_id)}"),
            lambda r: (r.turn_id, r.org_id, r.namespace) == (turn_id, org_id, namespace))
        return rows[0] if rows else None

    async def activity_since(self, since: datetime | None = None) -> list[TurnRecord]:
        """Every turn (optionally newer than ``since``): used at start-up to find uncommitted work."""
        where = f"created_at >= {F.sql_timestamp(since)}" if since else "seq >= 0"
        return await self._query(where, lambda r: since is None or r.created_at >= since)

    async def uncommitted(self) -> list[TurnRecord]:
        """Every turn not yet marked committed (start-up recovery): an indexed read of the pending rows,
        plus what this host's journals hold."""
        return await self._query("committed = false OR committed IS NULL", lambda r: not r.committed)

    async def mark_committed(self, org_id: str, namespace: str, chat_id: str, through_seq: int,
                             *, except_turns: Sequence[str] = ()) -> int:
        """Mark a conversation's turns up to ``through_seq`` committed (after its commit is done), but not
        ``except_turns`` (edits no commit covers yet). A turn still in a journal is marked when recovery
        finds it committed; nothing depends on the mark but how much start-up has to read."""
        return await self.mark_many([CommittedMark(org_id, namespace, chat_id, through_seq, tuple(except_turns))])

    async def mark_many(self, marks: Sequence[CommittedMark]) -> int:
        """`mark_committed` for several conversations in one LanceDB write; returns the rows marked."""
        if not marks:
            return 0
        where = " OR ".join(f"({self._mark_filter(m)})" for m in marks)
        if not await self._table.count_rows(where):  # an update matching nothing still writes a table version
            return 0
        result = await retry(lambda: self._table.update({"committed": True}, where=where), what="turns.mark")
        return int(getattr(result, "rows_updated", 0) or 0)

    @staticmethod
    def _mark_filter(mark: CommittedMark) -> str:
        return F.and_(F.chat_filter(mark.org_id, mark.namespace, mark.chat_id), f"seq <= {int(mark.through_seq)}",
                      "(committed = false OR committed IS NULL)",
                      f"NOT {F.in_('turn_id', mark.except_turns)}" if mark.except_turns else None)

    async def delete_tenant(self, org_id: str, namespace: str) -> int:
        """Forget a tenant's turns: flushed first, so a later replay cannot bring them back."""
        await self.flush()
        return await tables.delete_tenant(self._table, org_id, namespace, what=TURNS)

    async def maintain(self) -> None:
        """Index the lookup columns and compact the small versions group commit leaves behind."""
        await tables.ensure_btree(self._table, ("tenant", "chat_id", "transcript_hash", "turn_id", "created_at"),
                                  what=TURNS)
        if await self._table.count_rows() > 0:
            from lancedb.index import Bitmap

            await tables.ensure_indexes(self._table, [("committed", Bitmap())], what=TURNS)
        await tables.optimize(self._table, what=TURNS)
