"""`app.commits.committer`: many commits wait for their extraction model at once, while their LanceDB writes
take the write lane (at most ``write_concurrency`` at a time). Real LanceDB, the heuristic extractor behind
a slow wrapper."""

from __future__ import annotations

import functools
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from app.commits.committer import ChatKey, Committer
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


async def setup_commits(tmp_path: Path, count: int):
    db = await connect(str(tmp_path / "db"))
    store = await MemoryStore.open(str(tmp_path / "db"), NullEmbedder())
    turnlog, commits = await TurnLog.open(db), await CommitLog.open(db, lease=timedelta(minutes=5))
    extractor = build_extractor("heuristic", client=None, model=None, offline=True)
    keys = [ChatKey("org1", f"ns{i % 3}", f"chat-{i}") for i in range(count)]
    for key in keys:
        record = TurnRecord(turn_id=str(uuid.uuid4()), chat_id=key.chat_id, org_id=key.org_id,
                            namespace=key.namespace, seq=1, user=f"I live in Lyon and my dog is called Rex{key.chat_id}.",
                            assistant="ok", status="complete", model="m", surface="openai", commit_after=0,
                            prefix_hash="p", transcript_hash=uuid.uuid4().hex, created_at=datetime.now(UTC))
        await turnlog.append(record)
    return store, turnlog, commits, extractor, keys


async def commit_all(committer: Committer, keys: list[ChatKey]) -> dict[ChatKey, str]:
    results: dict[ChatKey, str] = {}

    async def commit(key: ChatKey) -> None:
        results[key] = (await committer.commit(key)).status

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(commit, key)
    return results


async def test_extractions_overlap_while_writes_take_the_lane(tmp_path: Path) -> None:
    store, turnlog, commits, extractor, keys = await setup_commits(tmp_path, 8)
    writes, extractions = Overlap(), Overlap()
    for obj, names in ((commits, ("claim_many", "update_many")), (store, ("add", "supersede")),
                       (turnlog, ("mark_many",))):
        for name in names:
            writes.wrap(obj, name, pause=0.01)
    extractions.wrap(extractor, "extract", pause=0.3)  # the extraction model's latency
    committer = Committer(turnlog, commits, store, extractor, owner="w1", write_concurrency=2,
                          clock=lambda: time.time() + 3600)
    try:
        results = await commit_all(committer, keys)
    finally:
        await store.close()
    assert results == {key: "committed" for key in keys}
    assert extractions.most >= 6  # the model calls ran side by side
    assert writes.most == 2       # the writes never did beyond the lane


@pytest.mark.parametrize("write_batch", [64, 1])
async def test_concurrent_commits_share_their_writes(tmp_path: Path, write_batch: int) -> None:
    store, turnlog, commits, extractor, keys = await setup_commits(tmp_path, 8)
    Overlap().wrap(extractor, "extract", pause=0.3)  # the commits wait for the model together
    for name in ("claim_many", "update_many"):
        Overlap().wrap(commits, name, pause=0.1)   # a slow table: rows pile up behind a write
    Overlap().wrap(turnlog, "mark_many", pause=0.1)
    committer = Committer(turnlog, commits, store, extractor, owner="w1", clock=lambda: time.time() + 3600,
                          write_batch=write_batch)
    try:
        results = await commit_all(committer, keys)
    finally:
        await store.close()
    assert results == {key: "committed" for key in keys}
    for batcher, rows in ((committer.claims, 8), (committer.row_updates, 16), (committer.marks, 8)):
        assert batcher.rows == rows
        assert batcher.writes <= (rows // 2 if write_batch > 1 else rows)
        assert batcher.writes == rows or write_batch > 1
    rows_stored = await commits.done_through([(k.org_id, k.namespace, k.chat_id) for k in keys])
    assert rows_stored == {(k.org_id, k.namespace, k.chat_id): 1 for k in keys}
    assert await turnlog.uncommitted() == []
