"""The local model in a worker process (app/memory/embed_process.py): same vectors as in process, a real
second process that is reused, replaced when it dies, and load failures reported as the embedder's errors."""

from __future__ import annotations

import os
import shutil
import signal

import numpy as np
import pytest

from app.memory.bert_ops import set_blas_threads
from app.memory.embed import EmbedderUnavailable, LocalEmbedder, local_model_dir
from app.memory.embedders import build_embedder
from app.memory.minilm import MiniLMModel

TEXTS = ["My dog is called Bruno", "What's my dog's name?", "The stock market fell today", ""]


@pytest.fixture(scope="module")
def model_dir():
    return local_model_dir()


@pytest.fixture(scope="module")
def reference(model_dir):
    before = set_blas_threads(1)
    try:
        return MiniLMModel(model_dir).encode(TEXTS)
    finally:
        if before is not None:
            set_blas_threads(before)


async def test_process_isolation_gives_the_same_vectors_from_another_reused_process(model_dir, reference):
    emb = LocalEmbedder(model_dir, isolation="process", cache_size=0)
    got = await emb.embed(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, reference, atol=1e-6)
    assert emb._model is None  # the weights live in the worker, not here
    pid = await emb._process.worker_pid()
    assert pid != os.getpid()
    await emb.embed(["once more"])
    assert await emb._process.worker_pid() == pid  # one worker, kept between calls
    await emb.aclose()


async def test_the_worker_embeds_queries_in_int8(model_dir, reference):
    emb = LocalEmbedder(model_dir, isolation="process", runtime="onnx", query_precision="int8", cache_size=0)
    want = MiniLMModel(model_dir, runtime="onnx", query_precision="int8").encode([TEXTS[1]], query=True)[0]
    got = await emb.embed_query(TEXTS[1])
    np.testing.assert_allclose(got, want, atol=1e-6)  # the worker's int8 session, not the float32 one
    assert 0.98 < float(got @ reference[1]) < 0.9999
    np.testing.assert_allclose(await emb.embed([TEXTS[1]]), reference[1:2], atol=1e-6)  # documents: float32
    await emb.aclose()


async def test_a_killed_worker_is_replaced(model_dir, reference):
    emb = LocalEmbedder(model_dir, isolation="process", cache_size=0)
    await emb.warmup()
    first = await emb._process.worker_pid()
    os.kill(first, signal.SIGKILL)
    got = await emb.embed(TEXTS[:2])
    np.testing.assert_allclose(got, reference[:2], atol=1e-6)
    assert await emb._process.worker_pid() != first
    await emb.aclose()


async def test_a_model_the_worker_cannot_load_is_unavailable(model_dir, tmp_path):
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(model_dir / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    emb = LocalEmbedder(tmp_path, isolation="process")
    with pytest.raises(EmbedderUnavailable, match="cannot load model"):
        await emb.embed(["hello"])
    await emb.aclose()


def test_isolation_is_checked(model_dir):
    with pytest.raises(ValueError, match="isolation"):
        LocalEmbedder(model_dir, isolation="fork")
    assert build_embedder("local", isolation="process").isolation == "process"
    assert build_embedder("local").isolation == "thread"
