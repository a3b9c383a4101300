"""Past conversations recorded as they happened: turns whose time the client states.

A client importing a conversation it had elsewhere (or earlier) sends its turns with their times; they
go into the turn log like live turns (same rows, same transcript hashes, so a client that later
continues the conversation by resending its history is matched to it) but with ``created_at`` = the
stated time, so the idle commit dates the memories it extracts by when things were said.

The commit deadline of a turn is ``created_at + commit_after``. For a past turn that would be long gone,
so the stored ``commit_after`` is stretched to land the deadline at *import time* + the requested delay
(0: commit at once).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime

import msgspec

from app.times import as_utc
from app.turns.conversations import transcript_hash
from app.turns.turnlog import TurnRecord

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
# Stated times are accepted in the years 1000-9999 (as the memory import's). The stored ``commit_after``
# is int32 seconds, so a time more than 68 years ago commits at once whatever the delay asked, and one
# more than 68 years ahead 68 years before it.
EARLIEST_YEAR = 1000


class PastTurn(msgspec.Struct, frozen=True, kw_only=True):
    """One exchange of a past conversation. ``created_at``: when it was said (None: now)."""

    user: str = ""
    assistant: str = ""
    created_at: datetime | None = None


def _norm(text: str) -> str:
    return " ".join(text.split())


def dialog_of_turns(turns: Sequence[TurnRecord]) -> list[tuple[str, str]]:
    """The transcript (user/assistant text, whitespace-normalised) of recorded turns, as hashed."""
    out: list[tuple[str, str]] = []
    for turn in turns:
        if _norm(turn.user):
            out.append(("user", _norm(turn.user)))
        if _norm(turn.assistant):
            out.append(("assistant", _norm(turn.assistant)))
    return out


def deadline_commit_after(created_at: datetime, now: datetime, commit_after: int) -> int:
    """The ``commit_after`` to store so that ``created_at + commit_after`` is ``now + commit_after``
    (negative for a time in the future; kept to the column's int32)."""
    age = math.floor((as_utc(now) - as_utc(created_at)).total_seconds())
    return max(INT32_MIN, min(INT32_MAX, age + commit_after))


def build_records(org_id: str, namespace: str, chat_id: str, prior: Sequence[TurnRecord],
                  turns: Sequence[PastTurn], *, commit_after: int, now: datetime) -> list[TurnRecord]:
    """Turn-log rows for ``turns``, appended after ``prior`` (the conversation's recorded turns)."""
    dialog = dialog_of_turns(prior)
    seq = prior[-1].seq if prior else 0
    records: list[TurnRecord] = []
    for turn in turns:
        seq += 1
        prefix_hash = transcript_hash(dialog)
        if _norm(turn.user):
            dialog.append(("user", _norm(turn.user)))
        if _norm(turn.assistant):
            dialog.append(("assistant", _norm(turn.assistant)))
        created = as_utc(turn.created_at) if turn.created_at is not None else as_utc(now)
        records.append(TurnRecord(
            turn_id=str(uuid.uuid4()), chat_id=chat_id, org_id=org_id, namespace=namespace, seq=seq,
            user=turn.user, assistant=turn.assistant, status="complete", model=None, surface="import",
            commit_after=deadline_commit_after(created, now, commit_after), prefix_hash=prefix_hash,
            transcript_hash=transcript_hash(dialog),
            created_at=created))
    return records
