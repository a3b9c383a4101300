"""`app.commits.committer`: many commits wait for their extraction model at once, while their LanceDB writes
take the write lane (at most ``write_concurrency`` at a time). Real LanceDB, the heuristic extractor behind
a slow wrapper."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from app.commits.committer import ChatKey, Committer, due_time
from app.commits.log import CommitLog
from app.memory.embed import NullEmbedder
from app.memory.extractors import build_extractor
from app.memory.store import MemoryStore
from app.storage.connection import connect
from app.turns.turnlog import TurnLog, TurnRecord


class Overlap:
    """How many calls were inside at once, at most."""

    def __init__(self) -> None:
        self.now = self.most = 0

    def wrap(self, obj: Any, name: str, pause: float = 0.0) -> None:
        inner = getattr(obj, name)

        @functools.wraps(inner)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                if pause:
                    await anyio.sleep(pause)
                return await inner(*args, **kwargs)
            finally:
                self.now -= 1

        setattr(obj, name, counted)


async def test_extractions_overlap_while_writes_take_the_lane(tmp_path: Path) -> None:
    db = await connect(str(tmp_path / "db"))
    store = await MemoryStore.open(str(tmp_path / "db"), NullEmbedder())
    turnlog, commits = await TurnLog.open(db), await CommitLog.open(db, lease=timedelta(minutes=5))
    extractor = build_extractor("heuristic", client=None, model=None, offline=True)
    writes, extractions = Overlap(), Overlap()
    for obj, names in ((commits, ("claim", "save_facts", "finish")), (store, ("add", "supersede")),
                       (turnlog, ("mark_committed",))):
        for name in names:
            writes.wrap(obj, name, pause=0.01)
    extractions.wrap(extractor, "extract", pause=0.3)  # the extraction model's latency
    keys, last = [ChatKey("org1", f"ns{i % 3}", f"chat-{i}") for i in range(8)], []
    for key in keys:
        record = TurnRecord(turn_id=str(uuid.uuid4()), chat_id=key.chat_id, org_id=key.org_id,
                            namespace=key.namespace, seq=1, user=f"I live in Lyon and my dog is called Rex{key.chat_id}.",
                            assistant="ok", status="complete", model="m", surface="openai", commit_after=0,
                            prefix_hash="p", transcript_hash=uuid.uuid4().hex, created_at=datetime.now(UTC))
        await turnlog.append(record)
        last.append(record)
    committer = Committer(turnlog, commits, store, extractor, owner="w1", write_concurrency=2,
                          clock=lambda: due_time(last) + 1)
    results: dict[ChatKey, str] = {}

    async def commit(key: ChatKey) -> None:
        results[key] = (await committer.commit(key)).status

    try:
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(commit, key)
    finally:
        await store.close()
    assert results == {key: "committed" for key in keys}
    assert extractions.most >= 6  # the model calls ran side by side
    assert writes.most == 2       # the writes never did beyond the lane
