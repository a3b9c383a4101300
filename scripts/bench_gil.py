#!/usr/bin/env python3
"""LanceDB beside a busy event loop: full-text searches per second by GIL switch interval.

One process, a memory store like the soak's (40 namespaces x 20 memories, no embedder, so a search is one
LanceDB full-text query plus memchat's own work). Each arm sets ``sys.setswitchinterval`` and runs searches
one at a time and 100 at once, with the event loop idle and with one Python task that keeps it busy (2 ms
of work, then ``await asyncio.sleep(0)``: the state of a server under load). Arms alternate, so a noisy
machine affects them alike. Prints a markdown table (``--docs`` also writes the "LanceDB beside a busy event
loop" section of docs/benchmarks.md). The server keeps CPython's interval: a shorter one did not help end to
end (the section after it, "... : reading").

    .venv/bin/python scripts/bench_gil.py            # ~4 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import machine_line, md_table, write_section  # noqa: E402

from app.memory.embed import NullEmbedder  # noqa: E402
from app.memory.models import NewMemory  # noqa: E402
from app.memory.store import MemoryStore  # noqa: E402

WORDS = ("alice bob paris hiking coffee dog cat guitar python running book movie sister brother job london "
         "tokyo pizza").split()
INTERVALS_MS = (5.0, 1.0, 0.2)  # 5 ms: CPython's default


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(10))


async def make_store(path: str) -> MemoryStore:
    rng = random.Random(1)
    store = await MemoryStore.open(path, NullEmbedder())
    for ns in range(40):
        await store.add("org", f"ns{ns}", [NewMemory(content=sentence(rng)) for _ in range(20)])
    return store


async def run_arm(store: MemoryStore, concurrency: int, busy: bool, count: int) -> tuple[float, float, float]:
    """(searches/s, p50 ms, p99 ms)."""
    rng = random.Random(7)
    stop = asyncio.Event()

    async def hog() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            while time.perf_counter() - started < 0.002:
                pass
            await asyncio.sleep(0)

    hogs = [asyncio.create_task(hog())] if busy else []
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await store.search("org", f"ns{i % 40}", sentence(rng), limit=8)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*hogs)
    latencies.sort()
    return count / wall, statistics.median(latencies) * 1e3, latencies[min(len(latencies) - 1,
                                                                          int(len(latencies) * 0.99))] * 1e3


async def main_async(args: argparse.Namespace) -> list[list[str]]:
    store = await make_store(tempfile.mkdtemp(prefix="memchat-bench-gil-"))
    for _ in range(20):  # warm up
        await store.search("org", "ns0", "coffee dog", limit=8)
    rows: list[list[str]] = []
    for concurrency in (1, 100):
        for busy in (False, True):
            for interval in INTERVALS_MS:
                sys.setswitchinterval(interval / 1000)
                count = args.searches if concurrency > 1 else args.searches // 10
                rate, p50, p99 = await run_arm(store, concurrency, busy, count)
                rows.append([f"{concurrency}", "busy" if busy else "idle", f"{interval:g} ms", f"{rate:.1f}" if rate < 10 else f"{rate:.0f}",
                             f"{p50:.0f}", f"{p99:.0f}"])
                print(" | ".join(rows[-1]), flush=True)
    sys.setswitchinterval(0.005)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--searches", type=int, default=300, help="searches per arm at 100 at once (a tenth one by one)")
    p.add_argument("--docs", action="store_true", help="write the section of docs/benchmarks.md")
    args = p.parse_args(argv)
    machine = machine_line()
    rows = asyncio.run(main_async(args))
    table = md_table(["searches at once", "event loop", "switch interval", "searches / s", "p50 ms", "p99 ms"], rows)
    report = (f"Measured {time.strftime('%Y-%m-%d')} with\n\n```sh\n.venv/bin/python scripts/bench_gil.py --docs\n```\n\n"
              f"{machine}\n\n{table}\n")
    print(report)
    if args.docs:
        write_section("LanceDB beside a busy event loop", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
