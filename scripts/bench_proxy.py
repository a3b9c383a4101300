#!/usr/bin/env python3
"""Proxy overhead of memchat against a direct connection, and against the LiteLLM proxy.

Everything runs on this machine (loopback only). One fake upstream (``scripts/fake_openai.py``) is
the model for every arm:

    direct        client -> fake
    floor         client -> bare Litestar + httpx2 byte passthrough (scripts/passthrough_floor.py) -> fake
    mc-empty      client -> memchat (namespace with no memories) -> fake
    mc-10k        client -> memchat (namespace with 10 000 memories, retrieval injects a section) -> fake
    litellm       client -> LiteLLM proxy 1.80.0 (separate venv, offline) -> fake

Phase 1, zero delay (pure CPU): the fake streams 50 tokens as fast as it can. The client is the
async ``openai`` SDK, one request at a time; arms are interleaved in blocks (A B C D, B C D A, ...)
after a warm-up, ``--requests`` requests per arm. Reported: time to first content token (TTFT) and
inter-chunk gap, each as the difference to ``direct`` measured in the same run, and the proxy's CPU
seconds (``/proc/<pid>/stat`` utime+stime of the server process tree, read before/after each block)
per 1 000 streamed content chunks (per-request work -- retrieval, turn log -- amortised over
50-chunk replies). Phase 1b repeats it with 500-token replies: the difference gives the marginal CPU
of one relayed chunk, free of the per-request work.

Phase 2, realistic cadence: first token after 50 ms, then 30 tokens/s (``--ramp-tokens`` per
reply). Concurrency is ramped (10, 25, 50, 100, 200, 300, 500, 750, 1000) with a lean raw-socket SSE
client; each level staggers its streams in over one reply's length, then holds for ``--hold``
seconds. A level is held when the p99 inter-chunk gap is <= 100 ms and there are no errors; an arm
stops at the first level that fails twice in a row (or when ``--ramp-budget`` runs out). The arms
are interleaved level by level. ``direct`` is ramped too: it is the ceiling of this harness (client,
fake and proxy share the same 2 cores).

    .venv/bin/python scripts/bench_proxy.py                 # full run (~10 min), writes docs/benchmarks.md
    .venv/bin/python scripts/bench_proxy.py --quick         # short run (~2 min)
    .venv/bin/python scripts/bench_proxy.py --install-litellm   # first make /tmp/memchat-bench-litellm
    .venv/bin/python scripts/bench_proxy.py --profile       # + py-spy profile of memchat's CPU per chunk
    .venv/bin/python scripts/bench_proxy.py --responses     # Responses API vs chat completions (phase 1, 1b)

``--responses`` measures only phases 1 and 1b, over four arms in the same run: ``direct`` and
``direct-resp`` (the fake's chat completions and its ``/v1/responses``), ``mc-empty`` and ``mc-resp``
(memchat's chat completions and Responses API, empty namespace); TTFT is reported against the direct arm
of the same API. The table goes to the section "Responses API overhead" of docs/benchmarks.md.

LiteLLM is looked for at ``--litellm-bin``, ``$LITELLM_BIN``, ``/tmp/memchat-bench-litellm/bin/litellm``
or on PATH; it is never installed into the project's venv. When it is missing or fails to start the
script says so and measures the other arms. The 10k-memory store is built once with the server's
embedder and cached under ``--cache-dir`` (default /tmp/memchat-bench-cache); ``--no-cache`` builds it
in the run's temporary directory instead.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("LANCEDB_LOG", "error")

from app.testkit import REPO_ROOT  # noqa: E402
from bench_common import (  # noqa: E402
    API_KEY,
    MODEL,
    ORG,
    REALISTIC,
    ZERO,
    CpuMeter,
    FakeUpstream,
    FloorProxy,
    LiteLLM,
    Memchat,
    RawClient,
    StreamResult,
    chat_body,
    cleanup_app_exports,
    closed_loop,
    cpu_seconds,
    find_litellm,
    fmt,
    install_litellm,
    load_now,
    machine_line,
    md_table,
    memchat_env,
    pct,
    peak_rss_mib,
    start_run,
    stop_all,
    thread_cpu,
    thread_cpu_delta,
    use_app_ref,
    versions,
    write_section,
)
from bench_proxy_report import as_ms, marginal_us, report, results_json  # noqa: E402
from bench_text import Questions, memory_texts  # noqa: E402

NS_EMPTY = "bench-empty"
NS_10K = "bench-10k"
GAP_LIMIT = 0.100
TTFT_LIMIT = 1.0   # a level whose streams queue longer than this for their first token is not "held"

# ------------------------------------------------------------------------------------------ 10k store


async def _build_store(lancedb_dir: Path, embedder_kind: str, n: int) -> float:
    from app.memory.embedders import build_embedder
    from app.memory.models import NewMemory
    from app.memory.store import MemoryStore

    t0 = time.perf_counter()
    embedder = build_embedder(embedder_kind)
    store = await MemoryStore.open(str(lancedb_dir), embedder)
    texts = memory_texts(n)
    batch = 500
    for i in range(0, n, batch):
        await store.add(ORG, NS_10K, [NewMemory(content=t, source="conversation") for t in texts[i:i + batch]])
        print(f"  memories {min(i + batch, n)}/{n} ({time.perf_counter() - t0:.0f} s)", flush=True)
    await store.maintain()
    count = await store.count(ORG, NS_10K)
    await store.close()
    await embedder.aclose()
    if count != n:
        raise RuntimeError(f"store has {count} memories, expected {n}")
    return time.perf_counter() - t0


def prepare_store(data_dir: Path, embedder_kind: str, n: int, cache_dir: Path | None) -> str:
    from app.memory.embedders import build_embedder

    name = build_embedder(embedder_kind).name.replace(":", "_").replace("/", "_")
    target = data_dir / "lancedb"
    if cache_dir is None:
        secs = asyncio.run(_build_store(target, embedder_kind, n))
        return f"built in {secs:.0f} s"
    import hashlib

    # The store's code is part of the key: a schema change must not reuse an old store.
    digest = hashlib.sha256()
    for f in sorted([*(REPO_ROOT / "app" / "memory").glob("*.py"), *(REPO_ROOT / "app" / "storage").glob("*.py")]):
        digest.update(f.read_bytes())
    cached = cache_dir / f"store-{name}-{n}-{digest.hexdigest()[:10]}"
    if not (cached / "done").exists():
        shutil.rmtree(cached, ignore_errors=True)
        print(f"building the {n}-memory store once (cached at {cached}) ...", flush=True)
        secs = asyncio.run(_build_store(cached / "lancedb", embedder_kind, n))
        (cached / "done").write_text(f"{secs:.1f}\n")
    shutil.copytree(cached / "lancedb", target)
    return f"from cache {cached}"


# ------------------------------------------------------------------------------------------ arms


@dataclass
class Arm:
    name: str
    label: str
    base_url: str                 # OpenAI base URL for the SDK
    host: str
    port: int
    path: str                     # raw client path (incl. query)
    headers: dict[str, str]
    api_key: str
    extra_query: dict[str, str] | None
    pid: int                      # the server process whose CPU is charged to this arm
    api: str = "chat"             # "chat" (chat completions) | "responses" (phase 1 only)
    # phase 1 results
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    cpu: float = 0.0
    wall: float = 0.0
    # phase 1b: long replies (marginal per-chunk CPU)
    long_cpu: float = 0.0
    long_chunks: int = 0
    long_requests: int = 0
    # phase 2 results
    levels: list[dict[str, Any]] = field(default_factory=list)
    ramp_note: str = ""


def make_arms(fake: FakeUpstream, mc: Memchat | None, ll: LiteLLM | None, with_10k: bool,
              floor: FloorProxy | None = None) -> list[Arm]:
    arms = [Arm("direct", "direct to the fake", fake.base_url, "127.0.0.1", fake.port, "/v1/chat/completions", {},
                "x", None, fake.proc.pid)]
    if floor is not None:
        arms.append(Arm("floor", "bare Litestar + httpx2 passthrough", floor.url + "/v1", "127.0.0.1", floor.port,
                        "/v1/chat/completions", {}, "x", None, floor.pid))
    if mc is not None:
        auth = {"authorization": f"Bearer {API_KEY}"}
        arms.append(Arm("mc-empty", "memchat, empty namespace", mc.openai_base_url, "127.0.0.1", mc.port,
                        f"/v1/memory/chat/completions?namespace={NS_EMPTY}", auth, API_KEY,
                        {"namespace": NS_EMPTY}, mc.pid))
        if with_10k:
            arms.append(Arm("mc-10k", "memchat, 10k memories", mc.openai_base_url, "127.0.0.1", mc.port,
                            f"/v1/memory/chat/completions?namespace={NS_10K}", auth, API_KEY,
                            {"namespace": NS_10K}, mc.pid))
    if ll is not None:
        arms.append(Arm("litellm", f"LiteLLM {ll.version()}", ll.url + "/v1", "127.0.0.1", ll.port,
                        "/v1/chat/completions", {}, "x", None, ll.pid))
    return arms


# ------------------------------------------------------------------------------------------ phase 1


async def sdk_request(client: Any, arm: Arm, text: str) -> tuple[float | None, list[float], str | None]:
    import time as _t
    clock = _t.perf_counter
    t0 = clock()
    times: list[float] = []
    ttft = None
    try:
        if arm.api == "responses":
            return await _responses_request(client, arm, text, t0)
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], stream=True,
            extra_query=arm.extra_query)
        async for chunk in stream:
            now = clock()
            if chunk.choices and chunk.choices[0].delta is not None and chunk.choices[0].delta.content:
                if ttft is None:
                    ttft = now - t0
                times.append(now)
    except Exception as exc:  # noqa: BLE001 -- reported, the run goes on
        return None, [], f"{type(exc).__name__}: {exc}"[:200]
    if ttft is None or len(times) < 2:
        return None, [], f"incomplete stream ({len(times)} content chunks)"
    return ttft, times, None


async def _responses_request(client: Any, arm: Arm, text: str,
                             t0: float) -> tuple[float | None, list[float], str | None]:
    """``sdk_request`` for a Responses API arm: content chunks are ``response.output_text.delta`` events."""
    times: list[float] = []
    stream = await client.responses.create(model=MODEL, input=text, stream=True, extra_query=arm.extra_query)
    async for event in stream:
        if event.type == "response.output_text.delta" and event.delta:
            times.append(time.perf_counter())
    if len(times) < 2:
        return None, [], f"incomplete stream ({len(times)} content chunks)"
    return times[0] - t0, times, None


async def phase_zero_delay(arms: list[Arm], requests: int, warmup: int, block: int, qs: Questions) -> None:
    import openai

    clients = {a.name: openai.AsyncOpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=60)
               for a in arms}
    try:
        for arm in arms:  # warm-up: connections, caches, JIT-free but lazy imports, first LanceDB reads
            for _ in range(warmup):
                await sdk_request(clients[arm.name], arm, qs.next())
        cycles = (requests + block - 1) // block
        for c in range(cycles):
            order = arms[c % len(arms):] + arms[:c % len(arms)]
            for arm in order:
                n = min(block, requests - arm.requests)
                if n <= 0:
                    continue
                cpu0, w0 = cpu_seconds(arm.pid), time.perf_counter()
                results = [await sdk_request(clients[arm.name], arm, qs.next()) for _ in range(n)]
                arm.cpu += cpu_seconds(arm.pid) - cpu0
                arm.wall += time.perf_counter() - w0
                for ttft, times, err in results:
                    arm.requests += 1
                    if err is not None:
                        arm.errors.append(err)
                        continue
                    arm.ttft.append(ttft)
                    arm.chunks += len(times)
                    arm.gaps.extend(b - a for a, b in zip(times, times[1:]))
            print(f"  cycle {c + 1}/{cycles}", end="\r", flush=True)
        print()
    finally:
        for c in clients.values():
            await c.close()


async def phase_long(arms: list[Arm], requests: int, block: int, qs: Questions) -> None:
    """Same as phase 1 with long replies: CPU(long) - CPU(short) per request / extra chunks = the marginal
    CPU of one relayed chunk, free of the per-request work."""
    import openai

    clients = {a.name: openai.AsyncOpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=60)
               for a in arms}
    try:
        for arm in arms:
            await sdk_request(clients[arm.name], arm, qs.next())
        cycles = (requests + block - 1) // block
        for c in range(cycles):
            order = arms[c % len(arms):] + arms[:c % len(arms)]
            for arm in order:
                n = min(block, requests - arm.long_requests)
                if n <= 0:
                    continue
                cpu0 = cpu_seconds(arm.pid)
                results = [await sdk_request(clients[arm.name], arm, qs.next()) for _ in range(n)]
                arm.long_cpu += cpu_seconds(arm.pid) - cpu0
                for _ttft, times, err in results:
                    arm.long_requests += 1
                    if err is None:
                        arm.long_chunks += len(times)
                    else:
                        arm.errors.append(err)
    finally:
        for cl in clients.values():
            await cl.close()


# ------------------------------------------------------------------------------------------ phase 2


async def settle(fake: FakeUpstream, pids: list[int], limit: float = 60.0) -> float:
    """Wait until no upstream stream is open and the servers are idle: a level must not inherit the
    backlog of the previous one (requests still queued in a proxy after their clients were cut off)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        meter = CpuMeter(*pids)
        await asyncio.sleep(1.0)
        busy = sum(meter.stop()["procs"].values())
        if fake.streams().get("open", 0) == 0 and busy < 0.08:
            break
    return time.perf_counter() - t0


async def run_level(arm: Arm, n: int, stagger: float, hold: float, qs: Questions, fake_pid: int) -> dict[str, Any]:
    """``n`` closed-loop streams; measured between the end of the stagger and the end of the hold."""
    meter = CpuMeter(arm.pid, fake_pid)
    results, t_measure, t_end = await closed_loop(arm.host, arm.port, arm.path, arm.headers, n, stagger, hold,
                                                  lambda: chat_body(qs.next()))
    cpu = meter.stop()
    lv = {"n": n, **_level_stats(results, t_measure, t_end)}
    lv.update({
        "server_cores": cpu["procs"][arm.pid] / cpu["wall"], "client_cores": cpu["client_cores"],
        "foreign_cores": cpu["foreign_cores"],
        "rss": peak_rss_mib(arm.pid),
    })
    return lv


def _level_stats(results: list[StreamResult], t_measure: float, t_end: float) -> dict[str, Any]:
    """TTFT, gaps and errors of one level's streams, counted inside the measure window."""
    gaps: list[float] = []
    ttfts: list[float] = []
    errors: Counter[str] = Counter()
    completed = 0
    stuck = 0
    for r in results:
        if r.error is not None or (r.status not in (0, 200)):
            if r.end is not None and r.end >= t_measure:
                errors[(r.error or f"HTTP {r.status}")[:80]] += 1
            continue
        # Streams still open at t_end were cancelled by us: what they received counts, they are no error.
        if r.start >= t_measure:
            if r.ttft is not None:
                ttfts.append(r.ttft)
            elif r.start < t_end - TTFT_LIMIT:
                stuck += 1  # started in the window, still no first token when the level ended
                ttfts.append(t_end - r.start)  # a lower bound of its TTFT
        if r.done is not None:
            completed += 1
        times = r.content_times
        gaps.extend(b - a for a, b in zip(times, times[1:]) if a >= t_measure)
    p99 = pct(gaps, 99)
    held = bool(gaps) and p99 <= GAP_LIMIT and not errors and pct(ttfts, 99) <= TTFT_LIMIT
    return {
        "completed": completed, "stuck": stuck, "streams": len(results), "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(3)),
        "ttft_p50": pct(ttfts, 50), "ttft_p99": pct(ttfts, 99),
        "gap_p50": pct(gaps, 50), "gap_p99": p99, "chunks": len(gaps), "held": held,
    }


async def phase_ramp(arms: list[Arm], levels: list[int], stagger: float, hold: float, budget: float,
                     qs: Questions, fake: FakeUpstream, settle_limit: float) -> None:
    """Levels in increasing order, the arms interleaved at each level (noise hits them alike). An arm
    stops at its first level that fails twice in a row (one retry absorbs a burst of load from outside), or
    once it has used ``budget`` seconds of ramp (its own levels and settling; another arm's retries do not
    count against it)."""
    spent = {id(arm): 0.0 for arm in arms}  # seconds of ramp each arm used: the budget is per arm
    active = list(arms)
    for n in levels:
        for arm in list(active):
            if spent[id(arm)] > budget:
                arm.ramp_note = f"ramp time budget ({budget:.0f} s) used up before {n} streams"
                active.remove(arm)
                continue
            started = time.perf_counter()
            for attempt in (1, 2):
                lv = await run_level(arm, n, stagger, hold, qs, fake.proc.pid)
                lv["attempt"] = attempt
                arm.levels.append(lv)
                print(f"  {arm.name:9s} {n:5d} streams: gap p50 {fmt(lv['gap_p50'] * 1e3)} ms p99 "
                      f"{fmt(lv['gap_p99'] * 1e3)} ms, ttft p50 {fmt(lv['ttft_p50'] * 1e3)} ms p99 "
                      f"{fmt(lv['ttft_p99'] * 1e3)} ms, errors {lv['errors']}, server {lv['server_cores']:.2f} "
                      f"cores, client {lv['client_cores']:.2f}, other processes {lv['foreign_cores']:.2f} -> "
                      f"{'held' if lv['held'] else 'NOT held'}", flush=True)
                await settle(fake, sorted({a.pid for a in arms}), settle_limit)
                if lv["held"]:
                    break
            spent[id(arm)] += time.perf_counter() - started
            if not lv["held"]:
                active.remove(arm)
        if not active:
            break


# ------------------------------------------------------------------------------------------ profile


def find_py_spy(explicit: str | None) -> str | None:
    for c in (explicit, os.environ.get("PY_SPY"), shutil.which("py-spy"), "/tmp/memchat-bench-litellm/bin/py-spy"):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


# Where a py-spy sample goes: the first bucket (in this order) with a frame anywhere in the stack.
BUCKETS = [
    ("conversation lookup (turn-log queries)", ("resolve_chat", "first_turns_with_user", "find_by_transcript",
                                                "chat_turns")),
    ("turn record (journal write)", ("TurnLog.run_writer", "TurnLog._write", "TurnLog.append", "TurnLog._journal",
                                     "Conversations.record")),
    ("retrieval (query embedding + memory search)", ("MemoryRetriever.retrieve", "MemoryStore.search",
                                                     "LocalEmbedder", "MiniLMModel")),
    ("opening the upstream request (httpx2 send)", ("open_stream", "AsyncCompletions.create")),
    ("reading upstream chunks (httpx2 + relay)", ("ChatStream._run", "iter_bytes", "Relay._handle_data", "Relay.feed")),
    ("writing chunks to the client (SSE response, uvicorn)", ("_send_with_timeout", "RequestResponseCycle.send",
                                                              "Stream.send_body", "stream_response",
                                                              "SSEStream")),
    ("Litestar request handling", ("litestar/",)),
    ("uvicorn HTTP protocol (httptools)", ("uvicorn/protocols", "httptools")),
]


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _frame_key(frame: str) -> str:
    name, _, loc = frame.partition(" (")
    return f"{name} ({_short(loc.rsplit(':', 1)[0].rstrip(')'))})"


def summarise_profile(raw: Path) -> dict[str, Any]:
    """py-spy ``--gil --format raw`` (collapsed stacks of the GIL holder) -> buckets and top frames."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        self_time[_frame_key(frames[-1])] += n
        for key in {_frame_key(f) for f in frames
                    if ("(app/" in f or "/app/" in f) and "app/cli.py" not in f and "app/__main__.py" not in f}:
            inclusive[key] += n
        label = "event loop (uvloop callbacks, native) / other"
        for bname, needles in BUCKETS:
            if any(nd in fr for fr in frames for nd in needles):
                label = bname
                break
        buckets[label] += n
    return {"total": total, "self": self_time.most_common(12), "inclusive": inclusive.most_common(14),
            "buckets": buckets.most_common()}


async def profile_memchat(py_spy: str | None, mc: Memchat, arm: Arm, seconds: float, qs: Questions,
                          out_dir: Path) -> dict[str, Any]:
    """CPU per thread name (from /proc) under a zero-delay load of 4 concurrent clients, and -- with
    py-spy -- where the Python side (the GIL holder) spends it."""
    raw = out_dir / "memchat-profile.txt"
    proc = None
    if py_spy is not None:
        proc = subprocess.Popen([py_spy, "record", "--pid", str(mc.pid), "--duration", str(int(seconds)),
                                 "--rate", "200", "--gil", "--format", "raw", "-o", str(raw), "--subprocesses"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        await asyncio.sleep(1.0)
    deadline = time.perf_counter() + seconds - 1.5
    counts = {"requests": 0, "chunks": 0}

    async def loader() -> None:
        client = RawClient(arm.host, arm.port, arm.headers)
        try:
            while time.perf_counter() < deadline:
                r = await client.stream(arm.path, chat_body(qs.next()))
                counts["requests"] += 1
                counts["chunks"] += len(r.content_times)
        finally:
            await client.close()

    before = thread_cpu(mc.pid)
    await asyncio.gather(*(loader() for _ in range(4)))
    threads = thread_cpu_delta(before, thread_cpu(mc.pid))
    summary: dict[str, Any] = {"threads": threads, "arm": arm.name, "py_spy": py_spy is not None, **counts}
    if proc is not None:
        try:
            out, _ = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0 or not raw.exists():
            print(f"py-spy failed ({proc.returncode}): {out.decode(errors='replace')[-400:]}")
            summary["py_spy"] = False
        else:
            keep = Path(tempfile.gettempdir()) / "memchat-bench-profile.txt"
            shutil.copyfile(raw, keep)
            print(f"  raw py-spy stacks (GIL holder) kept at {keep}")
            summary.update(summarise_profile(raw))
    return summary


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run (~2 min): fewer requests, levels, memories")
    p.add_argument("--requests", type=int, default=None, help="zero-delay requests per arm (150)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up requests per arm (20)")
    p.add_argument("--block", type=int, default=10, help="requests per arm per interleaved block")
    p.add_argument("--tokens", type=int, default=50, help="tokens per reply in the zero-delay phase")
    p.add_argument("--long-tokens", type=int, default=500, help="tokens per reply in phase 1b")
    p.add_argument("--long-requests", type=int, default=None, help="phase 1b requests per arm (12; 0 = skip)")
    p.add_argument("--memories", type=int, default=None, help="memories in the '10k' namespace (10000)")
    p.add_argument("--embedder", default="local", choices=["local", "none"])
    p.add_argument("--levels", default=None, help="concurrency levels, comma separated")
    p.add_argument("--ramp-tokens", type=int, default=None, help="tokens per reply in the ramp (150)")
    p.add_argument("--stagger", type=float, default=None, help="seconds to start a level's streams")
    p.add_argument("--hold", type=float, default=None, help="seconds each level is measured")
    p.add_argument("--ramp-budget", type=float, default=None, help="seconds of ramp per arm at most")
    p.add_argument("--ramp-arms", default="direct,floor,mc-empty,litellm", help="arms to ramp (comma separated)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers of memchat (CPU is summed over them)")
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--no-floor", action="store_true", help="skip the bare passthrough arm (scripts/passthrough_floor.py)")
    p.add_argument("--litellm-bin", default=None, help="path of the litellm console script")
    p.add_argument("--install-litellm", action="store_true",
                   help=f"pip install litellm[proxy]==1.80.0 into /tmp/memchat-bench-litellm when missing")
    p.add_argument("--profile", action="store_true", help="py-spy profile of memchat under zero-delay load")
    p.add_argument("--py-spy", default=None, help="path of py-spy")
    p.add_argument("--profile-seconds", type=float, default=20)
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/memchat-bench-cache"))
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--results", type=Path, default=None,
                   help="results JSON for scripts/plot_benchmarks.py (default: docs/img/bench_proxy.json unless --no-docs)")
    p.add_argument("--app-ref", default=None, metavar="REF",
                   help="benchmark memchat as committed at this git ref (default: the work tree as it is)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--responses", action="store_true",
                   help="only phases 1 and 1b: the Responses API against chat completions, memchat and direct")
    a = p.parse_args(argv)
    q = a.quick
    a.requests = a.requests or (30 if q else 150)
    a.warmup = a.warmup if a.warmup is not None else (5 if q else 20)
    a.long_requests = a.long_requests if a.long_requests is not None else (6 if q else 12)
    a.memories = a.memories or (1000 if q else 10000)
    a.levels = [int(x) for x in (a.levels or ("25,50,200,500" if q else "10,25,50,100,200,300,500,750,1000")).split(",")]
    a.ramp_tokens = a.ramp_tokens or (60 if q else 150)
    a.stagger = a.stagger if a.stagger is not None else (0.05 + a.ramp_tokens / 30)
    a.hold = a.hold or (3.0 if q else 8.0)
    a.ramp_budget = a.ramp_budget or (30.0 if q else 300.0)
    return a


@dataclass
class Servers:
    """The processes of one run (None = not started), stopped together whatever happened."""

    fake: FakeUpstream | None = None
    mc: Memchat | None = None
    ll: LiteLLM | None = None
    floor: FloorProxy | None = None

    def stop(self) -> None:
        stop_all(self.floor, self.ll, self.mc, self.fake)


class Progress:
    """``[   12 s] ...`` lines: seconds since the run started."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():5.0f} s] {text}", flush=True)


def start_litellm(args: argparse.Namespace, info: dict[str, Any],
                  upstream_base: str) -> tuple[LiteLLM | None, str | None]:
    """The LiteLLM arm and its version when it can be found (or installed) and started;
    ``info["litellm_note"]`` says how it went."""
    binary = find_litellm(args.litellm_bin)
    if binary is None and args.install_litellm:
        print("installing litellm[proxy]==1.80.0 into /tmp/memchat-bench-litellm ...", flush=True)
        binary, err = install_litellm()
        if binary is None:
            info["litellm_note"] = f"LiteLLM could not be installed here ({err[:200]}); its arm is missing."
    if binary is None and "litellm_note" not in info:
        info["litellm_note"] = ("LiteLLM was not found (pass --litellm-bin or --install-litellm); "
                                "its arm is missing.")
    ll = version = None
    if binary is not None:
        try:
            ll = LiteLLM(binary, upstream_base).start()
            version = ll.version()
            info["litellm_note"] = (f"LiteLLM {version} (`litellm[proxy]`, separate venv, "
                                    "1 worker, `LITELLM_LOCAL_MODEL_COST_MAP=True`, no database).")
        except Exception as exc:  # noqa: BLE001
            info["litellm_note"] = f"LiteLLM could not be started here: {str(exc)[:300]}"
            ll = None
    if ll is None:
        print(f"NOTE: {info['litellm_note']}", flush=True)
    return ll, version


def start_servers(args: argparse.Namespace, info: dict[str, Any], tmp: Path, servers: Servers,
                  progress: Progress) -> None:
    data_dir = tmp / "data"
    data_dir.mkdir()
    progress.say(f"preparing {args.memories} memories (embedder {args.embedder}) ...")
    info["store_note"] = f"{args.memories} memories in `{NS_10K}` " + prepare_store(
        data_dir, args.embedder, args.memories, None if args.no_cache else args.cache_dir)

    fake = servers.fake = FakeUpstream("--tokens", str(args.tokens), "--no-record").start()
    servers.mc = Memchat(data_dir, env=memchat_env(fake.base_url, args.embedder), workers=args.workers).start()
    litellm_version = None
    if not args.no_litellm:
        servers.ll, litellm_version = start_litellm(args, info, fake.base_url)
    info["versions"] = versions(litellm_version)
    servers.floor = None if args.no_floor else FloorProxy(fake.base_url).start()


def run_phase1(args: argparse.Namespace, info: dict[str, Any], arms: list[Arm], fake: FakeUpstream,
               qs: Questions, runner: Any, progress: Progress) -> list[str]:
    """Zero-delay phase; returns the arms that failed more than 10 % of their requests."""
    progress.say(f"phase 1: zero delay, {args.requests} requests x {len(arms)} arms")
    fake.set_config(tokens=args.tokens, **ZERO)
    meter = CpuMeter(*{a.pid for a in arms})
    runner(phase_zero_delay(arms, args.requests, args.warmup, args.block, qs))
    info["p1_foreign"] = meter.stop()["foreign_cores"]
    for a in arms:
        print(f"  {a.name:9s} ttft p50 {as_ms(pct(a.ttft, 50))} ms p99 {as_ms(pct(a.ttft, 99))} ms, "
              f"{a.cpu / max(1, a.chunks) * 1e6:.0f} µs CPU/chunk, errors {len(a.errors)}"
              + (f" (first: {a.errors[0]})" if a.errors else ""), flush=True)
    return [a.name for a in arms if len(a.errors) > a.requests // 10]


def run_phase1b(args: argparse.Namespace, arms: list[Arm], fake: FakeUpstream, qs: Questions, runner: Any,
                progress: Progress) -> None:
    progress.say(f"phase 1b: zero delay, {args.long_tokens}-token replies, {args.long_requests} requests per arm")
    fake.set_config(tokens=args.long_tokens, **ZERO)
    long_arms = [a for a in arms if a.name != "mc-10k"]
    runner(phase_long(long_arms, args.long_requests, max(1, args.block // 2), qs))
    for a in long_arms:
        print(f"  {a.name:9s} marginal {fmt(marginal_us(a), 0)} µs CPU per extra chunk", flush=True)


def run_profile(args: argparse.Namespace, info: dict[str, Any], arms: list[Arm], servers: Servers, qs: Questions,
                runner: Any, tmp: Path, progress: Progress) -> None:
    py_spy = find_py_spy(args.py_spy)
    if py_spy is None:
        print("NOTE: py-spy not found (pip install py-spy into any venv, pass --py-spy): "
              "profiling CPU per thread only", flush=True)
    progress.say(f"profiling memchat ({args.profile_seconds:.0f} s)")
    mc_arm = next(a for a in arms if a.name == "mc-empty")
    assert servers.fake is not None and servers.mc is not None
    servers.fake.set_config(tokens=args.tokens, **ZERO)
    info["profile"] = runner(profile_memchat(py_spy, servers.mc, mc_arm, args.profile_seconds, qs, tmp))


def run_phase2(args: argparse.Namespace, arms: list[Arm], fake: FakeUpstream, qs: Questions, runner: Any,
               progress: Progress) -> None:
    progress.say("phase 2: realistic cadence, concurrency ramp")
    fake.set_config(tokens=args.ramp_tokens, **REALISTIC)
    wanted = set(args.ramp_arms.split(","))
    runner(phase_ramp([a for a in arms if a.name in wanted], args.levels, args.stagger, args.hold,
                      args.ramp_budget, qs, fake, 15.0 if args.quick else 45.0))


def finish(args: argparse.Namespace, info: dict[str, Any], arms: list[Arm], servers: Servers,
           progress: Progress) -> None:
    """Peak memory, the report on stdout and (unless ``--no-docs``) in docs/benchmarks.md."""
    assert servers.mc is not None and servers.fake is not None
    rss = [f"memchat {peak_rss_mib(servers.mc.pid):.0f} MiB",
           f"fake upstream {peak_rss_mib(servers.fake.proc.pid):.0f} MiB"]
    if servers.ll is not None:
        rss.append(f"LiteLLM {peak_rss_mib(servers.ll.pid):.0f} MiB")
    info["rss"] = ", ".join(rss)
    info["load_end"] = load_now()
    text, res = report(arms, args, info)
    print("\n" + text)
    results = args.results or (None if args.no_docs else Path("docs/img/bench_proxy.json"))
    if results is not None:  # the figures for scripts/plot_benchmarks.py
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(results_json(arms, res, info), indent=1) + "\n")
        if importlib.util.find_spec("matplotlib") is None:  # the optional `bench` dependency
            print(f"wrote {results}; `pip install -e '.[bench]'` and run scripts/plot_benchmarks.py for the plots")
        else:
            from plot_benchmarks import plot_cpu, plot_ramp

            data = json.loads(results.read_text())
            plot_ramp(data, results.parent / "proxy_ramp.png")
            plot_cpu(data, results.parent / "proxy_cpu.png")
            print(f"wrote {results}, proxy_ramp.png and proxy_cpu.png next to it")
    if not args.no_docs:
        write_section("Proxy overhead", text)
        print(f"wrote section 'Proxy overhead' of {Path('docs/benchmarks.md')}")
    print(f"total {progress.elapsed():.0f} s")


def event_loop_runner() -> Any:
    try:
        import uvloop
        return uvloop.run
    except ImportError:  # pragma: no cover
        return asyncio.run


def run_responses(args: argparse.Namespace, info: dict[str, Any], tmp: Path, servers: Servers,
                  progress: Progress) -> int:
    """``--responses``: phases 1 and 1b over chat completions and the Responses API, direct and through
    memchat (empty namespace), in one run; a table on stdout."""
    fake = servers.fake = FakeUpstream("--tokens", str(args.tokens), "--no-record").start()
    (tmp / "data").mkdir()
    mc = servers.mc = Memchat(tmp / "data", env=memchat_env(fake.base_url, args.embedder),
                              workers=args.workers).start()
    arms = make_arms(fake, mc, None, with_10k=False)
    chat_direct, chat_mc = arms
    arms += [Arm("direct-resp", "direct to the fake, Responses API", fake.base_url, "127.0.0.1", fake.port,
                 "/v1/responses", {}, "x", None, fake.proc.pid, api="responses"),
             Arm("mc-resp", "memchat, empty namespace, Responses API", mc.openai_base_url, "127.0.0.1", mc.port,
                 f"/v1/memory/responses?namespace={NS_EMPTY}", chat_mc.headers, API_KEY, {"namespace": NS_EMPTY},
                 mc.pid, api="responses")]
    qs = Questions(args.seed)
    runner = event_loop_runner()
    broken = run_phase1(args, {}, arms, fake, qs, runner, progress)
    if broken:
        print(f"ERROR: arms {broken} failed more than 10 % of their requests\n{mc.log_text()[-3000:]}",
              file=sys.stderr)
        return 1
    if args.long_requests > 0:
        run_phase1b(args, arms, fake, qs, runner, progress)
    direct = {"chat": chat_direct, "responses": arms[2]}
    rows = [[a.name, f"{as_ms(pct(a.ttft, 50))} ms (+{as_ms(pct(a.ttft, 50) - pct(direct[a.api].ttft, 50))})",
             f"{as_ms(pct(a.ttft, 99))} ms", f"{a.cpu / max(1, a.chunks) * 1e6:.0f} µs",
             f"{fmt(marginal_us(a), 0)} µs" if args.long_requests > 0 else "-"] for a in arms]
    text = "\n".join([
        f"`{info['command']}` ({info['date']}, {info['machine']}). Zero-delay upstream, one request at a time, "
        f"{args.requests} requests per arm ({args.tokens}-token replies), {args.long_requests} with "
        f"{args.long_tokens} tokens for the marginal CPU of one chunk. A content chunk is a "
        "`chat.completion.chunk` with content or a `response.output_text.delta` event (a Responses stream also "
        "carries 9 lifecycle events per reply). CPU is the serving process's (the fake for `direct*`).", "",
        md_table(["arm", "TTFT p50 (+ vs direct, same API)", "TTFT p99", "CPU per content chunk",
                  "marginal CPU per extra chunk"], rows)])
    print("\n" + text)
    if not args.no_docs:
        write_section("Responses API overhead", text)
        print(f"wrote section 'Responses API overhead' of {Path('docs/benchmarks.md')}")
    print(f"total {progress.elapsed():.0f} s")
    return 0


def run(args: argparse.Namespace, info: dict[str, Any], tmp: Path, servers: Servers, progress: Progress) -> int:
    if args.responses:
        return run_responses(args, info, tmp, servers, progress)
    start_servers(args, info, tmp, servers, progress)
    assert servers.fake is not None and servers.mc is not None
    fake, mc = servers.fake, servers.mc
    arms = make_arms(fake, mc, servers.ll, with_10k=True, floor=servers.floor)
    qs = Questions(args.seed)
    runner = event_loop_runner()
    broken = run_phase1(args, info, arms, fake, qs, runner, progress)
    if broken:
        print(f"ERROR: arms {broken} failed more than 10 % of their requests; nothing is written.\n"
              f"--- memchat log (tail) ---\n{mc.log_text()[-3000:]}", file=sys.stderr)
        return 1
    if args.long_requests > 0:
        run_phase1b(args, arms, fake, qs, runner, progress)
    if args.profile:
        run_profile(args, info, arms, servers, qs, runner, tmp, progress)
    run_phase2(args, arms, fake, qs, runner, progress)
    finish(args, info, arms, servers, progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = start_run("bench_proxy.py", argv)
    progress = Progress()
    info: dict[str, Any] = {"command": command.strip(), "date": date.today().isoformat(), "machine": machine_line(),
                            "source": use_app_ref(args.app_ref)}
    tmp = Path(tempfile.mkdtemp(prefix="memchat-bench-proxy-"))
    servers = Servers()
    try:
        return run(args, info, tmp, servers, progress)
    finally:
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        cleanup_app_exports()


if __name__ == "__main__":
    raise SystemExit(main())
