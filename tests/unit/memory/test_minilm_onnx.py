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


# ----------------------------------------------------------------- int8 queries
QUESTIONS = ["What's my dog's name?", "When did Caroline go to the LGBTQ support group?",
             "Which city did we move to in May?", "what does Melanie paint", "Do I have any allergies I told you about?"]


@pytest.fixture(scope="module")
def int8_model():
    return MiniLMModel(local_model_dir(), runtime="onnx", query_precision="int8")


def test_int8_graph_multiplies_every_weight_in_integers(models):
    import onnx

    numpy_model, _ = models
    graph = onnx.load_from_string(minilm_onnx.build_graph(numpy_model, int8=True)).graph
    ops = [n.op_type for n in graph.node]
    weights = {t.name: t for t in graph.initializer}
    assert ops.count("MatMulInteger") == 4 * 6  # qkv, output, intermediate, out projection of each layer
    # The only float products left are the attention's activation x activation ones (2 per layer).
    assert ops.count("MatMul") == 2 * 6
    assert all(not any(i in weights for i in n.input) for n in graph.node if n.op_type == "MatMul")
    assert {weights[n.input[1]].data_type for n in graph.node if n.op_type == "MatMulInteger"} == {
        onnx.TensorProto.INT8}


def test_int8_queries_are_close_to_float32_and_documents_are_unchanged(models, int8_model):
    numpy_model, _ = models
    assert int8_model.query_precision == "int8" and int8_model.layers == []
    docs = numpy_model.encode(QUESTIONS)
    np.testing.assert_allclose(int8_model.encode(QUESTIONS), docs, atol=2e-6, rtol=0)  # documents: float32
    queries = int8_model.encode(QUESTIONS, query=True)
    cos = (queries * docs).sum(axis=1)
    assert queries.dtype == np.float32 and np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    assert cos.min() > 0.98  # measured 0.988-0.999 on LoCoMo questions
    assert np.abs(queries - docs).max() > 1e-3  # really computed another way
    # Each query still finds its own float32 document first.
    assert list((queries @ docs.T).argmax(axis=1)) == list(range(len(QUESTIONS)))


def test_without_int8_or_without_onnx_a_query_is_a_document(models):
    numpy_model, onnx_model = models
    for m in (numpy_model, onnx_model):
        assert m.query_precision == "float32"
        np.testing.assert_array_equal(m.encode(QUESTIONS, query=True), m.encode(QUESTIONS))
    with pytest.raises(ValueError, match="query precision"):
        MiniLMModel(local_model_dir(), query_precision="fp16")


def test_embedder_embeds_queries_in_int8_and_caches_them_apart():
    import anyio

    async def main():
        emb = LocalEmbedder(local_model_dir(), runtime="onnx", query_precision="int8")
        numpy_emb = LocalEmbedder(local_model_dir(), runtime="numpy", query_precision="int8")
        assert emb.query_precision == "int8" and numpy_emb.query_precision == "float32"  # int8 needs ONNX
        await emb.warmup()  # both sessions run once before the first request
        assert set(emb._cache) == {(False, "warmup"), (True, "warmup")}
        text = QUESTIONS[1]
        query = await emb.embed_query(text)
        doc = (await emb.embed([text]))[0]  # after the query: the cache must not hand back the query's vector
        assert query.shape == (384,) and 0.98 < float(query @ doc) < 0.9999
        np.testing.assert_array_equal(await emb.embed_query(text), query)
        np.testing.assert_array_equal((await numpy_emb.embed([text]))[0], await numpy_emb.embed_query(text))
        with pytest.raises(ValueError, match="query_precision"):
            LocalEmbedder(local_model_dir(), query_precision="half")
        await emb.aclose()
        await numpy_emb.aclose()

    anyio.run(main)
