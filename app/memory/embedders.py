"""Choosing the embedder from configuration: the local model, an OpenAI-compatible upstream, or none."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.memory.embed import LOCAL_MODEL_ALIASES, LOCAL_MODEL_NAME, Embedder, LocalEmbedder, NullEmbedder
from app.memory.openai_embed import OpenAIEmbedder

if TYPE_CHECKING:
    import openai


def build_embedder(
    kind: str,
    *,
    openai_client: openai.AsyncOpenAI | None = None,
    model: str | None = None,
    dimensions: int | None = None,
    isolation: str = "thread",
    runtime: str = "numpy",
    query_precision: str = "float32",
) -> Embedder:
    """Make the embedder for ``kind`` in {"local", "openai", "none"}.

    * ``"local"``: ``model`` may be None, ``"all-MiniLM-L6-v2"`` (or its
      ``sentence-transformers/`` name) or a directory holding such a model; ``dimensions``,
      if given, must be 384. Raises :class:`EmbedderUnavailable` when the files are missing
      -- the caller decides whether to fall back (e.g. to ``"none"``). Weights load lazily;
      ``isolation`` (``"thread"`` or ``"process"``) says where the model runs and ``runtime``
      (``"numpy"``, ``"onnx"``, ``"auto"``) what runs it, ``query_precision`` (``"float32"``, ``"int8"``)
      how search queries are embedded (`LocalEmbedder`).
    * ``"openai"``: needs ``openai_client`` and ``model``; ``dimensions`` is optional.
    * ``"none"``: :class:`NullEmbedder`.

    Raises ``ValueError`` for an unknown kind or inconsistent arguments.
    """
    k = (kind or "").strip().lower()
    if k == "local":
        model_dir: Path | None = None
        if model and model.strip().lower() not in LOCAL_MODEL_ALIASES:
            if not Path(model).is_dir():
                raise ValueError(
                    f"local embedder: unknown model {model!r}; only {LOCAL_MODEL_NAME} (or a directory "
                    "holding a sentence-transformers BERT model) is supported"
                )
            model_dir = Path(model)
        emb = LocalEmbedder(model_dir, isolation=isolation, runtime=runtime, query_precision=query_precision)
        if dimensions is not None and int(dimensions) != emb.dim:
            raise ValueError(f"local embedder produces {emb.dim}-dimensional vectors, not {dimensions}")
        return emb
    if k == "openai":
        if openai_client is None:
            raise ValueError("openai embedder needs openai_client")
        if not model:
            raise ValueError("openai embedder needs model (e.g. 'text-embedding-3-small')")
        return OpenAIEmbedder(openai_client, model, dimensions)
    if k == "none":
        return NullEmbedder()
    raise ValueError(f"unknown embedder kind {kind!r}; expected 'local', 'openai' or 'none'")


