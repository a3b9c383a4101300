#!/usr/bin/env python3
"""The request path's parts, one by one, in-process: CPU per operation, each against its alternative.

* upstream request (50-token stream from the fake upstream, read to the end): the openai SDK's
  ``chat.completions.with_streaming_response.create`` versus the same request as pre-encoded bytes through
  the SDK's own ``httpx2`` client (what memchat does), and ``httpx2`` alone with ``aiter_raw``;
* making a turn durable: one single-row LanceDB ``add`` into a ``turns`` table (what a per-turn append
  costs) versus one journal line (``app.chat.turnjournal``);
* retrieval for a new user: the MiniLM query embedding (what searching an empty namespace would cost at
  least) versus the ``TenantPresence`` check that skips it;
* the dense leg in a namespace of ``--dense-rows`` memories (random 384-d vectors): LanceDB's flat
  prefiltered search versus the in-memory ``VectorCache`` (both through ``MemoryStore.search``).

Arms alternate in rounds; the median round is reported. CPU = this process's user+system time
(``resource.getrusage``), so other load on the machine inflates it less than wall time.

    .venv/bin/python scripts/bench_hotpath.py            # ~1 min, prints a markdown table
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import msgspec
import openai

from app.turns.journal import Journal
from app.turns.turnlog import TurnLog, TurnRecord
from app.memory.embed import LocalEmbedder
from app.memory.presence import TenantPresence
from app.testkit import FakeUpstream


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(arms: dict[str, Callable[[int], Awaitable[None]]], n: int, rounds: int) -> dict[str, float]:
    """Median over rounds of CPU ms per call, arms alternating."""
    samples: dict[str, list[float]] = {name: [] for name in arms}
    for name, op in arms.items():  # warm-up
        for i in range(max(3, n // 10)):
            await op(i)
    for r in range(rounds):
        for name, op in (list(arms.items())[r % len(arms):] + list(arms.items())[:r % len(arms)]):
            c0 = cpu()
            for i in range(n):
                await op(i)
            samples[name].append((cpu() - c0) / n * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def turn(i: int) -> TurnRecord:
    return TurnRecord(turn_id=str(uuid.uuid4()), chat_id=f"chat-{i}", org_id="org", namespace="ns", seq=1,
                      user="What was the name of the restaurant we talked about?", assistant="word " * 50,
                      status="complete", model="fake-gpt", surface="openai", commit_after=120,
                      prefix_hash="p", transcript_hash=uuid.uuid4().hex, created_at=datetime.now(UTC))


async def upstream_arms(fake: FakeUpstream, n: int, rounds: int) -> dict[str, float]:
    http = httpx2.AsyncClient()
    sdk = openai.AsyncOpenAI(api_key="x", base_url=fake.base_url, http_client=http, max_retries=0)
    messages = [{"role": "user", "content": "hello there, how are you today?"}]
    body = msgspec.json.encode({"model": "fake-gpt", "messages": messages, "stream": True})
    headers = {k: v for k, v in {**sdk.default_headers, **sdk.auth_headers}.items() if isinstance(v, str)}
    headers["Accept-Encoding"] = "identity"
    url = str(sdk.base_url).rstrip("/") + "/chat/completions"

    async def via_sdk(_: int) -> None:
        async with sdk.chat.completions.with_streaming_response.create(
                model="fake-gpt", messages=messages, extra_body={"stream": True}) as resp:  # type: ignore[arg-type]
            async for _chunk in resp.http_response.aiter_bytes():
                pass

    async def via_sdk_client(_: int) -> None:
        response = await http.send(http.build_request("POST", url, content=body, headers=headers), stream=True)
        async for _chunk in response.aiter_raw():
            pass
        await response.aclose()

    try:
        return await measure({"SDK create(), streamed": via_sdk, "pre-encoded bytes via the SDK's client":
                              via_sdk_client}, n, rounds)
    finally:
        await sdk.close()


async def durability_arms(n: int, rounds: int) -> dict[str, float]:
    import lancedb

    with tempfile.TemporaryDirectory() as tmp:
        db = await lancedb.connect_async(tmp, read_consistency_interval=timedelta(0))
        turnlog = await TurnLog.open(db)  # no writer task: append() is one table.add per turn
        journal = Journal(Path(tmp) / "journal")

        async def table_add(i: int) -> None:
            await turnlog.append(turn(i))

        async def journal_line(i: int) -> None:
            journal.write([turn(i)])

        try:
            return await measure({"LanceDB single-row add": table_add, "journal line (one write())": journal_line},
                                 n, rounds)
        finally:
            journal.close()


async def retrieval_arms(n: int, rounds: int) -> dict[str, float]:
    embedder = LocalEmbedder(cache_size=0)
    presence = TenantPresence(lambda org, ns: asyncio.sleep(0, 0))
    await presence.may_have_memories("org", "ns")

    async def embed(i: int) -> None:
        await embedder.embed([f"What was the name of the restaurant we talked about last week? ({i})"])

    async def skip(_: int) -> None:
        presence.known_empty("org", "ns")

    try:
        return await measure({"MiniLM query embedding": embed, "empty-namespace check": skip}, n, rounds)
    finally:
        await embedder.aclose()


class RandomEmbedder:
    """384-d random unit vectors: the dense leg's cost does not depend on what they mean."""

    name, dim = "bench:random", 384

    def __init__(self) -> None:
        import numpy as np

        self._rng = np.random.default_rng(0)

    async def embed(self, texts: list[str]):
        import numpy as np

        v = self._rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    async def aclose(self) -> None:
        pass


async def dense_arms(rows: int, n: int, rounds: int) -> dict[str, float]:
    from app.memory.models import NewMemory
    from app.memory.search import SearchConfig
    from app.memory.store import MemoryStore

    with tempfile.TemporaryDirectory() as tmp:
        cached = await MemoryStore.open(tmp, RandomEmbedder())
        for i in range(0, rows, 2000):
            await cached.add("org", "big", [NewMemory(content=f"memory number {j} about things")
                                            for j in range(i, min(rows, i + 2000))])
        await cached.maintain()
        plain = await MemoryStore.open(tmp, RandomEmbedder())
        plain.vectors.max_bytes = 0
        dense = SearchConfig(mode="dense")

        def search(store: MemoryStore) -> Callable[[int], Awaitable[None]]:
            async def op(i: int) -> None:
                await store.search("org", "big", f"query {i}", limit=8, config=dense)
            return op

        try:
            return await measure({"LanceDB flat search": search(plain), "in-memory vectors (VectorCache)":
                                  search(cached)}, n, rounds)
        finally:
            await cached.close()
            await plain.close()


async def main_async(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str, float]] = []
    with FakeUpstream("--no-record") as fake:
        fake.set_config(tokens=50, first_token_delay=None, token_delay=None)
        for name, ms in (await upstream_arms(fake, args.n, args.rounds)).items():
            rows.append(("upstream request, 50-chunk stream", name, ms))
    for name, ms in (await durability_arms(args.n, args.rounds)).items():
        rows.append(("make a turn durable", name, ms))
    for name, ms in (await retrieval_arms(max(10, args.n // 5), args.rounds)).items():
        rows.append(("retrieval for an empty namespace", name, ms))
    for name, ms in (await dense_arms(args.dense_rows, max(10, args.n // 5), args.rounds)).items():
        rows.append((f"dense leg, {args.dense_rows} memories in the namespace (incl. a random query vector)",
                     name, ms))
    print("| step | how | CPU ms per call (median of rounds) |\n| --- | --- | --- |")
    for step, how, ms in rows:
        print(f"| {step} | {how} | {ms:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="calls per arm per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dense-rows", type=int, default=10_000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
