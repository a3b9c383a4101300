"""The local embedder's encoder layers in numpy (OpenBLAS) vs ONNX Runtime, same weights, same run; and
search queries with int8 weights (`MEMCHAT_EMBEDDER_QUERY_PRECISION=int8`) beside both.

Through `LocalEmbedder` as the server runs it (worker process, one thread, cache off), alternating
arms per round: a short question one at a time (what a request's retrieval waits for; the int8 arm through
``embed_query``), and batches of 16 memory-sized texts (what a commit or an import embeds; always float32).
Also reports the largest difference between the two runtimes' vectors on the texts embedded, and how close
the int8 query vectors are to the float32 ones (cosine).

    .venv/bin/python scripts/bench_embed_runtime.py            # 5 rounds x 40 queries, 5 x 4 batches per arm
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np

from app.memory.embed import LocalEmbedder
from bench_text import Questions, memory_texts


async def timed(emb: LocalEmbedder, batches: list[list[str]], *, query: bool = False) -> list[float]:
    out = []
    for batch in batches:
        t0 = time.perf_counter()
        if query:
            await emb.embed_query(batch[0])
        else:
            await emb.embed(batch)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main_async(args: argparse.Namespace) -> None:
    arms = {rt: LocalEmbedder(cache_size=0, isolation=args.isolation, runtime=rt) for rt in ("numpy", "onnx")}
    int8 = LocalEmbedder(cache_size=0, isolation=args.isolation, runtime="onnx", query_precision="int8")
    for emb in (*arms.values(), int8):
        await emb.warmup()
    await int8.embed_query("warm up")
    questions = Questions(5)
    texts = memory_texts(args.rounds * 4 * 16, seed=9)
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        queries = [[questions.next()] for _ in range(args.n)]
        batches = [texts[(r * 4 + i) * 16:(r * 4 + i + 1) * 16] for i in range(4)]
        order = [*arms.items(), ("onnx, int8 query", int8)]
        for name, emb in (order if r % 2 == 0 else reversed(order)):
            results.setdefault(("query", name), []).extend(await timed(emb, queries, query=emb is int8))
            if emb is not int8:
                results.setdefault(("batch of 16", name), []).extend(await timed(emb, batches))
    sample = [q.next() for q in [questions] * 20] + texts[:20]
    diff = float(np.abs(await arms["numpy"].embed(sample) - await arms["onnx"].embed(sample)).max())
    asked = [questions.next() for _ in range(200)]
    float32 = await arms["onnx"].embed(asked)
    cos = np.array([float(await int8.embed_query(q) @ v) for q, v in zip(asked, float32)])
    for emb in (*arms.values(), int8):
        await emb.aclose()
    print(f"isolation={args.isolation}; {args.rounds} rounds; max |numpy - onnx| per component: {diff:.2e}; "
          f"int8 query vs float32, cosine over {len(asked)} questions: min {cos.min():.4f}, "
          f"mean {cos.mean():.4f}\n")
    print("| work | runtime | p50 ms | p90 ms | mean ms | vs numpy (p50) |")
    print("|---|---|---:|---:|---:|---:|")
    for work in ("query", "batch of 16"):
        base = statistics.median(results[(work, "numpy")])
        for name in [n for w, n in results if w == work]:
            v = sorted(results[(work, name)])
            p50 = statistics.median(v)
            print(f"| {work} | {name} | {p50:.1f} | {v[int(len(v) * 0.9)]:.1f} | {statistics.fmean(v):.1f} | "
                  f"{p50 / base:.2f}× |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=40, help="queries per arm per round")
    ap.add_argument("--isolation", choices=("process", "thread"), default="process")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
