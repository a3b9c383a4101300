"""The ``openai`` embedder: the upstream's ``/v1/embeddings`` through the SDK (split from ``embed.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from app.memory.embed import OPENAI_MAX_BATCH, EmbeddingError, check_texts, normalize_rows

if TYPE_CHECKING:
    import openai


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible upstream via ``client.embeddings.create``.

    * ``dim`` is ``dimensions`` when given (and then sent as the ``dimensions`` request
      parameter); otherwise it is 0 until the first successful call, which sets it from the
      response. ``await resolve_dim()`` forces that discovery (one tiny request).
    * Inputs go in order, ``batch_size`` (<= 256) per request, one request at a time.
    * Empty strings are sent as a single space (OpenAI rejects ``""``).
    * Rows are re-normalised to unit length here (some compatible servers don't normalise).
    * Any upstream failure -- HTTP error status, connection error/timeout, malformed response,
      wrong count or width of vectors, NaN/inf/zero vectors -- raises :class:`EmbeddingError`
      with the cause chained.
    * The client is not closed by :meth:`aclose` unless ``owns_client=True`` (it is usually
      shared with the chat proxy).
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        dimensions: int | None = None,
        *,
        batch_size: int = OPENAI_MAX_BATCH,
        owns_client: bool = False,
    ) -> None:
        if not model:
            raise ValueError("OpenAIEmbedder needs a model name")
        if dimensions is not None and int(dimensions) <= 0:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        if not 1 <= int(batch_size) <= OPENAI_MAX_BATCH:
            raise ValueError(f"batch_size must be in 1..{OPENAI_MAX_BATCH}, got {batch_size}")
        self.client = client
        self.model = model
        self.dimensions = int(dimensions) if dimensions is not None else None
        self.name: str = f"openai:{model}"
        self.dim: int = self.dimensions or 0
        self._batch_size = int(batch_size)
        self._owns_client = owns_client

    async def resolve_dim(self) -> int:
        """Return ``dim``, asking the upstream once (embedding "dimension probe") if unknown."""
        if not self.dim:
            await self.embed(["dimension probe"])
        return self.dim

    async def _create(self, batch: list[str]) -> Any:
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "input": batch}
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        try:
            return await self.client.embeddings.create(**kwargs)
        except openai.APIStatusError as e:
            raise EmbeddingError(
                f"upstream embeddings request for model {self.model!r} failed with HTTP "
                f"{e.status_code}: {e.message}"
            ) from e
        except openai.APIConnectionError as e:  # includes APITimeoutError
            raise EmbeddingError(
                f"upstream embeddings request for model {self.model!r} failed: cannot reach the "
                f"upstream ({type(e).__name__}: {e})"
            ) from e
        except (openai.OpenAIError, ValueError) as e:  # response validation / parsing
            raise EmbeddingError(
                f"upstream embeddings request for model {self.model!r} failed: {type(e).__name__}: {e}"
            ) from e

    def _parse(self, resp: Any, n: int) -> np.ndarray:
        where = f"upstream embeddings for model {self.model!r}"
        data = getattr(resp, "data", None)
        if not data or len(data) != n:
            got = 0 if not data else len(data)
            raise EmbeddingError(f"{where}: expected {n} embeddings, got {got}")
        try:
            rows = sorted(data, key=lambda d: d.index)
            if [d.index for d in rows] != list(range(n)):
                raise EmbeddingError(f"{where}: response indices are not 0..{n - 1}")
            widths = {len(d.embedding) for d in rows}
            if len(widths) != 1:
                raise EmbeddingError(f"{where}: vectors of differing widths {sorted(widths)}")
            arr = np.array([d.embedding for d in rows], dtype=np.float32)
        except EmbeddingError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise EmbeddingError(f"{where}: malformed response ({type(e).__name__}: {e})") from e
        width = arr.shape[1]
        if width == 0:
            raise EmbeddingError(f"{where}: empty vectors")
        if self.dim and width != self.dim:
            raise EmbeddingError(f"{where}: got {width}-dimensional vectors, expected {self.dim}")
        return normalize_rows(arr, source=where)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self._batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self._batch_size]]
            part = self._parse(await self._create(batch), len(batch))
            if not self.dim:
                self.dim = int(part.shape[1])
            parts.append(part)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.close()

    def __repr__(self) -> str:
        return f"<OpenAIEmbedder {self.name} dim={self.dim or '?'}>"
