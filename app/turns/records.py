"""The turn log's rows: the ``turns`` table layout, `TurnRecord`, their Arrow conversions, and the start-up
migration of tables made by earlier releases."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import msgspec
import pyarrow as pa
from lancedb.table import AsyncTable

from app.storage import filters as F
from app.storage.tables import TIMESTAMP, retry
from app.times import as_utc

log = logging.getLogger("memchat.turnlog")

TURNS = "turns"
_TS = TIMESTAMP

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
    # False until the turn's conversation is committed through it: start-up recovery reads only these
    # rows (a bitmap index), not the whole history. Added by `migrate` to stores made before it existed.
    pa.field("committed", pa.bool_()),
])


class CommittedMark(msgspec.Struct, frozen=True):
    """A conversation committed through ``through_seq``, except the turn rows ``except_turns``."""

    org_id: str
    namespace: str
    chat_id: str
    through_seq: int
    except_turns: tuple[str, ...] = ()


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
    surface: str                # openai | responses | personal | ws
    commit_after: int
    prefix_hash: str
    transcript_hash: str
    created_at: datetime
    committed: bool = False


def to_arrow(rows: Sequence[TurnRecord]) -> pa.Table:
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
        "committed": [r.committed for r in rows],
    }
    return pa.Table.from_pydict(cols, schema=TURN_SCHEMA)


def from_row(row: dict[str, object]) -> TurnRecord:
    data = {k: v for k, v in row.items() if k != "tenant"}
    data["created_at"] = as_utc(row["created_at"])  # type: ignore[arg-type]
    data["committed"] = bool(row.get("committed"))
    return msgspec.convert(data, TurnRecord)


def latest_per_seq(rows: Sequence[TurnRecord]) -> list[TurnRecord]:
    """Newest row per seq (edits and regenerations replace the tail), ordered by seq."""
    best: dict[int, TurnRecord] = {}
    for row in rows:
        have = best.get(row.seq)
        if have is None or (row.created_at, row.turn_id) > (have.created_at, have.turn_id):
            best[row.seq] = row
    return [best[s] for s in sorted(best)]


async def migrate(table: AsyncTable) -> None:
    """Bring a turns table made by an earlier release up to `TURN_SCHEMA`: the ``committed`` column
    (false for every existing row; start-up recovery then marks what the commit log says is done)."""
    if "committed" not in (await table.schema()).names:
        try:
            await retry(lambda: table.add_columns({"committed": "false"}), what="turns.migrate")
        except Exception as exc:  # another process added it first
            if "committed" not in (await table.schema()).names:
                raise
            log.debug("turns.committed was added concurrently: %s", exc)
        log.warning("turn log: added the 'committed' column to the turns table (one-time migration)")
