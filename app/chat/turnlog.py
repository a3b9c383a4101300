"""The durable turn log: every answered turn, written before its response ends.

Turns live in the LanceDB table ``turns`` next to the memories (so it works on a local directory and on
an object store shared by several replicas). A single-row LanceDB append costs a few milliseconds and
makes a new table version, so writes are group-committed: ``append`` queues the row and waits; one writer
task in the app's task group drains the queue and writes everything queued in one ``add``. Under load
many concurrent turns share one write; alone, a turn waits for exactly one write. Appends never conflict
between processes. Versions are compacted by ``maintain()`` in the background.

Rows are append-only. Editing or regenerating the last turn appends a new row with the same ``seq``;
readers take the newest row per (chat, seq).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import anyio
import msgspec
import pyarrow as pa
from anyio.abc import TaskStatus

from app.memory import filters as F
from app.memory.models import as_utc
from app.memory.store import _retry

log = logging.getLogger("memchat.turnlog")

TURNS = "turns"
_TS = pa.timestamp("us", tz="UTC")
MAX_BATCH = 1000

TURN_SCHEMA = pa.schema([
    pa.field("turn_id", pa.string(), nullable=False),
    pa.field("chat_id", pa.string(), nullable=False),
    pa.field("tenant", pa.string(), nullable=False),
    pa.field("org_id", pa.string(), nullable=False),
    pa.field("namespace", pa.string(), nullable=False),
    pa.field("seq", pa.int32(), nullable=False),
    pa.field("user", pa.string(), nullable=False),
    pa.field("assistant", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("model", pa.string()),
    pa.field("surface", pa.string(), nullable=False),
    pa.field("commit_after", pa.int32(), nullable=False),
    pa.field("prefix_hash", pa.string(), nullable=False),
    pa.field("transcript_hash", pa.string(), nullable=False),
    pa.field("created_at", _TS, nullable=False),
])


class TurnRecord(msgspec.Struct, frozen=True, kw_only=True):
    turn_id: str
    chat_id: str
    org_id: str
    namespace: str
    seq: int
    user: str
    assistant: str
    status: str                 # complete | partial | error
    model: str | None
    surface: str                # openai | personal | ws
    commit_after: int
    prefix_hash: str
    transcript_hash: str
    created_at: datetime

    @property
    def last_activity(self) -> float:
        return self.created_at.timestamp()


def _to_arrow(rows: Sequence[TurnRecord]) -> pa.Table:
    cols = {
        "turn_id": [r.turn_id for r in rows],
        "chat_id": [r.chat_id for r in rows],
        "tenant": [F.tenant_key(r.org_id, r.namespace) for r in rows],
        "org_id": [r.org_id for r in rows],
        "namespace": [r.namespace for r in rows],
        "seq": [r.seq for r in rows],
        "user": [F.check_text(r.user, "user") for r in rows],
        "assistant": [F.check_text(r.assistant, "assistant") for r in rows],
        "status": [r.status for r in rows],
        "model": [r.model for r in rows],
        "surface": [r.surface for r in rows],
        "commit_after": [r.commit_after for r in rows],
        "prefix_hash": [r.prefix_hash for r in rows],
        "transcript_hash": [r.transcript_hash for r in rows],
        "created_at": [as_utc(r.created_at) for r in rows],
    }
    return pa.Table.from_pydict(cols, schema=TURN_SCHEMA)


def _from_row(row: dict[str, object]) -> TurnRecord:
    data = {k: v for k, v in row.items() if k != "tenant"}
    data["created_at"] = as_utc(row["created_at"])  # type: ignore[arg-type]
    return msgspec.convert(data, TurnRecord)


def latest_per_seq(rows: Sequence[TurnRecord]) -> list[TurnRecord]:
    """Newest row per seq (edits and regenerations replace the tail), ordered by seq."""
    best: dict[int, TurnRecord] = {}
    for row in rows:
        have = best.get(row.seq)
        if have is None or (row.created_at, row.turn_id) > (have.created_at, have.turn_id):
            best[row.seq] = row
    return [best[s] for s in sorted(best)]


class _Pending:
    __slots__ = ("record", "done", "error")

    def __init__(self, record: TurnRecord) -> None:
        self.record = record
        self.done = anyio.Event()
        self.error: BaseException | None = None


class TurnLog:
    """Append and read turns. ``run_writer`` must run in the app's task group for group commit."""

    def __init__(self, table: object) -> None:
        self._table = table
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](math.inf)
        self._writer_running = False
        self.batches_written = 0
        self.rows_written = 0

    @classmethod
    async def open(cls, db: object) -> TurnLog:
        try:
            table = await db.open_table(TURNS)  # type: ignore[attr-defined]
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            if "not found" not in str(exc).lower() and "does not exist" not in str(exc).lower():
                raise
            table = await db.create_table(TURNS, schema=TURN_SCHEMA, exist_ok=True)  # type: ignore[attr-defined]
        return cls(table)

    # -- writing -------------------------------------------------------------------------------------
    async def append(self, record: TurnRecord) -> None:
        """Durably append one turn; returns once it is in the table."""
        if not self._writer_running:
            await self._write([record])
            return
        pending = _Pending(record)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error

    async def _write(self, rows: Sequence[TurnRecord]) -> None:
        data = _to_arrow(rows)
        await _retry(lambda: self._table.add(data), what="turns.add")  # type: ignore[attr-defined]
        self.batches_written += 1
        self.rows_written += len(rows)

    async def run_writer(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._writer_running = True
        task_status.started()
        try:
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
        finally:
            self._writer_running = False

    # -- reading -------------------------------------------------------------------------------------
    async def _query(self, where: str) -> list[TurnRecord]:
        table = await self._table.query().where(where).to_arrow()  # type: ignore[attr-defined]
        return [_from_row(row) for row in table.to_pylist()]

    async def chat_turns(self, org_id: str, namespace: str, chat_id: str) -> list[TurnRecord]:
        rows = await self._query(F.and_(F.tenant_filter(org_id, namespace), f"chat_id = {F.sql_str(chat_id)}"))
        return latest_per_seq(rows)

    async def find_by_transcript(self, org_id: str, namespace: str, transcript_hash: str) -> TurnRecord | None:
        rows = await self._query(F.and_(F.tenant_filter(org_id, namespace),
                                        f"transcript_hash = {F.sql_str(transcript_hash)}"))
        if not rows:
            return None
        return max(rows, key=lambda r: (r.created_at, r.turn_id))

    async def activity_since(self, since: datetime | None = None) -> list[TurnRecord]:
        """Every turn (optionally newer than ``since``): used at start-up to find uncommitted work."""
        where = f"created_at >= {F.sql_timestamp(since)}" if since else "seq >= 0"
        return await self._query(where)

    async def maintain(self) -> None:
        """Index the lookup columns and compact the small versions group commit leaves behind."""
        from lancedb.index import BTree

        indices = {idx.columns[0] for idx in await self._table.list_indices()}  # type: ignore[attr-defined]
        for column in ("tenant", "chat_id", "transcript_hash"):
            if column not in indices and await self._table.count_rows() > 0:  # type: ignore[attr-defined]
                await _retry(lambda c=column: self._table.create_index(c, config=BTree()),  # type: ignore[attr-defined]
                             what=f"turns.index({column})")
        await _retry(lambda: self._table.optimize(cleanup_older_than=timedelta(minutes=10)),  # type: ignore[attr-defined]
                     what="turns.optimize")
