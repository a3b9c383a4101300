"""Memory held by LanceDB's caches while a server writes: RSS and the cache size (`lancedb.Session.size_bytes`)
after every 100 commit-like steps (a search in a namespace, then two memories written to it, 40 namespaces),
one arm per cache bound: LanceDB's defaults (``default``) or ``METADATA_MB:INDEX_MB`` (memchat's are
`MEMCHAT_STORE_METADATA_CACHE_MB`, `MEMCHAT_STORE_INDEX_CACHE_MB`). With ``--maintain-every N`` the store is
also compacted every N steps as the server's compactor does (new rows folded into the indexes, versions older
than `MEMCHAT_STORE_KEEP_VERSIONS` removed): each compaction writes new index files, so what the index cache
holds of the old ones shows. Each arm runs in a fresh process on a fresh store (RSS is per process).

    .venv/bin/python scripts/bench_store_cache.py                  # 800 steps, default vs memchat's bounds
    .venv/bin/python scripts/bench_store_cache.py --steps 200      # quick
    .venv/bin/python scripts/bench_store_cache.py --maintain-every 16 --arms 64:1024,64:128,64:32

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
from datetime import timedelta
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


def indices_mib(store_dir: Path) -> float:
    """MiB of index files under the store (only the memories table here): what a full index cache could hold."""
    return sum(f.stat().st_size for f in store_dir.glob("**/_indices/**/*") if f.is_file()) / 2**20


async def run_arm(steps: int, arm: str, embedder_kind: str, maintain_every: int) -> list[dict[str, float]]:
    import lancedb

    from app.memory.embedders import build_embedder
    from app.memory.models import NewMemory
    from app.memory.store import MemoryStore
    from app.storage.connection import cache_session, connect

    if arm == "default":
        session = lancedb.Session()
    else:
        metadata_mb, index_mb = (int(x) for x in arm.split(":"))
        session = cache_session(metadata_mb, index_mb)
    keep = timedelta(seconds=StoreSettings().keep_versions)
    with tempfile.TemporaryDirectory(prefix="bench-store-cache-") as tmp:
        embedder = build_embedder(embedder_kind)
        db = await connect(str(Path(tmp) / "lancedb"), session=session)
        store = await MemoryStore.open_on(db, embedder)
        texts, questions = memory_texts(2 * steps), Questions(1)
        await store.add(ORG, "warm", [NewMemory(content="warm up", source="conversation")])
        await store.search(ORG, "warm", "warm up")
        where = Path(tmp) / "lancedb"
        rows = [{"step": 0, "rss": rss_mib(), "cache": session.size_bytes / 2**20, "ms": 0.0, "search_ms": 0.0,
                 "indices": indices_mib(where)}]
        t0, searching = time.perf_counter(), 0.0
        for i in range(steps):
            namespace = f"ns{i % 40}"
            s0 = time.perf_counter()
            await store.search(ORG, namespace, questions.next(), limit=10)
            searching += time.perf_counter() - s0
            await store.add(ORG, namespace, [NewMemory(content=texts[2 * i + k], source="conversation",
                                                       source_thread_id=f"c{i}") for k in range(2)])
            if maintain_every and (i + 1) % maintain_every == 0:
                await store.maintain(cleanup_older_than=keep)
            if (i + 1) % 100 == 0:
                rows.append({"step": i + 1, "rss": rss_mib(), "cache": session.size_bytes / 2**20,
                             "ms": (time.perf_counter() - t0) * 10,  # mean ms per step over the last 100
                             "search_ms": searching * 10, "indices": indices_mib(where)})
                t0, searching = time.perf_counter(), 0.0
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        rows.append({"step": -1, "rss": rss_mib(), "cache": session.size_bytes / 2**20, "ms": 0.0, "search_ms": 0.0,
                     "indices": indices_mib(where)})
        await store.close()
        await embedder.aclose()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--embedder", default="local", choices=["local", "none"])
    p.add_argument("--arms", default=None, help="comma-separated: default (LanceDB's bounds) or METADATA_MB:INDEX_MB "
                   "(default: default and memchat's current bounds)")
    p.add_argument("--maintain-every", type=int, default=0, metavar="N",
                   help="compact the store every N steps, as the server's compactor does (0: never)")
    p.add_argument("--arm", help=argparse.SUPPRESS)  # one arm, in a child process
    args = p.parse_args()
    if args.arm:
        print(json.dumps(asyncio.run(run_arm(args.steps, args.arm, args.embedder, args.maintain_every))))
        return
    d = StoreSettings()
    arms = [a.strip() for a in (args.arms or f"default,{d.metadata_cache_mb}:{d.index_cache_mb}").split(",")]
    results = {}
    for arm in arms:
        out = subprocess.run([sys.executable, __file__, "--arm", arm, "--steps", str(args.steps), "--embedder",
                              args.embedder, "--maintain-every", str(args.maintain_every)],
                             capture_output=True, text=True, check=True)
        results[arm] = json.loads(out.stdout.strip().splitlines()[-1])
    names = {a: "LanceDB's default bounds (1 GiB metadata, 6 GiB index)" if a == "default"
             else f"{a.split(':')[0]} MiB metadata + {a.split(':')[1]} MiB index" for a in arms}
    print(f"\nLanceDB caches, arms: {'; '.join(f'`{a}` = {n}' for a, n in names.items())}. Embedder {args.embedder}; "
          f"{'compacted every ' + str(args.maintain_every) + ' steps' if args.maintain_every else 'never compacted'}. "
          "RSS and cache in MiB; search = mean ms of a search over the last 100 steps, step = search + write "
          "(+ compaction); index files = the memories table's `_indices` on disk\n")
    print("| steps | " + " | ".join(f"`{a}`: RSS | cache | search ms | step ms" for a in arms) + " | index files MiB |")
    print("|---:|" + "---:|---:|---:|---:|" * len(arms) + "---:|")
    for k, first in enumerate(results[arms[0]]):
        label = "after malloc_trim" if first["step"] < 0 else str(first["step"])
        cells = [f"{r['rss']:.0f} | {r['cache']:.1f} | {r['search_ms']:.1f} | {r['ms']:.1f}"
                 for r in (results[a][k] for a in arms)]
        print(f"| {label} | " + " | ".join(cells) + f" | {first['indices']:.1f} |")


if __name__ == "__main__":
    main()
