"""The local model in a worker process, so that its forward pass never waits for the event loop's GIL.

A forward pass of the numpy model (`app.memory.minilm`) is ~120 numpy calls; each releases the GIL for its
arithmetic and must take it back afterwards. In a worker *thread* of a busy server the event loop holds the
GIL most of the time and hands it over only every ``sys.getswitchinterval()`` (5 ms), so one query embedding
took 49–490 ms instead of ~11, by how busy the loop was (`scripts/bench_embed_gil.py`); encodes are
serialised, so a few dozen requests per second queued behind each other for their retrieval (the
300-stream soak: TTFT p50 16 s with memchat using less than one core). In a process of its own the model
runs at full speed on the other core.

:class:`ProcessEncoder` runs :func:`encode` through ``anyio.to_process`` behind the embedder's limiter (one
worker process: parallel encodes would only fight over the cores). The worker keeps the loaded model for its
lifetime (:func:`_model`, a cache local to the worker process); it is started on first use (the app's
warm-up), ends with the event loop, and exits on its own when its parent dies (its stdin closes). A worker
that dies is replaced once per call before the call fails.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_process
import numpy as np
from anyio import BrokenWorkerProcess

from app.memory.embed_errors import EmbedderUnavailable, EmbeddingError

if TYPE_CHECKING:  # pragma: no cover
    from app.memory.minilm import MiniLMModel

log = logging.getLogger("memchat.embed")


@lru_cache(maxsize=2)
def _model(model_dir: str, blas_threads: int | None, runtime: str = "numpy",
           query_precision: str = "float32") -> MiniLMModel:
    """The model of ``model_dir``, loaded once per worker process."""
    from app.memory.minilm import MiniLMModel

    try:
        model = MiniLMModel(Path(model_dir), runtime=runtime, threads=blas_threads, query_precision=query_precision)
    except Exception as e:  # corrupt/incompatible files
        raise EmbedderUnavailable(f"local embedder: cannot load model from {model_dir}: {e}") from None
    if blas_threads is not None:
        from app.memory.bert_ops import limit_blas_threads

        limit_blas_threads(blas_threads)  # unless the operator chose (OPENBLAS_NUM_THREADS, ...)
    return model


def encode(model_dir: str, blas_threads: int | None, runtime: str, query_precision: str, texts: list[str],
           query: bool = False) -> np.ndarray:
    """Runs in the worker process: ``texts`` -> float32 (n, dim), rows L2-normalised (``query``: search queries)."""
    model = _model(model_dir, blas_threads, runtime, query_precision)
    try:
        return model.encode(texts, query=query)
    except Exception as e:
        raise EmbeddingError(f"local embedder failed: {type(e).__name__}: {e}") from None


class ProcessEncoder:
    """Encodes in one worker process shared by the calls that hold ``limiter``."""

    def __init__(self, model_dir: Path, blas_threads: int | None, limiter: anyio.CapacityLimiter,
                 runtime: str = "numpy", query_precision: str = "float32") -> None:
        self.model_dir = str(model_dir)
        self.blas_threads = blas_threads
        self.limiter = limiter
        self.runtime = runtime
        self.query_precision = query_precision

    async def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        batch = list(texts)
        for attempt in (1, 2):
            try:
                return await anyio.to_process.run_sync(encode, self.model_dir, self.blas_threads, self.runtime,
                                                       self.query_precision, batch, query, limiter=self.limiter)
            except BrokenWorkerProcess as e:
                if attempt == 2:
                    raise EmbeddingError(f"local embedder: the worker process failed twice: {e}") from e
                log.warning("embedding worker process died (%s); starting a new one", e)
            except EmbeddingError:
                raise
            except Exception as e:  # e.g. an unpicklable result: never a 500 of our own making
                raise EmbeddingError(f"local embedder failed: {type(e).__name__}: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def worker_pid(self) -> int:
        """The worker process's pid (started if needed)."""
        return int(await anyio.to_process.run_sync(os.getpid, limiter=self.limiter))
