"""Finding conversations no deadline in this process covers: the ones a dead process, another worker or
another replica recorded.

At start-up `recover` gives every conversation with turns not yet marked committed its deadline back
(overdue ones commit at once). After that `run` looks every ``interval`` seconds at the turns not yet
marked committed (an indexed read, whatever their age: imported past turns included) and schedules every
conversation this process is not already watching at its deadline plus ``grace``: the process that
recorded a conversation commits it at its deadline, and if that process is gone, any living one commits
it ``grace`` seconds later. Two processes that try at once are kept apart by the commit claim
(`app.commits.log`), so a conversation is committed exactly once whoever gets there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import anyio
from anyio.abc import TaskStatus

from app.commits.committer import ChatKey
from app.commits.log import CommitLog, covered
from app.commits.scheduler import CommitScheduler
from app.turns.turnlog import TurnLog, TurnRecord

log = logging.getLogger("memchat.sweeper")

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
        """Every conversation with uncommitted turns gets its deadline back; returns how many. Reads only
        the turns not marked committed (an index), so start-up does not grow with history; conversations
        the commit log shows as done through their last turn are marked and not scheduled."""
        turns = await self.turnlog.uncommitted()
        latest = latest_per_chat(turns)
        max_seq: dict[ChatKey, int] = {}
        min_seq: dict[ChatKey, int] = {}
        by_chat: dict[ChatKey, list[TurnRecord]] = {}
        for t in turns:
            key = ChatKey(t.org_id, t.namespace, t.chat_id)
            by_chat.setdefault(key, []).append(t)
            max_seq[key] = max(max_seq.get(key, 0), t.seq)
            min_seq[key] = min(min_seq.get(key, t.seq), t.seq)
        done = await self.commits.done_through((k.org_id, k.namespace, k.chat_id) for k in latest)
        scheduled = healed = 0
        for key, turn in latest.items():
            through = done.get((key.org_id, key.namespace, key.chat_id), 0)
            edited = False
            if min_seq[key] <= through:  # marks the commit log proves (a crash between commit and mark)
                rows = [r for r in await self.commits.for_chat(key.org_id, key.namespace, key.chat_id)
                        if r.state == "done"]
                uncovered = [t for t in by_chat[key] if t.seq <= through and not covered(rows, t)]
                healed += await self.turnlog.mark_committed(key.org_id, key.namespace, key.chat_id, through,
                                                            except_turns=[t.turn_id for t in uncovered])
                edited = bool(uncovered)  # an edit of a committed turn: a revision to commit
            if max_seq[key] > through or edited:
                self.scheduler.touch_turn(turn)
                scheduled += 1
        if scheduled or healed:
            log.info("start-up: %d conversation(s) with uncommitted turns scheduled, %d turn(s) marked committed",
                     scheduled, healed)
        return scheduled

    async def sweep_once(self) -> int:
        """Schedule the conversations with turns not yet marked committed that this process is not watching
        (an indexed read: it grows with the work pending, not with history), at their deadline + grace."""
        adopted = 0
        for key, turn in latest_per_chat(await self.turnlog.uncommitted()).items():
            last = turn.created_at.timestamp()
            if self.scheduler.watching(key, last):
                continue
            self.scheduler.touch(key, max(last + turn.commit_after, self.clock()) + self.grace)
            adopted += 1
        self.sweeps += 1
        self.adopted += adopted
        return adopted

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """`recover`, then `sweep_once` every ``interval`` seconds (a failed sweep is retried next round)."""
        await self.recover()
        task_status.started()
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.sweep_once()
            except Exception:
                log.exception("commit sweep failed; retrying in %.0fs", self.interval)
