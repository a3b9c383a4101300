"""Choosing the memory extractor from configuration (``MEMCHAT_EXTRACTOR``)."""

from __future__ import annotations

from typing import Literal

from app.memory.extract import CompletionClient, Extractor, HeuristicExtractor
from app.memory.extract_llm import LLMExtractor


def build_extractor(
    kind: Literal["llm", "heuristic"] | str,
    *,
    client: CompletionClient | None = None,
    model: str | None = None,
    offline: bool,
    timeout: float = 30.0,
) -> Extractor:
    """``kind`` from MEMCHAT_EXTRACTOR; ``model`` = MEMCHAT_MEMORY_MODEL override. Offline or no client -> heuristic."""
    if kind not in ("llm", "heuristic"):
        raise ValueError(f"unknown extractor kind {kind!r} (expected 'llm' or 'heuristic')")
    heuristic = HeuristicExtractor()
    if kind == "heuristic" or offline or client is None:
        return heuristic
    return LLMExtractor(client, model=model, fallback=heuristic, timeout=timeout)
