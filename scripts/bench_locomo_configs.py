"""Named `SearchConfig` variants compared by ``bench_locomo.py --inproc`` (docs/benchmarks.md, LoCoMo)."""

from __future__ import annotations

from app.memory.search import SearchConfig


def configs() -> dict[str, SearchConfig]:
    return {
        "default": SearchConfig(),
        "fts": SearchConfig(mode="fts"),
        "fts-q": SearchConfig(mode="fts", preprocess="questions"),
        "dense": SearchConfig(mode="dense"),
        "rrf60": SearchConfig(mode="rrf", rrf_k=60),
        "rrf60-q": SearchConfig(mode="rrf", rrf_k=60, preprocess="questions"),
        "wsum-q": SearchConfig(preprocess="questions"),
    }
