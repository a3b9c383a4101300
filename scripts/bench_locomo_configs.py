"""Named `SearchConfig` variants compared by ``bench_locomo.py --inproc`` (docs/benchmarks.md, LoCoMo)."""

from __future__ import annotations

from app.memory.search import SearchConfig


def configs() -> dict[str, SearchConfig]:
    return {
        "default": SearchConfig(),
        "fts": SearchConfig(mode="fts"),  # question stop words dropped (the default preprocess)
        "dense": SearchConfig(mode="dense"),
        "rrf60": SearchConfig(mode="rrf", rrf_k=60, preprocess="none"),
        "rrf60-q": SearchConfig(mode="rrf", rrf_k=60, preprocess="questions"),
        "fts-raw": SearchConfig(mode="fts", preprocess="none"),
        "wsum-old": SearchConfig(w_dense=1.0, preprocess="none", bm25_curve="sat", neighbour_weight=0.0),
        "sat-wd0.25": SearchConfig(w_dense=0.25, bm25_curve="sat", neighbour_weight=0.0),
        "sat-wd0.5": SearchConfig(w_dense=0.5, bm25_curve="sat", neighbour_weight=0.0),
        "sat2-wd1": SearchConfig(w_dense=1.0, neighbour_weight=0.0),
        "sat2-wd0.25": SearchConfig(w_dense=0.25, neighbour_weight=0.0),
        "nb0": SearchConfig(neighbour_weight=0.0),
        "nb0.35": SearchConfig(neighbour_weight=0.35),
        "rrf60-wf4": SearchConfig(mode="rrf", rrf_k=60, w_fts=4.0, w_dense=1.0),
    }
