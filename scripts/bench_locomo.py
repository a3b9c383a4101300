#!/usr/bin/env python3
"""LoCoMo turn-level retrieval through memchat's own HTTP API, as a new user would see it.

For every leg (a server configuration given as environment variables) a real memchat server is
started (``python -m app serve``, offline: no upstream), each LoCoMo conversation is imported into its
own namespace with ``POST /api/v1/memory/import`` (one memory per dialogue turn, see
`locomo_data.py`), and every question is sent to ``POST /api/v1/memory/search`` with ``limit`` 10.
Reported per category and overall: R@5, R@10 (fraction of a question's evidence turns in the top k,
averaged over questions), MRR@10 (first evidence turn), and the search latency p50/p95 seen by the
client. Conversations 0-4 (where anything was tuned) and 5-9 (the check) are also reported apart.

``--inproc`` additionally loads the data into a `MemoryStore` in this process (local embedder) and
reports R@k and the latency of ``store.search`` called directly, for the default and for named
`SearchConfig` variants (``--configs``).

    .venv/bin/python scripts/bench_locomo.py --data /work/bench-data/locomo10.json
    .venv/bin/python scripts/bench_locomo.py --leg default --leg fts:MEMCHAT_EMBEDDER=none
    .venv/bin/python scripts/bench_locomo.py --no-http --inproc --configs default,fts

The data set (CC BY-NC 4.0) is read from ``--data`` or ``MEMCHAT_LOCOMO_PATH`` and never written
anywhere; only aggregate numbers are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import timezone
from pathlib import Path

import httpx2
import locomo_data as L

from app.testkit import MemchatServer

KEY = "bench-key"
ORG = "bench-org"


# ----------------------------------------------------------------------------- metrics
def score(ranked_dias: list[str], evidence: set[str]) -> dict[str, float]:
    def recall(k: int) -> float:
        return len(set(ranked_dias[:k]) & evidence) / len(evidence)

    rr = next((1.0 / i for i, d in enumerate(ranked_dias[:10], 1) if d in evidence), 0.0)
    return {"r5": recall(5), "r10": recall(10), "mrr": rr}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def table(rows: list[dict], title: str) -> str:
    """Markdown table: overall, per category, conversations 0-4 and 5-9."""
    groups: list[tuple[str, list[dict]]] = [("overall", rows)]
    groups += [(f"{c} {n}", [r for r in rows if r["cat"] == c]) for c, n in L.CATEGORIES.items()]
    groups += [("conv 0-4", [r for r in rows if r["conv"] < 5]), ("conv 5-9", [r for r in rows if r["conv"] >= 5])]
    out = [f"**{title}**", "", "| subset | n | R@5 | R@10 | MRR@10 | p50 ms | p95 ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rs in groups:
        if not rs:
            continue
        m = {k: 100 * statistics.fmean(r[k] for r in rs) for k in ("r5", "r10", "mrr")}
        lat = [r["ms"] for r in rs]
        out.append(f"| {name} | {len(rs)} | {m['r5']:.1f} | {m['r10']:.1f} | {m['mrr']:.1f} | "
                   f"{pct(lat, 50):.1f} | {pct(lat, 95):.1f} |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- HTTP legs
class Server:
    """A memchat server (offline, one worker) started with the test kit's launcher, on a throw-away data dir."""

    def __init__(self, env: dict[str, str]) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="memchat-locomo-")
        self.server = MemchatServer(Path(self.tmp.name) / "data", startup_timeout=120, env={
            "MEMCHAT_API_KEYS": f"{KEY}={ORG}", "LANCEDB_LOG": "error", "MEMCHAT_MAINTENANCE_INTERVAL": "5",
            **env}).start()
        self.client = httpx2.Client(base_url=self.server.url, timeout=600,
                                    headers={"Authorization": f"Bearer {KEY}"})

    def call(self, path: str, body: object, namespace: str) -> tuple[dict, float]:
        """POST ``body`` (JSON, or ``bytes`` sent as they are: JSON Lines) -> (JSON answer, ms)."""
        t0 = time.perf_counter()
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        resp = self.client.post(path, params={"namespace": namespace}, **kwargs)
        resp.raise_for_status()
        return resp.json(), (time.perf_counter() - t0) * 1000

    def stop(self) -> None:
        self.client.close()
        self.server.stop()
        self.tmp.cleanup()


def run_http_leg(name: str, env: dict[str, str], convs: list[L.Conversation]) -> list[dict]:
    srv = Server(env)
    try:
        t0 = time.perf_counter()
        for c in convs:
            res, _ = srv.call("/api/v1/memory/import", c.records, f"locomo-{c.index}")
            assert res["written"] + 0 >= 0 and res["total"] == len(c.records), res
        print(f"[{name}] imported {sum(len(c.records) for c in convs)} memories in "
              f"{time.perf_counter() - t0:.0f}s", file=sys.stderr)
        for c in convs[:1]:  # warm-up (model load, caches); not measured
            for q in c.questions[:5]:
                srv.call("/api/v1/memory/search", {"query": q["question"], "limit": 10}, f"locomo-{c.index}")
        rows = []
        for c in convs:
            for q in c.questions:
                res, ms = srv.call("/api/v1/memory/search", {"query": q["question"], "limit": 10}, f"locomo-{c.index}")
                dias = [c.dia_of.get(h["id"], "?") for h in res["results"]]
                rows.append({"conv": c.index, "cat": q["category"], "ms": ms, **score(dias, q["evidence"])})
        return rows
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- in-process
async def run_inproc(convs: list[L.Conversation], config_names: list[str]) -> dict[str, list[dict]]:
    from datetime import datetime

    from app.memory.models import NewMemory
    from app.memory.store import MemoryStore
    from bench_locomo_configs import configs

    named = configs()
    embedder = _local_embedder()
    out: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="memchat-locomo-inproc-") as tmp:
        store = await MemoryStore.open(str(Path(tmp) / "lancedb"), embedder)
        for c in convs:
            items = [NewMemory(id=r["id"], content=r["content"], source=r.get("source", "conversation"),
                               source_thread_id=r.get("sourceThreadId"), source_turn_id=r.get("sourceTurnId"),
                               created_at=datetime.fromisoformat(r["createdAt"].replace("Z", "+00:00")))
                     for r in c.records]
            for i in range(0, len(items), 256):
                await store.add(ORG, f"locomo-{c.index}", items[i:i + 256])
        await store.maintain()
        for name in config_names:
            cfg = named[name]
            rows = []
            await store.search(ORG, "locomo-0", "warm up query", limit=10, config=cfg)
            for c in convs:
                for q in c.questions:
                    t0 = time.perf_counter()
                    hits = await store.search(ORG, f"locomo-{c.index}", q["question"], limit=10, config=cfg)
                    ms = (time.perf_counter() - t0) * 1000
                    dias = [c.dia_of.get(h.memory.id, "?") for h in hits]
                    rows.append({"conv": c.index, "cat": q["category"], "ms": ms, **score(dias, q["evidence"])})
            out[name] = rows
            print(table(rows, f"in-process: {name}") + "\n", flush=True)
        await store.close()
    return out


async def run_scale(convs: list[L.Conversation], n: int, queries: int = 300) -> None:
    """Request-path cost in ONE namespace of ``n`` memories (LoCoMo turns repeated, each session a thread):
    `store.search` p50/p95 for the default before this work and now, the query embedding excluded (a
    fake embedder returns a fixed random vector per text), and the vector-cache load (first search)."""
    import hashlib
    from datetime import datetime, timedelta

    import numpy as np

    from app.memory.models import NewMemory
    from app.memory.search import SearchConfig
    from app.memory.store import MemoryStore

    class FakeEmbedder:
        name, dim = "bench:fake", 384

        async def embed(self, texts):
            out = []
            for t in texts:
                seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
                v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
                out.append(v / np.linalg.norm(v))
            return np.stack(out)

        async def aclose(self):
            pass

    recs = [r for c in convs for r in c.records]
    qs = [q["question"] for c in convs for q in c.questions][:queries]
    with tempfile.TemporaryDirectory(prefix="memchat-locomo-scale-") as tmp:
        store = await MemoryStore.open(str(Path(tmp) / "db"), FakeEmbedder())
        t0 = datetime(2023, 1, 1, tzinfo=timezone.utc)
        items = [NewMemory(content=recs[i % len(recs)]["content"], source_thread_id=f"t{i // 20}",
                           created_at=t0 + timedelta(minutes=i)) for i in range(n)]
        for i in range(0, n, 1000):
            await store.add(ORG, "big", items[i:i + 1000])
        await store.maintain()
        old = SearchConfig(w_dense=1.0, preprocess="none", bm25_curve="sat", neighbour_weight=0.0, thread_weight=0.0,
                           question_penalty=0.0, short_penalty=0.0)
        legs = (("before (equal weights, no neighbours)", old), ("now (default)", SearchConfig()))
        loads: dict[str, list[float]] = {name: [] for name, _ in legs}
        lat: dict[str, list[float]] = {name: [] for name, _ in legs}
        for _ in range(5):
            for name, cfg in legs:
                store.vectors.invalidate(ORG, "big")
                t = time.perf_counter()
                await store.search(ORG, "big", qs[0], limit=10, config=cfg)
                loads[name].append((time.perf_counter() - t) * 1000)
        for q in qs:  # the two legs alternate, so load from other processes hits both alike
            for name, cfg in legs:
                t = time.perf_counter()
                await store.search(ORG, "big", q, limit=10, config=cfg)
                lat[name].append((time.perf_counter() - t) * 1000)
        for name, _ in legs:
            print(f"| {n} | {name} | {pct(lat[name], 50):.1f} | {pct(lat[name], 95):.1f} | "
                  f"{statistics.median(loads[name]):.0f} |", flush=True)
        await store.close()


def _local_embedder():
    from app.memory.embed import LocalEmbedder

    return LocalEmbedder(cache_size=0)  # every query embedded live, as a new question would be


# ----------------------------------------------------------------------------- main
def parse_leg(spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = spec.partition(":")
    env = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return name, env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("MEMCHAT_LOCOMO_PATH"), help="path of locomo10.json or locomo10.zip")
    ap.add_argument("--leg", action="append", help="NAME[:ENV=VAL,...] server leg (repeatable); default: "
                    "'default' and 'fts:MEMCHAT_EMBEDDER=none'")
    ap.add_argument("--format", choices=("threads", "plain"), default="threads",
                    help="import format: with session thread ids (default) or plain (no thread ids, session date only)")
    ap.add_argument("--convs", default="0-9", help="conversation indexes, e.g. 0-4 or 0,3,7")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP legs")
    ap.add_argument("--inproc", action="store_true", help="also search a MemoryStore in this process")
    ap.add_argument("--configs", default="default", help="comma-separated SearchConfig names for --inproc "
                    "(see bench_locomo_configs.py)")
    ap.add_argument("--scale", type=int, default=0, help="also measure search cost in one namespace of N "
                    "memories (query embedding excluded)")
    args = ap.parse_args()
    if not args.data:
        ap.error("give --data or set MEMCHAT_LOCOMO_PATH")
    convs = L.load(args.data, args.format)
    sel: set[int] = set()
    for part in args.convs.split(","):
        a, _, b = part.partition("-")
        sel.update(range(int(a), int(b or a) + 1))
    convs = [c for c in convs if c.index in sel]
    print(f"LoCoMo: {len(convs)} conversations, {sum(len(c.records) for c in convs)} turns, "
          f"{sum(len(c.questions) for c in convs)} questions ({sum(c.skipped for c in convs)} without usable "
          "evidence skipped)\n")
    if not args.no_http:
        for spec in args.leg or ["default", "fts:MEMCHAT_EMBEDDER=none"]:
            name, env = parse_leg(spec)
            rows = run_http_leg(name, env, convs)
            print(table(rows, f"HTTP leg {name} {env or ''}") + "\n", flush=True)
    if args.inproc:
        asyncio.run(run_inproc(convs, args.configs.split(",")))
    if args.scale:
        print("| memories in the namespace | search | p50 ms | p95 ms | first search (cache load) ms |\n"
              "|---:|---|---:|---:|---:|")
        asyncio.run(run_scale(convs, args.scale))


if __name__ == "__main__":
    main()
