#!/usr/bin/env python3
"""Search latency of MemoryStore at scale: 10k / 100k / 1M memories over 1k namespaces.

Data is synthetic *at scale* (embedding 1M texts with MiniLM would take hours on 2 cores):
random L2-normalised 384-d vectors and texts drawn from a Zipf-distributed 5 000-word
vocabulary. Memories arrive in per-namespace runs of ``--run-rows`` rows (one conversation
commit), shuffled across namespaces, and are written in 100k-row appends. Queries are 3-6
words from the same distribution plus a random unit vector, each in a random namespace, and
go through ``MemoryStore.search`` (prefilter on tenant + state, conversion to Memory). The
query *embedding* is excluded here (a fake embedder returns the vector at once); its cost
is measured separately (``--embed-cost``, real all-MiniLM-L6-v2) and reported in
docs/benchmarks.md.

Index stages measured for every size (cumulative):

    none      no index at all (Lance flat scans)
    btree     + BTree on tenant and pk
    fts       + native FTS index on search_text
    optimize  + optimize() (compaction, index update)
    ivfpq     + IVF-PQ vector index (cosine)  -- dense only, with recall vs exact

    .venv/bin/python scripts/bench_search.py --sizes 10k 100k        # quick
    .venv/bin/python scripts/bench_search.py --sizes 10k 100k 1m     # full (~15 min)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("LANCEDB_LOG", "error")

import msgspec
import numpy as np
import pyarrow as pa

from app.storage import filters as F
from app.memory.search import SearchConfig
from app.memory.schema import build_schema, search_text
from app.memory.store import MemoryStore

DIM = 384
ORG = "bench-org"
VOCAB = 5000


def words(rng: np.random.Generator) -> np.ndarray:
    # Pronounceable pseudo-words, deterministic.
    syl = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "ber", "don", "gal", "pim", "tor", "qua", "zel", "fi"]
    out = set()
    while len(out) < VOCAB:
        out.add("".join(rng.choice(syl, size=rng.integers(2, 5))))
    return np.array(sorted(out))


class FakeEmbedder:
    """Returns the next pre-set query vector (search cost only)."""

    def __init__(self, dim: int) -> None:
        self.name = "bench:random"
        self.dim = dim
        self.next: np.ndarray | None = None

    async def embed(self, texts):
        assert self.next is not None
        return np.repeat(self.next[None, :], len(texts), axis=0)

    async def aclose(self) -> None:
        pass


def parse_size(s: str) -> int:
    s = s.lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return round(float(s.rstrip("km")) * mult)


def make_batch(rng, vocab, zipf_p, start: int, n: int, tenants: np.ndarray, schema: pa.Schema) -> pa.Table:
    base = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    lens = rng.integers(10, 26, n)
    toks = rng.choice(len(vocab), size=int(lens.sum()), p=zipf_p)
    texts, pos = [], 0
    for ln in lens:
        texts.append(" ".join(vocab[toks[pos : pos + ln]]))
        pos += ln
    ids = [f"m{start + i:08d}" for i in range(n)]
    ns = [f"ns-{t:04d}" for t in tenants]
    created = [datetime.fromtimestamp(base + (start + i) * 30, UTC) for i in range(n)]
    vec = rng.standard_normal((n, DIM), dtype=np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    cols = {
        "pk": [F.pk_value(ORG, s, i) for s, i in zip(ns, ids)],
        "id": ids,
        "write_id": [f"w{start}"] * n,
        "tenant": [F.tenant_key(ORG, s) for s in ns],
        "org_id": [ORG] * n,
        "namespace": ns,
        "content": texts,
        "search_text": [search_text(t, c) for t, c in zip(texts, created)],
        "created_at": created,
        "updated_at": created,
        "source": ["conversation"] * n,
        "source_thread_id": [None] * n,
        "source_turn_id": [None] * n,
        "entities": [[] for _ in range(n)],
        # ~3% superseded, as after a while of contradicting updates
        "state": np.where(rng.random(n) < 0.03, "superseded", "current").tolist(),
        "superseded_by": [None] * n,
    }
    enc = msgspec.json.Encoder()
    keys = ["id", "org_id", "namespace", "content", "created_at", "updated_at", "source", "source_thread_id",
            "source_turn_id", "entities", "state", "superseded_by"]
    cols["payload"] = [enc.encode(dict(zip(keys, vals))).decode() for vals in zip(*(cols[k] for k in keys))]
    arrays = [pa.array(cols[f.name], type=f.type) for f in schema if f.name != "vector"]
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM))
    return pa.Table.from_arrays(arrays, schema=schema)


async def timed_queries(store, emb, queries, cfg, budget_s: float) -> tuple[list[float], int]:
    lat: list[float] = []
    t_start = time.perf_counter()
    for ns, text, vec in queries:
        emb.next = vec
        t0 = time.perf_counter()
        await store.search(ORG, ns, text, limit=8, config=cfg)
        lat.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() - t_start > budget_s and len(lat) >= 5:
            break
    return lat, len(lat)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def bench_size(n: int, a, vocab, zipf_p) -> list[dict]:
    rng = np.random.default_rng(n)
    db = a.work / f"db-{n}"
    shutil.rmtree(db, ignore_errors=True)
    emb = FakeEmbedder(DIM)
    store = await MemoryStore.open(str(db), emb)
    for ix in await store.table.list_indices():  # start from no index at all
        await store.table.drop_index(ix.name)
    schema = build_schema(emb.name, DIM)
    # tenant of every row: runs of --run-rows rows per namespace, shuffled
    runs = -(-n // a.run_rows)
    run_tenants = rng.integers(0, a.namespaces, runs)
    tenants = np.repeat(run_tenants, a.run_rows)[:n]
    t0 = time.perf_counter()
    step = 100_000
    for s in range(0, n, step):
        await store.table.add(make_batch(rng, vocab, zipf_p, s, min(step, n - s), tenants[s : s + step], schema))
    load_s = time.perf_counter() - t0
    print(f"# n={n}: loaded in {load_s:.1f}s", file=sys.stderr, flush=True)

    # queries: random namespaces that exist
    present = np.unique(tenants)
    queries = []
    for _ in range(a.queries):
        ln = rng.integers(3, 7)
        text = " ".join(vocab[rng.choice(len(vocab), size=ln, p=zipf_p)])
        v = rng.standard_normal(DIM).astype(np.float32)
        queries.append((f"ns-{rng.choice(present):04d}", text, v / np.linalg.norm(v)))

    modes = {
        "fts": SearchConfig(mode="fts"),
        "dense": SearchConfig(mode="dense"),
        "default": store.search_config,
    }
    rows: list[dict] = []

    async def measure(stage: str, which=("fts", "dense", "default")):
        for m in which:
            lat, k = await timed_queries(store, emb, queries, modes[m], a.budget)
            rows.append({"n": n, "stage": stage, "mode": m, "p50": pct(lat, 50), "p99": pct(lat, 99), "q": k})
            print(f"| {n:>9,} | {stage:<9} | {m:<7} | {pct(lat, 50):8.1f} | {pct(lat, 99):8.1f} | {k:4d} |", flush=True)

    from lancedb.index import FTS, BTree, IvfPq

    await measure("none")
    t0 = time.perf_counter()
    await store.table.create_index("tenant", config=BTree())
    await store.table.create_index("pk", config=BTree())
    print(f"# btree build {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    await measure("btree")
    t0 = time.perf_counter()
    await store.table.create_index("search_text", config=FTS(with_position=False))
    print(f"# fts build {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    await measure("fts")
    t0 = time.perf_counter()
    await store.maintain()
    print(f"# maintain/optimize {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    await measure("optimize")
    if a.ivf and n >= 10_000:
        exact = []
        for ns, text, vec in queries[:50]:
            emb.next = vec
            exact.append([h.memory.id for h in await store.search(ORG, ns, text, limit=8, config=modes["dense"])])
        t0 = time.perf_counter()
        await store.table.create_index("vector", config=IvfPq(distance_type="cosine"))
        print(f"# ivf-pq build {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        await measure("ivfpq", ("dense",))
        rec = []
        for (ns, text, vec), ex in zip(queries[:50], exact):
            emb.next = vec
            got = [h.memory.id for h in await store.search(ORG, ns, text, limit=8, config=modes["dense"])]
            rec.append(len(set(got) & set(ex)) / max(1, len(ex)))
        r = float(np.mean(rec))
        rows.append({"n": n, "stage": "ivfpq", "mode": "dense-recall@8", "value": r})
        print(f"# n={n}: ivf-pq recall@8 vs exact prefiltered search: {r:.2f}", flush=True)
    await store.close()
    if not a.keep:
        shutil.rmtree(db, ignore_errors=True)
    return rows


async def embed_cost(n: int = 100) -> None:
    from app.memory.embed import LocalEmbedder

    e = LocalEmbedder(cache_size=0)
    await e.warmup()
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        await e.embed([f"where did my sister move to after she left her job number {i}?"])
        lat.append((time.perf_counter() - t0) * 1000)
    print(f"# query embedding (all-MiniLM-L6-v2, numpy, 1 query): p50 {pct(lat, 50):.1f} ms p99 {pct(lat, 99):.1f} ms")
    await e.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10k", "100k"], help="e.g. 10k 100k 1m")
    ap.add_argument("--namespaces", type=int, default=1000)
    ap.add_argument("--run-rows", type=int, default=16, help="rows per namespace run (one conversation commit)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--budget", type=float, default=30.0, help="max seconds per (stage, mode)")
    ap.add_argument("--no-ivf", dest="ivf", action="store_false")
    ap.add_argument("--embed-cost", action="store_true", help="also time one real query embedding")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--work", type=Path, default=Path("/tmp/memchat-bench-search"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    vocab = words(rng)
    ranks = np.arange(1, VOCAB + 1)
    zipf_p = (1.0 / ranks) / (1.0 / ranks).sum()
    if a.embed_cost:
        await embed_cost()
    print("| memories | indexes | mode | p50 ms | p99 ms | queries |")
    print("|---:|---|---|---:|---:|---:|")
    for s in a.sizes:
        await bench_size(parse_size(s), a, vocab, zipf_p)


if __name__ == "__main__":
    asyncio.run(main())
