"""Finding conversations no deadline in this process covers: the ones a dead process, another worker or
another replica recorded.

At start-up `recover` reads the whole turn log once and gives every conversation with uncommitted turns
its deadline back (overdue ones commit at once). After that `run` looks every ``interval`` seconds at the
turns written since its previous look (minus ``slack``, for writes that land late) and schedules every
conversation this process is not already watching at its deadline plus ``grace``: the process that
recorded a conversation commits it at its deadline, and if that process is gone, any living one commits
it ``grace`` seconds later. Two processes that try at once are kept apart by the commit claim
(`app.commits.log`), so a conversation is committed exactly once whoever gets there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import anyio
from anyio.abc import TaskStatus

from app.commits.committer import ChatKey
from app.commits.log import CommitLog
from app.commits.scheduler import CommitScheduler
from app.storage.filters import tenant_key
from app.turns.turnlog import TurnLog, TurnRecord

log = logging.getLogger("memchat.sweeper")

SLACK = timedelta(seconds=60)  # a turn's created_at is taken before its write lands (group commit, flush)


def latest_per_chat(turns: Sequence[TurnRecord]) -> dict[ChatKey, TurnRecord]:
    latest: dict[ChatKey, TurnRecord] = {}
    for turn in turns:
        key = ChatKey(turn.org_id, turn.namespace, turn.chat_id)
        have = latest.get(key)
        if have is None or turn.created_at > have.created_at:
            latest[key] = turn
    return latest


class CommitSweeper:
    def __init__(self, scheduler: CommitScheduler, turnlog: TurnLog, commits: CommitLog, *, interval: float = 5.0,
                 grace: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.scheduler = scheduler
        self.turnlog = turnlog
        self.commits = commits
        self.interval = interval
        self.grace = grace
        self.clock = clock
        self.sweeps = 0
        self.adopted = 0  # conversations scheduled because no deadline of this process covered them

    async def recover(self) -> int:
        """Every conversation with uncommitted turns gets its deadline back. Returns how many."""
        turns = await self.turnlog.activity_since(None)
        done_through: dict[tuple[str, str], int] = {}
        for row in await self.commits.all_done():
            k = (row.tenant, row.chat_id)
            done_through[k] = max(done_through.get(k, 0), row.to_seq)
        unfinished = {ChatKey(t.org_id, t.namespace, t.chat_id) for t in turns
                      if t.seq > done_through.get((tenant_key(t.org_id, t.namespace), t.chat_id), 0)}
        latest = latest_per_chat(turns)
        for key in unfinished:
            self.scheduler.touch_turn(latest[key])
        if unfinished:
            log.info("recovered %d conversation(s) with uncommitted turns", len(unfinished))
        return len(unfinished)

    async def sweep_once(self, since: datetime) -> int:
        """Schedule the conversations with turns since ``since`` that this process is not watching."""
        adopted = 0
        for key, turn in latest_per_chat(await self.turnlog.activity_since(since)).items():
            last = turn.created_at.timestamp()
            if self.scheduler.watching(key, last):
                continue
            self.scheduler.touch(key, last + turn.commit_after + self.grace)
            adopted += 1
        self.sweeps += 1
        self.adopted += adopted
        return adopted

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """`recover`, then `sweep_once` every ``interval`` seconds (a failed sweep is retried next round)."""
        started = datetime.fromtimestamp(self.clock(), UTC)
        await self.recover()
        task_status.started()
        watermark = started
        while True:
            await anyio.sleep(self.interval)
            now = datetime.fromtimestamp(self.clock(), UTC)
            try:
                await self.sweep_once(watermark - SLACK)
            except Exception:
                log.exception("commit sweep failed; retrying in %.0fs", self.interval)
                continue
            watermark = now
