#!/usr/bin/env python3
"""Retrieval quality + latency of MemoryStore search modes on the synthetic set.

Generates the set with scripts/gen_retrieval_set.py (into --work, never into the repo),
loads it into a fresh LanceDB store under --work with the real local embedder
(all-MiniLM-L6-v2, numpy), runs ``maintain()`` (BTree + FTS indexes, as in production),
then asks every question in its user's namespace and reports, per configuration:
R@5, R@10 (fraction of a question's evidence memories in the top k, averaged), MRR@10, and
p50/p99 search latency in ms *including the query embedding* (embedder cache disabled).

    .venv/bin/python scripts/bench_retrieval.py --split test            # report
    .venv/bin/python scripts/bench_retrieval.py --split tune --grid     # tuning grid

Document embeddings are cached under --work (keyed by text) so re-runs skip the slow part;
query embeddings are always computed live.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("LANCEDB_LOG", "error")  # Lance logs a WARN per LanceDB-hybrid query

import numpy as np

from app.memory.models import NewMemory
from app.memory.search import SearchConfig
from app.memory.store import MemoryStore

ORG = "bench-org"

# Configurations named before the thread score and the form priors existed keep them off.
_PREV = {"thread_weight": 0.0, "question_penalty": 0.0, "short_penalty": 0.0}


def _before(**kw) -> SearchConfig:
    """A configuration as it was named before the LoCoMo work: s/(s+c), equal weights, no question
    stop words, no neighbour smoothing, unless ``kw`` says otherwise (docs/benchmarks.md)."""
    base = {"w_dense": 1.0, "bm25_curve": "sat", "preprocess": "none", "neighbour_weight": 0.0, **_PREV}
    return SearchConfig(**{**base, **kw})


# The named configurations compared in docs/benchmarks.md ("fts" modes ignore the fusion fields).
CONFIGS: dict[str, SearchConfig] = {
    "fts (content)": _before(mode="fts", fts_column="content"),
    "fts (content+date)": _before(mode="fts"),
    "fts (content+date, q-stopwords)": _before(mode="fts", preprocess="questions"),
    "dense": _before(mode="dense"),
    "lancedb hybrid RRF k=60": _before(mode="hybrid", rrf_k=60),
    "rrf k=60": _before(mode="rrf", rrf_k=60),
    "rrf k=60, q-stopwords": _before(mode="rrf", rrf_k=60, preprocess="questions"),
    "rrf k=10, q-stopwords": _before(mode="rrf", rrf_k=10, preprocess="questions"),
    "rrf k=60, w_fts=2, q-stopwords": _before(mode="rrf", rrf_k=60, w_fts=2.0, preprocess="questions"),
    "wsum c=20 (content only, no date)": _before(mode="wsum", fts_column="content"),
    "wsum c=20, q-stopwords": _before(mode="wsum", preprocess="questions"),
    "wsum c=20, 30 candidates": _before(mode="wsum", candidates=30),
    "wsum c=20, floor 0 (cosine not shifted)": _before(mode="wsum", cos_floor=0.0),
    "wsum c=10": _before(mode="wsum", bm25_c=10.0),
    "wsum c=5 floor=0.2": _before(mode="wsum", bm25_c=5.0, cos_floor=0.2),
    "wsum equal weights, no q-stopwords (default before LoCoMo)": SearchConfig(
        w_dense=1.0, preprocess="none", bm25_curve="sat", neighbour_weight=0.0, **_PREV),
    "wsum s/(s+c), w_dense=0.25": SearchConfig(w_dense=0.25, bm25_curve="sat", neighbour_weight=0.0, **_PREV),
    "wsum s/(s+c), w_dense=0.5": SearchConfig(w_dense=0.5, bm25_curve="sat", neighbour_weight=0.0, **_PREV),
    "wsum s^2/(s^2+c^2), w_dense=1": SearchConfig(w_dense=1.0, neighbour_weight=0.0, **_PREV),
    "default without neighbour smoothing": SearchConfig(neighbour_weight=0.0, **_PREV),
    "default before the thread score and form priors": SearchConfig(thread_weight=0.0, question_penalty=0.0,
                                                                    short_penalty=0.0),
}


def grid() -> dict[str, SearchConfig]:
    out: dict[str, SearchConfig] = {}
    for pre in ("none", "questions"):
        for col in ("search_text", "content"):
            out[f"fts col={col} pre={pre}"] = _before(mode="fts", fts_column=col, preprocess=pre)
            for k in (5, 10, 20, 30, 60):
                for wf in (0.5, 0.75, 1.0, 1.5, 2.0):
                    out[f"rrf k={k} wf={wf} col={col} pre={pre}"] = _before(
                        mode="rrf", rrf_k=k, w_fts=wf, fts_column=col, preprocess=pre
                    )
            for c in (2.0, 5.0, 10.0, 15.0, 20.0, 30.0):
                for fl in (0.0, 0.1, 0.2, 0.3):
                    for wf in (0.5, 0.75, 1.0, 1.5):
                        out[f"wsum c={c} floor={fl} wf={wf} col={col} pre={pre}"] = _before(
                            mode="wsum", bm25_c=c, cos_floor=fl, w_fts=wf, fts_column=col, preprocess=pre
                        )
    out["dense"] = _before(mode="dense")
    for cand in (10, 15, 20, 30, 50, 80):  # candidates per leg (the grid fetches 80 and truncates)
        out[f"wsum c=20.0 floor=0.0 wf=1.0 col=search_text pre=none cand={cand}"] = _before(mode="wsum", candidates=cand)
    return out


async def evaluate_grid(store: MemoryStore, questions: list[dict], configs: dict[str, SearchConfig]) -> dict:
    """Quality only, for many fusion settings at once: fetch each leg's candidates once per
    question (the exact queries `run_search` issues) and fuse them offline."""
    from app.storage import filters as F
    from app.memory.search import (
        dense_leg,
        fts_leg,
        fuse_rrf,
        fuse_wsum,
        preprocess_query,
    )

    k = 80
    legs: list[dict] = []
    for q in questions:
        where = F.build(ORG, q["namespace"])  # all memories are current here
        vec = (await store.embedder.embed([q["question"]]))[0]
        d = {"dense": await dense_leg(store.table, vec, where, k, ["id"])}
        for pre in ("none", "questions"):
            text = preprocess_query(q["question"], pre)
            for col in ("search_text", "content"):
                d[(col, pre)] = await fts_leg(store.table, text, where, k, col, ["id"])
        legs.append(d)
    results = {}
    for name, cfg in configs.items():
        r5, r10, rr = [], [], []
        for q, d in zip(questions, legs):
            fts = d[(cfg.fts_column, cfg.preprocess)][: max(10, cfg.candidates)]
            dense = d["dense"][: max(10, cfg.candidates)]
            if cfg.mode == "fts":
                hits = fts
            elif cfg.mode == "dense":
                hits = dense
            elif cfg.mode == "rrf":
                hits = fuse_rrf([(fts, cfg.w_fts), (dense, cfg.w_dense)], cfg.rrf_k)
            else:
                hits = fuse_wsum(fts, dense, cfg)
            ids = [h[0]["id"] for h in hits[:10]]
            ev = set(q["evidence"])
            r5.append(len(ev & set(ids[:5])) / len(ev))
            r10.append(len(ev & set(ids)) / len(ev))
            rank = next((i for i, x in enumerate(ids, 1) if x in ev), None)
            rr.append(1.0 / rank if rank else 0.0)
        results[name] = {"R@5": 100 * statistics.fmean(r5), "R@10": 100 * statistics.fmean(r10), "MRR": statistics.fmean(rr)}
    return results


class CachingEmbedder:
    """Wraps the real embedder: while ``preload`` is on, texts found in ``table`` are not
    re-embedded (document load only); queries always go to the real model."""

    def __init__(self, inner, table: dict[str, np.ndarray]) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.table = table
        self.preload = True

    async def embed(self, texts):
        if not self.preload:
            return await self.inner.embed(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            vecs = await self.inner.embed(missing)
            self.table.update(zip(missing, vecs))
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    async def aclose(self) -> None:
        await self.inner.aclose()


def load_set(work: Path, split: str, users: int) -> dict:
    path = work / f"{split}-u{users}.json"
    if not path.exists():
        import gen_retrieval_set

        data = gen_retrieval_set.generate(split, users, 16, (8, 18))
        path.write_text(json.dumps(data))
    return json.loads(path.read_text())


async def build_store(work: Path, data: dict, embedder, context: bool = True) -> MemoryStore:
    import shutil

    db = work / f"db-{data['meta']['split']}-{data['meta']['users']}"
    shutil.rmtree(db, ignore_errors=True)
    cache_file = work / "doc-embeddings.npz"
    table: dict[str, np.ndarray] = {}
    if cache_file.exists():
        z = np.load(cache_file, allow_pickle=False)
        table = dict(zip(z["texts"].tolist(), z["vecs"]))
    emb = CachingEmbedder(embedder, table)
    store = await MemoryStore.open(str(db), emb)
    if not context:
        store.context_chars = 0  # no thread context in the FTS documents
    by_ns: dict[str, list[dict]] = {}
    for m in data["memories"]:
        by_ns.setdefault(m["namespace"], []).append(m)
    t0 = time.perf_counter()
    for ns, mems in by_ns.items():
        # One add per session (as memchat commits a conversation), in time order.
        by_thread: dict[str, list[dict]] = {}
        for m in mems:
            by_thread.setdefault(m["source_thread_id"], []).append(m)
        for thread_mems in by_thread.values():
            await store.add(
                ORG,
                ns,
                [
                    NewMemory(
                        id=m["id"],
                        content=m["content"],
                        created_at=datetime.fromisoformat(m["created_at"]),
                        source_thread_id=m["source_thread_id"],
                        source_turn_id=m["source_turn_id"],
                    )
                    for m in thread_mems
                ],
            )
    print(f"# loaded {len(data['memories'])} memories in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    texts = list(table)
    np.savez(cache_file, texts=np.array(texts), vecs=np.stack([table[t] for t in texts]))
    emb.preload = False
    await store.maintain()
    # Also index `content`, for the "fts (content)" variant.
    from lancedb.index import FTS

    await store.table.create_index("content", config=FTS(with_position=False))
    return store


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def evaluate(store: MemoryStore, questions: list[dict], cfg: SearchConfig) -> dict:
    for q in questions[:5]:  # warm-up
        await store.search(ORG, q["namespace"], q["question"], limit=10, config=cfg)
    lat: list[float] = []
    r5: list[float] = []
    r10: list[float] = []
    rr: list[float] = []
    by_type: dict[str, list[float]] = {}
    for q in questions:
        t0 = time.perf_counter()
        hits = await store.search(ORG, q["namespace"], q["question"], limit=10, config=cfg)
        lat.append((time.perf_counter() - t0) * 1000)
        ids = [h.memory.id for h in hits]
        ev = set(q["evidence"])
        r5.append(len(ev & set(ids[:5])) / len(ev))
        r10.append(len(ev & set(ids[:10])) / len(ev))
        rank = next((i for i, x in enumerate(ids, 1) if x in ev), None)
        rr.append(1.0 / rank if rank else 0.0)
        by_type.setdefault(q["type"], []).append(r5[-1])
    return {
        "R@5": 100 * statistics.fmean(r5),
        "R@10": 100 * statistics.fmean(r10),
        "MRR": statistics.fmean(rr),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "R@5_by_type": {k: round(100 * statistics.fmean(v), 1) for k, v in sorted(by_type.items())},
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["tune", "test"], default="test")
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--work", type=Path, default=Path("/tmp/memchat-retrieval"))
    ap.add_argument("--grid", action="store_true", help="run the tuning grid instead of the named configs")
    ap.add_argument("--only", nargs="*", help="substring filter on config names")
    ap.add_argument("--top", type=int, default=25, help="grid: rows to print")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--no-context", action="store_true", help="index without thread context (app.memory.context)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)

    from app.memory.embed import LocalEmbedder

    embedder = LocalEmbedder(cache_size=0)
    await embedder.warmup()
    data = load_set(a.work, a.split, a.users)
    print(
        f"# split={a.split} seed={data['meta']['seed']} users={a.users} memories={len(data['memories'])} "
        f"questions={len(data['questions'])} set-sha={hashlib.sha1(json.dumps(data).encode()).hexdigest()[:10]}",
        file=sys.stderr,
    )
    store = await build_store(a.work, data, embedder, context=not a.no_context)
    if a.grid:
        res = await evaluate_grid(store, data["questions"], grid())
        ranked = sorted(res.items(), key=lambda kv: (-kv[1]["R@5"], -kv[1]["MRR"]))
        print("| config | R@5 | R@10 | MRR@10 |")
        print("|---|---:|---:|---:|")
        for name, r in ranked[: a.top]:
            print(f"| {name} | {r['R@5']:.1f} | {r['R@10']:.1f} | {r['MRR']:.3f} |")
        for name in ("fts col=search_text pre=none", "fts col=content pre=none", "dense",
                     "wsum c=20.0 floor=0.0 wf=1.0 col=search_text pre=none", "rrf k=60 wf=1.0 col=search_text pre=none",
                     *(f"wsum c=20.0 floor=0.0 wf=1.0 col=search_text pre=none cand={c}" for c in (10, 15, 20, 30, 50, 80))):
            r = res[name]
            print(f"| {name} | {r['R@5']:.1f} | {r['R@10']:.1f} | {r['MRR']:.3f} |")
        if a.json_out:
            a.json_out.write_text(json.dumps(res, indent=1))
        await store.close()
        return
    configs = dict(CONFIGS)
    configs["**default**"] = store.search_config
    if a.only:
        configs = {k: v for k, v in configs.items() if any(s in k for s in a.only)}
    results = {}
    print("| config | R@5 | R@10 | MRR@10 | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, cfg in configs.items():
        r = await evaluate(store, data["questions"], cfg)
        results[name] = r
        print(f"| {name} | {r['R@5']:.1f} | {r['R@10']:.1f} | {r['MRR']:.3f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |", flush=True)
    print("\nR@5 by question type:")
    for name, r in results.items():
        print(f"  {name}: {r['R@5_by_type']}")
    if a.json_out:
        a.json_out.write_text(json.dumps(results, indent=1))
    await store.close()
    await embedder.aclose()


if __name__ == "__main__":
    asyncio.run(main())
