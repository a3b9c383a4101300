"""The embedders' exceptions (in a module of their own so that the embedding worker process can raise them
without importing the embedders)."""

from __future__ import annotations


class EmbeddingError(Exception):
    """Embedding failed (upstream error, bad upstream response, model failure, ...)."""


class EmbedderUnavailable(EmbeddingError):
    """The requested embedder cannot be used here (e.g. the local model files are missing)."""
