"""Which LanceDB work leaves the process's heap larger, and does another allocator keep it flat?

One table in a temp dir (a 384-float vector, a text and a tenant column, like memchat's tables), caches bounded
as the server bounds them (`connection.cache_session`, 64 + 64 MiB). Each round: ``--writes`` one-row appends,
a filtered 10-row read every 10 writes, and -- in the arms that compact -- `tables.optimize` every ``N`` writes
with old versions removed at once, as memchat's compactor does. After each round the table and its connection
are closed and dropped, the garbage collector runs and glibc's free pages are returned (`heap.release_free_memory`),
and the process's RSS is read: what stays is what the work left behind that no handle holds. Each arm runs in
a process of its own; ``jemalloc`` arms run with ``libjemalloc.so.2`` preloaded and memchat's `heap.JEMALLOC_CONF`
(``MEMCHAT_ALLOCATOR=jemalloc``).

    .venv/bin/python scripts/bench_heap_growth.py                  # all arms, 4 rounds of 1 500 writes, ~6 min
    .venv/bin/python scripts/bench_heap_growth.py --arms glibc-compact32,jemalloc-compact32 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIM = 384
# arm -> (allocator, compact every N writes (0: never), indexes)
ARMS = {
    "glibc-append": ("glibc", 0, ("btree", "fts")),
    "glibc-compact32": ("glibc", 32, ("btree", "fts")),
    "glibc-compact32-noindex": ("glibc", 32, ()),
    "glibc-compact256": ("glibc", 256, ("btree", "fts")),
    "jemalloc-compact32": ("jemalloc", 32, ("btree", "fts")),
}


async def arm(name: str, rounds: int, writes: int) -> None:
    import lancedb
    import pyarrow as pa

    from app.heap import release_free_memory, resident_bytes
    from app.storage import tables
    from app.storage.connection import cache_session, connect

    _, every, indexes = ARMS[name]
    schema = pa.schema([("id", pa.string()), ("tenant", pa.string()), ("text", pa.string()),
                        ("vector", pa.list_(pa.float32(), DIM))])
    rng = random.Random(7)

    def row(i: int) -> pa.Table:
        return pa.Table.from_pylist([{"id": f"r{i}", "tenant": f"t{i % 40}", "text": f"turn {i} " + "word " * 30,
                                      "vector": [rng.random() for _ in range(DIM)]}], schema=schema)

    def settled_mib() -> int:
        gc.collect()
        release_free_memory()
        return resident_bytes() >> 20

    with tempfile.TemporaryDirectory(prefix="memchat-bench-heap-") as tmp:
        db = await connect(tmp, session=cache_session(64, 64))
        table = await db.create_table("t", row(-1))
        if "btree" in indexes:
            await table.create_index("tenant", config=lancedb.index.BTree())
        if "fts" in indexes:
            await table.create_index("text", config=lancedb.index.FTS())
        n = 0
        cells = []
        for r in range(rounds + 1):  # round 0: a short warm-up
            for _ in range(200 if r == 0 else writes):
                n += 1
                await table.add(row(n))
                if every and n % every == 0:
                    await tables.optimize(table, what="bench", cleanup_older_than=timedelta(0))
                if n % 10 == 0:
                    await table.query().where(f"tenant = 't{n % 40}'").limit(10).to_arrow()
            table.close()
            db.close()
            del table, db
            cells.append(settled_mib())
            db = await connect(tmp, session=cache_session(64, 64))
            table = await db.open_table("t")
        print(f"| {name} | {' / '.join(map(str, cells))} | {cells[-1] - cells[0]:+d} | {cells[-1] - cells[1]:+d} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--writes", type=int, default=1500, help="writes per round")
    ap.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # one arm, in its own process
    args = ap.parse_args()
    if args.arm is not None:
        asyncio.run(arm(args.arm, args.rounds, args.writes))
        return
    from app.heap import JEMALLOC_CONF, find_jemalloc, preload_jemalloc

    print(f"| arm | RSS MiB after warm-up / after each round of {args.writes} writes (handles dropped, trimmed) "
          "| last - warm-up | last - round 1 |\n|---|---|---:|---:|", flush=True)
    for name in args.arms.split(","):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LANCEDB_LOG": "error"}
        if ARMS[name][0] == "jemalloc":
            library = find_jemalloc()
            if library is None:
                sys.exit("libjemalloc.so.2 not found (apt install libjemalloc2)")
            env = preload_jemalloc({**env, "MALLOC_CONF": JEMALLOC_CONF}, library)
        subprocess.run([sys.executable, "-W", "ignore", __file__, "--arm", name, "--rounds", str(args.rounds),
                        "--writes", str(args.writes)], check=True, cwd=ROOT, env=env)


if __name__ == "__main__":
    main()
