"""The encoder layers in ONNX Runtime (app/memory/minilm_onnx.py): the numpy model's vectors on single texts
and padded batches, how the runtime is chosen, and the fallback when ONNX Runtime is missing. The golden
values against sentence-transformers run on both runtimes in test_embed.py."""

from __future__ import annotations

import numpy as np
import pytest

from app.memory import minilm_onnx
from app.memory.bert_ops import set_blas_threads
from app.memory.embed import LocalEmbedder, local_model_dir
from app.memory.minilm import MiniLMModel

# Lengths from 2 tokens to past the 256-token truncation, so batches are padded and chunked.
TEXTS = ["", "hi", "What's my dog's name?", "We moved to Lisbon in May, the kids love the school. " * 4,
         "word " * 400] + [f"note {i}: " + "the vet said the puppy is fine " * (i % 9 + 1) for i in range(30)]


@pytest.fixture(scope="module")
def models():
    before = set_blas_threads(1)
    d = local_model_dir()
    yield MiniLMModel(d, runtime="numpy"), MiniLMModel(d, runtime="onnx")
    if before is not None:
        set_blas_threads(before)


def test_onnx_layers_give_the_numpy_vectors(models):
    numpy_model, onnx_model = models
    assert onnx_model.layers == [] and len(numpy_model.layers) == 6  # the session holds the layer weights
    want, got = numpy_model.encode(TEXTS), onnx_model.encode(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)
    for text in TEXTS[:5]:  # one at a time: no padding, no mask
        np.testing.assert_allclose(onnx_model.encode([text]), numpy_model.encode([text]), atol=2e-6, rtol=0)


def test_a_padded_row_is_the_row_alone(models):
    _, onnx_model = models
    batch = onnx_model.encode(["short", "a much longer sentence that forces the short one to be padded"])
    alone = onnx_model.encode(["short"])
    np.testing.assert_allclose(batch[0], alone[0], atol=2e-6, rtol=0)


def test_runtime_choice(monkeypatch):
    assert minilm_onnx.resolve_runtime("numpy") == "numpy"
    assert minilm_onnx.resolve_runtime("onnx") == "onnx"
    assert minilm_onnx.onnx_available() and minilm_onnx.resolve_runtime("auto") == "onnx"
    with pytest.raises(ValueError, match="runtime must be one of"):
        minilm_onnx.resolve_runtime("torch")
    monkeypatch.setattr(minilm_onnx, "onnx_available", lambda: False)
    assert minilm_onnx.resolve_runtime("auto") == "numpy"


def test_onnx_available_is_false_without_the_package(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    assert minilm_onnx.onnx_available() is False


def test_the_server_process_does_not_import_onnx_to_choose_the_runtime():
    import subprocess
    import sys

    code = ("import sys; from app.memory.embed import LocalEmbedder; e = LocalEmbedder(isolation='process', "
            "runtime='auto'); print(e.runtime, 'onnx' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["onnx", "False", "False"]


def test_embedder_asked_for_onnx_without_it_uses_numpy(monkeypatch, caplog):
    monkeypatch.setattr(minilm_onnx, "onnx_available", lambda: False)
    with caplog.at_level("WARNING", logger="memchat.embed"):
        emb = LocalEmbedder(local_model_dir(), runtime="onnx")
    assert emb.runtime == "numpy" and "not installed" in caplog.text


async def test_process_embedder_runs_onnx_in_its_worker(models):
    numpy_model, _ = models
    emb = LocalEmbedder(local_model_dir(), isolation="process", runtime="auto", cache_size=0)
    assert emb.runtime == "onnx" and "runtime=onnx" in repr(emb)
    try:
        got = await emb.embed(TEXTS[:6])
    finally:
        await emb.aclose()
    np.testing.assert_allclose(got, numpy_model.encode(TEXTS[:6]), atol=2e-6, rtol=0)
