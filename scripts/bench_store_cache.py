"""Memory held by LanceDB's caches while a server writes: RSS and the cache size (`lancedb.Session.size_bytes`)
after every 100 commit-like steps (a search in a namespace, then two memories written to it, 40 namespaces),
with LanceDB's default cache bounds against memchat's (`MEMCHAT_STORE_METADATA_CACHE_MB`,
`MEMCHAT_STORE_INDEX_CACHE_MB`). Each arm runs in a fresh process on a fresh store (RSS is per process).

    .venv/bin/python scripts/bench_store_cache.py                  # 800 steps per arm, ~4 min
    .venv/bin/python scripts/bench_store_cache.py --steps 200      # quick

Memory, not time, is measured, so load from other processes does not change the figures much.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.config import StoreSettings
from bench_text import Questions, memory_texts

ORG = "bench-org"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run_arm(steps: int, bounded: bool, embedder_kind: str) -> list[dict[str, float]]:
    import lancedb

    from app.memory.embedders import build_embedder
    from app.memory.models import NewMemory
    from app.memory.store import MemoryStore
    from app.storage.connection import cache_session, connect

    defaults = StoreSettings()
    session = cache_session(defaults.metadata_cache_mb, defaults.index_cache_mb) if bounded else lancedb.Session()
    with tempfile.TemporaryDirectory(prefix="bench-store-cache-") as tmp:
        embedder = build_embedder(embedder_kind)
        db = await connect(str(Path(tmp) / "lancedb"), session=session)
        store = await MemoryStore.open_on(db, embedder)
        texts, questions = memory_texts(2 * steps), Questions(1)
        await store.add(ORG, "warm", [NewMemory(content="warm up", source="conversation")])
        await store.search(ORG, "warm", "warm up")
        rows = [{"step": 0, "rss": rss_mib(), "cache": session.size_bytes / 2**20, "ms": 0.0}]
        t0 = time.perf_counter()
        for i in range(steps):
            namespace = f"ns{i % 40}"
            await store.search(ORG, namespace, questions.next(), limit=10)
            await store.add(ORG, namespace, [NewMemory(content=texts[2 * i + k], source="conversation",
                                                       source_thread_id=f"c{i}") for k in range(2)])
            if (i + 1) % 100 == 0:
                rows.append({"step": i + 1, "rss": rss_mib(), "cache": session.size_bytes / 2**20,
                             "ms": (time.perf_counter() - t0) * 10})  # mean ms per step over the last 100
                t0 = time.perf_counter()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        rows.append({"step": -1, "rss": rss_mib(), "cache": session.size_bytes / 2**20, "ms": 0.0})
        await store.close()
        await embedder.aclose()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--embedder", default="local", choices=["local", "none"])
    p.add_argument("--arm", choices=["default", "bounded"], help=argparse.SUPPRESS)  # one arm, in a child process
    args = p.parse_args()
    if args.arm:
        print(json.dumps(asyncio.run(run_arm(args.steps, args.arm == "bounded", args.embedder))))
        return
    results = {}
    for arm in ("default", "bounded"):
        out = subprocess.run([sys.executable, __file__, "--arm", arm, "--steps", str(args.steps),
                              "--embedder", args.embedder], capture_output=True, text=True, check=True)
        results[arm] = json.loads(out.stdout.strip().splitlines()[-1])
    d = StoreSettings()
    print(f"\nLanceDB caches: default (1 GiB metadata, 6 GiB index) vs bounded ({d.metadata_cache_mb} MiB metadata, "
          f"{d.index_cache_mb} MiB index); embedder {args.embedder}; RSS and cache in MiB, ms = mean time of a step "
          "(search + write) over the last 100 steps\n")
    print("| steps | default: RSS | cache | ms | bounded: RSS | cache | ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for a, b in zip(results["default"], results["bounded"], strict=True):
        label = "after malloc_trim" if a["step"] < 0 else str(a["step"])
        print(f"| {label} | {a['rss']:.0f} | {a['cache']:.1f} | {a['ms']:.1f} | {b['rss']:.0f} | {b['cache']:.1f} "
              f"| {b['ms']:.1f} |")


if __name__ == "__main__":
    main()
