"""Named `SearchConfig` variants compared by ``bench_locomo.py --inproc`` (docs/benchmarks.md, LoCoMo)."""

from __future__ import annotations

from app.memory.search import SearchConfig


# Rows of the table written before the thread score and the form priors existed keep them off.
_PREV = {"thread_weight": 0.0, "question_penalty": 0.0, "short_penalty": 0.0}


def configs() -> dict[str, SearchConfig]:
    return {
        "default": SearchConfig(),
        "fts": SearchConfig(mode="fts"),  # question stop words dropped (the default preprocess)
        "dense": SearchConfig(mode="dense"),
        "rrf60": SearchConfig(mode="rrf", rrf_k=60, preprocess="none", **_PREV),
        "rrf60-q": SearchConfig(mode="rrf", rrf_k=60, preprocess="questions", **_PREV),
        "fts-raw": SearchConfig(mode="fts", preprocess="none"),
        "wsum-old": SearchConfig(w_dense=1.0, preprocess="none", bm25_curve="sat", neighbour_weight=0.0, **_PREV),
        "sat-wd0.25": SearchConfig(w_dense=0.25, bm25_curve="sat", neighbour_weight=0.0, **_PREV),
        "sat-wd0.5": SearchConfig(w_dense=0.5, bm25_curve="sat", neighbour_weight=0.0, **_PREV),
        "sat2-wd1": SearchConfig(w_dense=1.0, neighbour_weight=0.0, **_PREV),
        "sat2-wd0.25": SearchConfig(w_dense=0.25, neighbour_weight=0.0, **_PREV),
        "nb0": SearchConfig(neighbour_weight=0.0, **_PREV),
        # the default before the thread score and the form priors (docs/benchmarks.md, LoCoMo rows 14-17)
        "prev-default": SearchConfig(thread_weight=0.0, question_penalty=0.0, short_penalty=0.0),
        "no-thread": SearchConfig(thread_weight=0.0),
        "no-priors": SearchConfig(question_penalty=0.0, short_penalty=0.0),
        "questions-only": SearchConfig(thread_weight=0.0, short_penalty=0.0),
        "thread0.5": SearchConfig(thread_weight=0.5),
        "nb0.35": SearchConfig(neighbour_weight=0.35, **_PREV),
        "rrf60-wf4": SearchConfig(mode="rrf", rrf_k=60, w_fts=4.0, w_dense=1.0, **_PREV),
    }
