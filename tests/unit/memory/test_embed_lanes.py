"""Background (commit) embeddings queue behind request-path ones (app/memory/embed.py, lanes)."""

from __future__ import annotations

import threading

import anyio
import numpy as np
import pytest
from anyio.lowlevel import checkpoint

from app.memory.embed import LocalEmbedder, background_embedding, local_model_dir


@pytest.fixture
def recording_embedder():
    emb = LocalEmbedder(local_model_dir(), cache_size=0)
    order: list[str] = []
    gate = threading.Event()

    def encode(texts, **kw):  # stands in for the model: the order of calls is what is tested
        order.append(texts[0])
        if texts[0] == "bg-1":
            gate.wait(10)
        return np.ones((len(texts), emb.dim), dtype=np.float32) / np.sqrt(emb.dim)

    emb.encode_sync = encode
    return emb, order, gate


async def _run_in_order(emb, gate, calls):
    async def one(text, background):
        if background:
            with background_embedding():
                await emb.embed([text])
        else:
            await emb.embed([text])

    async with anyio.create_task_group() as group:
        for text, background in calls:
            group.start_soon(one, text, background)
            for _ in range(50):  # let it reach its queue before the next one starts
                await checkpoint()
            await anyio.sleep(0.02)
        gate.set()


async def test_a_request_embedding_waits_for_at_most_one_background_one(recording_embedder):
    emb, order, gate = recording_embedder
    await _run_in_order(emb, gate, [("bg-1", True), ("bg-2", True), ("bg-3", True), ("request", False)])
    assert order == ["bg-1", "request", "bg-2", "bg-3"]


async def test_without_background_marks_calls_run_first_come_first_served(recording_embedder):
    emb, order, gate = recording_embedder
    await _run_in_order(emb, gate, [("bg-1", False), ("bg-2", False), ("bg-3", False), ("request", False)])
    assert order == ["bg-1", "bg-2", "bg-3", "request"]
