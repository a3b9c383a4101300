"""What kept table versions cost: a filtered read and the process's memory as one-row writes pile up versions.

One table, one-row appends, compacted every 32 writes as memchat's compactor does (`tables.optimize`), with old
versions removed after ``--keep`` seconds. Each arm runs in a process of its own (RSS is per process), with the
caches bounded as the server bounds them (`connection.cache_session`, 64 MiB metadata). At each checkpoint: the
version files on disk, a filtered 10-row read's p50 over 50 reads, and the process's RSS. With the writes this
fast, 600 s keeps every version and 0 s only the newest.

    .venv/bin/python scripts/bench_versions.py                          # arms keep=600 and keep=0, ~2 min
    .venv/bin/python scripts/bench_versions.py --arms 600,30,0 --writes 1000,3000,6000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> int:
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024


async def arm(keep: float, checkpoints: list[int]) -> None:
    import pyarrow as pa

    from app.storage import tables
    from app.storage.connection import cache_session, connect

    with tempfile.TemporaryDirectory(prefix="memchat-bench-versions-") as tmp:
        db = await connect(tmp, session=cache_session(64, 64))
        table = await db.create_table("t", pa.table({"tenant": ["t0"], "v": [0]}))
        n = 0
        for target in checkpoints:
            while n < target:
                n += 1
                await table.add(pa.table({"tenant": [f"t{n % 40}"], "v": [n]}))
                if n % 32 == 0:
                    await tables.optimize(table, what="bench", cleanup_older_than=timedelta(seconds=keep))
            times = []
            for _ in range(50):
                t0 = time.perf_counter()
                await table.query().where("tenant = 't3'").limit(10).to_arrow()
                times.append((time.perf_counter() - t0) * 1000)
            files = len(os.listdir(Path(tmp) / "t.lance" / "_versions"))
            print(f"| {keep:g} s | {n} | {files} | {statistics.median(times):.2f} | {rss_mib()} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="600,0", help="seconds of versions kept, one arm each")
    ap.add_argument("--writes", default="100,1000,3000,6000", help="checkpoints (writes so far)")
    ap.add_argument("--arm", type=float, default=None, help=argparse.SUPPRESS)  # one arm, in its own process
    args = ap.parse_args()
    checkpoints = [int(x) for x in args.writes.split(",")]
    if args.arm is not None:
        asyncio.run(arm(args.arm, checkpoints))
        return
    print("| versions kept | writes | version files | filtered read p50 ms | RSS MiB |\n|---|---:|---:|---:|---:|",
          flush=True)
    for keep in args.arms.split(","):
        subprocess.run([sys.executable, __file__, "--arm", keep, "--writes", args.writes], check=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


if __name__ == "__main__":
    main()
