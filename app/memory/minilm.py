"""Pure-numpy forward pass of the all-MiniLM-L6-v2 sentence encoder.

This re-implements what ``SentenceTransformer("all-MiniLM-L6-v2")`` computes, without
torch: a 6-layer BERT encoder (hidden 384, 12 heads, intermediate 1536, exact erf GELU),
then sentence-transformers' mean pooling over the attention mask and L2 normalisation.

* Tokenisation: ``tokenizers.Tokenizer`` from the model's ``tokenizer.json``, truncated to
  ``max_seq_length`` (256 tokens including [CLS]/[SEP], from ``sentence_bert_config.json``).
  The file itself ships with fixed padding to 128 and truncation to 128; both are replaced.
* Weights: ``safetensors.numpy.load_file``; kept float32. At load time the Q/K/V
  projections are fused into one pre-transposed (384, 1152) matrix with the 1/sqrt(d_head)
  attention scale folded into the Q part, every other dense matrix is pre-transposed, and the
  position + token-type(0) embeddings are summed into one table.
* Batching: inputs are tokenised once, sorted by length and run in chunks whose padded size
  stays under a token budget, so padding (and the O(L^2) attention buffers) stay small.
  Results come back in input order.

Matches sentence-transformers (torch) to float32 noise: on 50 varied sentences max |1 - cos|
was 1e-12 and max per-component difference 3.5e-7 (golden values in tests/test_embed.py).

Threading: the heavy lifting is BLAS sgemm (the OpenBLAS numpy ships), which uses as many
threads as the process was started with (``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``, default
all cores); :func:`set_blas_threads` changes that at run time, process-wide. ``encode`` keeps no
mutable state, so it may be called from several threads, but there is no gain in doing so.

Runtime: ``runtime="onnx"`` runs the six encoder layers in ONNX Runtime instead (`app.memory.minilm_onnx`,
``threads`` intra-op threads), same weights and vectors, ~40 % less time per short query; ``"auto"``
picks it when ``onnxruntime`` is installed. Tokenisation, embeddings and pooling are shared.
With it, ``query_precision="int8"`` adds a second session whose weight products run in int8
(`app.memory.minilm_onnx`), used by ``encode(texts, query=True)`` -- search queries, ~0.4x the time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.memory.bert_ops import F32, add_layer_norm, attention, gelu, layer_norm
from app.memory.minilm_onnx import QUERY_PRECISIONS, OnnxEncoder, resolve_runtime

#: Files a model directory must contain for :class:`MiniLMModel`.
REQUIRED_FILES = ("config.json", "tokenizer.json", "model.safetensors")

class _Layer:
    __slots__ = ("w_qkv", "b_qkv", "w_o", "b_o", "ln1_w", "ln1_b", "w_i", "b_i", "w_out", "b_out", "ln2_w", "ln2_b")


class MiniLMModel:
    """all-MiniLM-L6-v2 (or any BERT-style sentence-transformers model with mean pooling).

    ``MiniLMModel(model_dir).encode(["some text", ...])`` -> float32 array (n, 384) with
    L2-normalised rows. Construction reads ~90 MB of weights (~0.1-0.3 s).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_seq_length: int | None = None,
        max_batch_tokens: int = 1024,
        max_batch_size: int = 64,
        runtime: str = "numpy",
        threads: int | None = 1,
        query_precision: str = "float32",
    ) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        if query_precision not in QUERY_PRECISIONS:
            raise ValueError(f"query precision must be one of {QUERY_PRECISIONS}, not {query_precision!r}")
        model_dir = Path(model_dir)
        missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"model directory {model_dir} is missing {', '.join(missing)}")
        self.model_dir = model_dir

        cfg = json.loads((model_dir / "config.json").read_text())
        if cfg.get("model_type", "bert") != "bert":
            raise ValueError(f"unsupported model_type {cfg.get('model_type')!r} (expected 'bert')")
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {cfg.get('hidden_act')!r} (expected 'gelu')")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported")
        self.hidden_size: int = int(cfg["hidden_size"])
        self.num_heads: int = int(cfg["num_attention_heads"])
        self.num_layers: int = int(cfg["num_hidden_layers"])
        self.head_dim: int = self.hidden_size // self.num_heads
        self.eps = F32(cfg.get("layer_norm_eps", 1e-12))
        max_pos = int(cfg.get("max_position_embeddings", 512))

        self._check_pooling(model_dir)
        self.normalize = self._has_normalize(model_dir)

        if max_seq_length is None:
            st_cfg = model_dir / "sentence_bert_config.json"
            max_seq_length = 256
            if st_cfg.is_file():
                max_seq_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", 256))
        self.max_seq_length: int = min(int(max_seq_length), max_pos)
        self.max_batch_tokens = max(int(max_batch_tokens), self.max_seq_length)
        self.max_batch_size = max(int(max_batch_size), 1)

        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tok.no_padding()  # we pad per chunk ourselves
        tok.enable_truncation(max_length=self.max_seq_length)
        self._tokenizer = tok

        self._load_weights(load_file(str(model_dir / "model.safetensors")), cfg)
        # "onnx": the encoder layers run in ONNX Runtime (`app.memory.minilm_onnx`), "numpy": below.
        self.runtime = resolve_runtime(runtime)
        self._onnx: OnnxEncoder | None = None
        self._onnx_query: OnnxEncoder | None = None  # int8 weights, for search queries
        if self.runtime == "onnx":
            self._onnx = OnnxEncoder(self, threads)
            if query_precision == "int8":
                self._onnx_query = OnnxEncoder(self, threads, int8=True)
            self.layers = []  # the sessions hold their own copies of the layer weights

    # ------------------------------------------------------------------ loading
    @staticmethod
    def _check_pooling(model_dir: Path) -> None:
        pcfg = model_dir / "1_Pooling" / "config.json"
        if not pcfg.is_file():
            return  # sentence-transformers defaults to mean pooling too
        p = json.loads(pcfg.read_text())
        other = [k for k, v in p.items() if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"]
        if other or not p.get("pooling_mode_mean_tokens", True):
            raise ValueError(f"unsupported pooling configuration {p} (only mean pooling is implemented)")

    @staticmethod
    def _has_normalize(model_dir: Path) -> bool:
        modules = model_dir / "modules.json"
        if not modules.is_file():
            return True  # all-MiniLM-L6-v2 normalises; keep that as the default
        return any(m.get("type", "").endswith(".Normalize") for m in json.loads(modules.read_text()))

    def _load_weights(self, raw: dict[str, np.ndarray], cfg: dict) -> None:
        prefix = ""
        if "embeddings.word_embeddings.weight" not in raw:
            for cand in ("bert.", "model.", "0.auto_model."):
                if cand + "embeddings.word_embeddings.weight" in raw:
                    prefix = cand
                    break
            else:
                raise ValueError("model.safetensors does not look like a BERT encoder")

        def g(name: str) -> np.ndarray:
            return np.ascontiguousarray(raw[prefix + name], dtype=F32)

        h = self.hidden_size
        self.word_emb = g("embeddings.word_embeddings.weight")
        pos = g("embeddings.position_embeddings.weight")
        tok_type = g("embeddings.token_type_embeddings.weight")
        # Single-sequence inputs: token_type_ids are all 0, so fold that row into positions.
        self.pos_type_emb = np.ascontiguousarray(pos + tok_type[0])
        self.emb_ln_w = g("embeddings.LayerNorm.weight")
        self.emb_ln_b = g("embeddings.LayerNorm.bias")

        scale = F32(1.0 / math.sqrt(self.head_dim))
        self.layers: list[_Layer] = []
        for i in range(self.num_layers):
            p = f"encoder.layer.{i}."
            L = _Layer()
            wq = g(p + "attention.self.query.weight") * scale
            bq = g(p + "attention.self.query.bias") * scale
            wk, bk = g(p + "attention.self.key.weight"), g(p + "attention.self.key.bias")
            wv, bv = g(p + "attention.self.value.weight"), g(p + "attention.self.value.bias")
            # torch Linear: y = x @ W.T + b  ->  store W.T, fused [Q | K | V] -> (h, 3h)
            L.w_qkv = np.ascontiguousarray(np.concatenate([wq, wk, wv], axis=0).T)
            L.b_qkv = np.concatenate([bq, bk, bv])
            L.w_o = np.ascontiguousarray(g(p + "attention.output.dense.weight").T)
            L.b_o = g(p + "attention.output.dense.bias")
            L.ln1_w = g(p + "attention.output.LayerNorm.weight")
            L.ln1_b = g(p + "attention.output.LayerNorm.bias")
            L.w_i = np.ascontiguousarray(g(p + "intermediate.dense.weight").T)
            L.b_i = g(p + "intermediate.dense.bias")
            L.w_out = np.ascontiguousarray(g(p + "output.dense.weight").T)
            L.b_out = g(p + "output.dense.bias")
            L.ln2_w = g(p + "output.LayerNorm.weight")
            L.ln2_b = g(p + "output.LayerNorm.bias")
            assert L.w_qkv.shape == (h, 3 * h), L.w_qkv.shape
            self.layers.append(L)

    # ------------------------------------------------------------------ public
    @property
    def dim(self) -> int:
        return self.hidden_size

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids (with [CLS]/[SEP], truncated to max_seq_length) for each text."""
        # sentence-transformers strips each input before tokenising.
        encs = self._tokenizer.encode_batch([str(t).strip() for t in texts])
        return [e.ids for e in encs]

    @property
    def query_precision(self) -> str:
        """What ``encode(query=True)`` runs: ``"int8"`` weights or the documents' ``"float32"``."""
        return "int8" if self._onnx_query is not None else "float32"

    def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        """Embed ``texts`` -> float32 array (len(texts), dim); rows L2-normalised. ``query``: the texts are
        search queries, embedded with the int8 session when the model has one (``query_precision``)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single str")
        n = len(texts)
        out = np.empty((n, self.hidden_size), dtype=F32)
        if n == 0:
            return out
        ids = self.tokenize(texts)
        encoder = self._onnx_query if query and self._onnx_query is not None else self._onnx
        if n == 1:
            out[0] = self._forward([ids[0]], encoder)[0]
            return out
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < n:
            # Grow the chunk while (rows * longest row) stays within the token budget.
            end = start + 1
            while (
                end < n
                and end - start < self.max_batch_size
                and (end - start + 1) * int(lengths[order[end]]) <= self.max_batch_tokens
            ):
                end += 1
            idx = order[start:end]
            out[idx] = self._forward([ids[i] for i in idx], encoder)
            start = end
        return out

    __call__ = encode

    # ------------------------------------------------------------------ forward
    def _forward(self, batch_ids: list[list[int]], encoder: OnnxEncoder | None) -> np.ndarray:
        B = len(batch_ids)
        lens = [len(x) for x in batch_ids]
        T = max(lens)
        H, nh, hd = self.hidden_size, self.num_heads, self.head_dim
        padded = min(lens) != T

        ids = np.zeros((B, T), dtype=np.int64)  # [PAD] is id 0
        for r, x in enumerate(batch_ids):
            ids[r, : len(x)] = x
        mask = None
        bias = None
        if padded:
            mask = (np.arange(T)[None, :] < np.asarray(lens)[:, None]).astype(F32)  # (B, T)
            # Additive attention bias over keys, as in HF BERT (finfo.min for masked keys).
            bias = ((1.0 - mask) * np.finfo(F32).min)[:, None, None, :]  # (B, 1, 1, T)

        # Embeddings: word + (position + token_type 0), then LayerNorm. Work on (B*T, H).
        x = self.word_emb[ids.reshape(-1)]
        x = x.reshape(B, T, H)
        x += self.pos_type_emb[:T]
        x = x.reshape(B * T, H)
        layer_norm(x, self.emb_ln_w, self.emb_ln_b, self.eps)

        if encoder is not None:
            x = encoder.run(x.reshape(B, T, H), bias).reshape(B * T, H)
        for L in self.layers:
            qkv = x @ L.w_qkv  # (B*T, 3H)
            qkv += L.b_qkv
            qkv = qkv.reshape(B, T, 3, nh, hd)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # (B, nh, T, hd), strided views
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)  # (B, nh, hd, T)
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)  # (B, nh, T, hd)
            ctx = attention(q, k, v, bias)  # (B, nh, T, hd)
            ctx = ctx.transpose(0, 2, 1, 3).reshape(B * T, H)

            a = ctx @ L.w_o
            x = add_layer_norm(a, L.b_o, x, L.ln1_w, L.ln1_b, self.eps)

            f = x @ L.w_i
            gelu(f, L.b_i)
            y = f @ L.w_out
            x = add_layer_norm(y, L.b_out, x, L.ln2_w, L.ln2_b, self.eps)

        x = x.reshape(B, T, H)
        # Mean pooling over real tokens (sentence-transformers Pooling, mean mode).
        if mask is None:
            pooled = x.mean(axis=1)
        else:
            pooled = np.einsum("bth,bt->bh", x, mask)
            pooled /= np.maximum(mask.sum(axis=1, keepdims=True), F32(1e-9))
        if self.normalize:
            norms = np.sqrt(np.einsum("bh,bh->b", pooled, pooled))[:, None]
            pooled /= np.maximum(norms, F32(1e-12))
        return pooled.astype(F32, copy=False)
