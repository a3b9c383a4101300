"""Query embedding beside a busy event loop: the local model in a worker thread vs a worker process.

The server's event loop holds the GIL most of the time under load. A worker thread running the numpy model
gives the GIL up for each matrix product and must wait for it back after each (up to the switch interval,
5 ms); a worker process has a GIL of its own. Here a loop thread runs pure-Python work all along (the
"busy loop"), or nothing ("idle"), while short questions are embedded one at a time through
`LocalEmbedder.embed` with ``isolation="thread"`` and ``"process"``, alternating per round, in the same run.

    .venv/bin/python scripts/bench_embed_gil.py              # 5 rounds x 40 queries per arm
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time

from app.memory.embed import LocalEmbedder
from bench_text import Questions


def busy(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i * i


async def one_round(emb: LocalEmbedder, questions: Questions, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await emb.embed([questions.next()])
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def main_async(args: argparse.Namespace) -> None:
    arms = {"thread": LocalEmbedder(cache_size=0, isolation="thread"),
            "process": LocalEmbedder(cache_size=0, isolation="process")}
    for emb in arms.values():
        await emb.warmup()
    questions = Questions(11)
    results: dict[tuple[str, str], list[float]] = {}
    for load in ("idle", "busy loop"):
        stop = threading.Event()
        worker = threading.Thread(target=busy, args=(stop,), daemon=True) if load != "idle" else None
        if worker:
            worker.start()
        try:
            for _ in range(args.rounds):
                for name, emb in arms.items():
                    results.setdefault((load, name), []).extend(await one_round(emb, questions, args.n))
        finally:
            stop.set()
            if worker:
                worker.join()
    for emb in arms.values():
        await emb.aclose()
    print("\n| load | isolation | p50 ms | p90 ms | mean ms |")
    print("|---|---|---:|---:|---:|")
    for (load, name), times in results.items():
        times.sort()
        print(f"| {load} | {name} | {statistics.median(times):.1f} | {times[int(len(times) * 0.9)]:.1f} | "
              f"{statistics.fmean(times):.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=40, help="queries per arm per round")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
