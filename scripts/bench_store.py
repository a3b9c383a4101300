#!/usr/bin/env python3
"""Request-path cost of memchat with its store on an S3 endpoint versus on local disk, in one run.

Loopback only. One fake upstream (``app.testkit.FakeUpstream``, zero delay, 50 tokens per reply) is the
model of every arm; each memchat arm is a real ``memchat serve`` process with one worker
(``bench_common.Memchat``, i.e. ``app.testkit.MemchatServer``):

    direct       client -> fake                                        (the TTFT baseline)
    local        client -> memchat, store under its data dir, default turn log (journal on) -> fake
    local-table  the same with MEMCHAT_TURNLOG_JOURNAL=false: each turn is appended to the LanceDB table
                 before [DONE] (separates "S3" from "no journal"; ``--no-local-table`` skips it)
    s3           MEMCHAT_STORE_URI=s3://<bucket>/<prefix> on moto's S3 server (``moto_server``, a process
                 on 127.0.0.1); journal off, as memchat defaults for a remote store: each answered turn
                 is written to the store before [DONE]

Every memchat arm gets ``--memories`` memories imported into namespace ``filled``
(``POST /api/v1/memory/import``) so retrieval runs; namespace ``empty`` has none. After a warm-up, the
arms run in interleaved blocks (order rotated each block). In a block each arm serves ``--convs``
two-turn conversations, one request at a time on a keep-alive connection (the test kit's raw-socket SSE
client), plus one request to the empty namespace per conversation:

* ``empty``     one user message, namespace ``empty``;
* ``filled``    one user message, namespace ``filled`` (retrieval injects memories): turn 1;
* ``follow-up`` turn 2 of that conversation: the history is sent and ``chat_id`` (from turn 1's
                ``x-memchat-chat-id``) is given, so resolving the conversation reads the turns table;

then ``--searches`` ``POST /api/v1/memory/search`` calls on ``filled`` (each question is new, so the
embedder's cache never answers). Measured per block: TTFT (request sent -> first content token) and the
tail (first token -> ``data: [DONE]``) as p50/p90 minus ``direct``'s in the same block; CPU seconds of
memchat's process tree (``CpuMeter``, /proc) per streamed content chunk over the chat requests (and of
moto's, for the s3 arm); search latency. Reported: the median over blocks of each per-block figure, the
spread of the per-block p50s (min..max) as the noise, and the ratio to ``local``.

    .venv/bin/python scripts/bench_store.py              # ~6 min, writes its section of docs/benchmarks.md
    .venv/bin/python scripts/bench_store.py --quick      # ~1 min
    .venv/bin/python scripts/bench_store.py --no-docs    # print only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from datetime import date
from pathlib import Path
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from app.testkit import ManagedProcess, free_port, http_ready, raw_request
from app.testkit.rawhttp import http_call
from bench_common import (
    MODEL,
    CpuMeter,
    FakeUpstream,
    Memchat,
    RawClient,
    StreamResult,
    fmt,
    load_now,
    machine_line,
    md_table,
    memchat_env,
    pct,
    start_run,
    stop_all,
    versions,
    write_section,
)

KEY, ORG = "bench-key", "bench"
AUTH = {"authorization": f"Bearer {KEY}"}
BUCKET = "memchat-bench"
SECTION = "Store on an object store vs local disk"
KINDS = ("empty", "filled", "follow-up")
WORDS = ("garden", "budget", "recipe", "holiday", "printer", "violin", "marathon", "tax", "kitten", "bicycle",
         "novel", "interview", "podcast", "roof", "camera", "visa", "wedding", "exam", "sourdough", "climbing")
S3_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.[01]')  # moto's access log
PEOPLE = ("Anna", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas")


class MotoS3:
    """moto's S3 server on a loopback port, through the kit's ``ManagedProcess``, with one bucket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ManagedProcess | None = None

    def start(self) -> MotoS3:
        exe = Path(sys.executable).with_name("moto_server")
        self.process = ManagedProcess([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], name="moto-s3",
                                      keep_log=False, startup_timeout=60)
        self.process.start(http_ready(self.url, any_status=True))
        http_call("PUT", f"{self.url}/{BUCKET}", parse=False)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def mark(self) -> int:
        """Where moto's log (one line per S3 request served) ends now."""
        assert self.process is not None and self.process.log_path is not None
        return self.process.log_path.stat().st_size

    def requests_since(self, offset: int) -> list[str]:
        """The S3 requests logged since ``offset``, as "METHOD table/part", e.g. "PUT turns/_versions"."""
        assert self.process is not None and self.process.log_path is not None
        with open(self.process.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out = []
        for method, target in S3_LINE.findall(text):
            path, _, query = target.partition("?")
            if "list-type" in query:
                method, path = "LIST", urllib.parse.unquote(query.partition("prefix=")[2].partition("&")[0])
            parts = path.strip("/").split("/")
            i = next((i for i, p in enumerate(parts) if p.endswith(".lance")), None)
            where = "?" if i is None else parts[i][:-6] + ("/" + parts[i + 1] if i + 2 < len(parts) else "")
            out.append(f"{method} {where}")
        return out

    def storage_options(self) -> str:
        return json.dumps({"aws_endpoint": self.url, "aws_access_key_id": "k", "aws_secret_access_key": "s",
                           "aws_region": "us-east-1", "allow_http": "true"})

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class Client(RawClient):
    """The kit's SSE client, keeping the last response's headers (for ``x-memchat-chat-id``) and calling
    ``at_first_token`` (when set) as the first content token arrives."""

    headers: dict[str, str] = {}
    at_first_token: Callable[[], None] | None = None

    def on_head(self, res: StreamResult, headers: dict[str, str]) -> None:
        self.headers = headers

    def on_data(self, res: StreamResult, payload: bytes, now: float) -> None:
        first = res.ttft is None
        super().on_data(res, payload, now)
        if first and res.ttft is not None and self.at_first_token is not None:
            self.at_first_token()


class Arm:
    def __init__(self, name: str, port: int, server: Memchat | None = None, moto: MotoS3 | None = None) -> None:
        self.name, self.port, self.server, self.moto = name, port, server, moto
        self.client = Client("127.0.0.1", port, {} if server is None else AUTH)
        # per block: {metric: [samples]}
        self.blocks: list[dict[str, list[float]]] = []
        self.cpu: list[float] = []        # memchat CPU ms per content chunk, per block
        self.moto_cpu: list[float] = []   # moto CPU ms per content chunk, per block
        self.errors: list[str] = []

    def path(self, namespace: str, chat_id: str | None = None) -> str:
        if self.server is None:
            return "/v1/chat/completions"
        return f"/v1/memory/chat/completions?namespace={namespace}" + (f"&chat_id={chat_id}" if chat_id else "")


class Questions:
    def __init__(self, seed: int) -> None:
        self.rng, self.n = random.Random(seed), 0

    def next(self) -> str:
        self.n += 1
        a, b = self.rng.sample(WORDS, 2)
        return f"What should {self.rng.choice(PEOPLE)} know about the {a} and the {b}? (#{self.n})"


def memories_jsonl(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    facts = ("likes", "is saving for", "worries about", "is learning about", "wrote a note on", "asked about")
    lines = [{"content": f"{rng.choice(PEOPLE)} {rng.choice(facts)} the {rng.choice(WORDS)} "
                         f"and the {rng.choice(WORDS)} (fact {i}).", "entities": []} for i in range(n)]
    return b"\n".join(msgspec.json.encode(x) for x in lines)


def fill(server: Memchat, n: int, seed: int) -> float:
    t0 = time.perf_counter()
    status, _h, out = raw_request(server.port, "POST", "/api/v1/memory/import?namespace=filled",
                                  [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json")],
                                  memories_jsonl(n, seed), timeout=600)
    if status != 200 or not isinstance(out, dict) or out.get("total") != n:
        raise RuntimeError(f"import into {server.url} failed: {status} {out!r}")
    return time.perf_counter() - t0


def chat(question: str, history: list[dict[str, str]] | None = None) -> tuple[bytes, list[dict[str, str]]]:
    messages = [*(history or []), {"role": "user", "content": question}]
    return msgspec.json.encode({"model": MODEL, "stream": True, "messages": messages}), messages


async def one(arm: Arm, path: str, body: bytes, out: dict[str, list[float]], kind: str) -> StreamResult | None:
    res = await arm.client.stream(path, body, timeout=60)
    if not res.ok or res.ttft is None:
        arm.errors.append(f"{kind}: {res.error or res.status}")
        return None
    out[kind].append(res.ttft)
    out[kind + " tail"].append(res.done - res.start - res.ttft)
    out["chunks"].append(len(res.content_times))
    return res


async def chat_block(arm: Arm, convs: int, qs: Questions) -> dict[str, list[float]]:
    """``convs`` x (empty; filled turn 1; filled turn 2 with history and chat_id), one at a time."""
    out: dict[str, list[float]] = {k: [] for k in ("chunks", *KINDS, *(k + " tail" for k in KINDS))}
    for _ in range(convs):
        await one(arm, arm.path("empty"), chat(qs.next())[0], out, "empty")
        body, messages = chat(qs.next())
        first = await one(arm, arm.path("filled"), body, out, "filled")
        if first is None:
            continue
        chat_id = arm.client.headers.get("x-memchat-chat-id")
        body, _ = chat(qs.next(), [*messages, {"role": "assistant", "content": "Echo: " + messages[-1]["content"]}])
        await one(arm, arm.path("filled", chat_id), body, out, "follow-up")
    return out


async def search_block(arm: Arm, n: int, qs: Questions) -> list[float]:
    lat = []
    for _ in range(n):
        body = msgspec.json.encode({"query": qs.next(), "limit": 8})
        res = await arm.client.stream("/api/v1/memory/search?namespace=filled", body, timeout=60)
        if res.status != 200 or res.error is not None or res.end is None:
            arm.errors.append(f"search: {res.error or res.status}")
            continue
        lat.append(res.end - res.start)
    return lat


async def run_blocks(arms: list[Arm], args: argparse.Namespace, qs: Questions,
                     started: float) -> tuple[list[float], dict[str, tuple[list[str], list[str]]]]:
    """Warm-up, ``args.blocks`` interleaved blocks, then the S3 requests per kind of request. Returns the
    other processes' load per block and those requests."""
    for arm in arms:  # warm-up: connections, embedder, vector cache, first reads and writes of each table
        await chat_block(arm, 3, qs)
        if arm.server is not None:
            await search_block(arm, 3, qs)
        arm.errors.clear()
    foreign: list[float] = []
    for b in range(args.blocks):
        order = arms[b % len(arms):] + arms[:b % len(arms)]
        meter_all = CpuMeter(*(a.server.pid for a in arms if a.server), *(a.moto.pid for a in arms if a.moto))
        for arm in order:
            pids = [p.pid for p in (arm.server, arm.moto) if p is not None]
            meter = CpuMeter(*pids)
            block = await chat_block(arm, args.convs, qs)
            cpu = meter.stop()
            chunks = sum(block["chunks"]) or 1
            if arm.server is not None:
                arm.cpu.append(cpu["procs"][arm.server.pid] / chunks * 1e3)
                block["search"] = await search_block(arm, args.searches, qs)
            if arm.moto is not None:
                arm.moto_cpu.append(cpu["procs"][arm.moto.pid] / chunks * 1e3)
            arm.blocks.append(block)
        foreign.append(meter_all.stop()["foreign_cores"])
        print(f"[{time.perf_counter() - started:4.0f} s] block {b + 1}/{args.blocks}: " + ", ".join(
            f"{a.name} filled TTFT p50 {statistics.median(a.blocks[-1]['filled'] or [float('nan')]) * 1e3:.1f} ms"
            for a in arms) + f"; other processes {foreign[-1]:.2f} cores", flush=True)
    s3 = next((a for a in arms if a.moto is not None), None)
    return foreign, (await count_s3_requests(s3, args.probe_reps, qs) if s3 is not None else {})


async def count_s3_requests(arm: Arm, reps: int, qs: Questions) -> dict[str, tuple[list[str], list[str]]]:
    """For each kind of request, the S3 requests it made (moto's log) before its first token and after it,
    of the rep whose total is the median of ``reps`` (background work -- the sweeper, maintenance -- can
    land in one rep). The search's all count as "before"."""
    assert arm.moto is not None
    moto, out = arm.moto, {}
    for kind in (*KINDS, "search"):
        samples: list[tuple[list[str], list[str]]] = []
        for _ in range(reps):
            marks: list[int] = []
            if kind == "search":
                marks.append(moto.mark())
                await search_block(arm, 1, qs)
            else:
                body, messages = chat(qs.next())
                path = arm.path(kind)
                if kind == "follow-up":  # its turn 1 first, not counted
                    path = arm.path("filled")
                    await arm.client.stream(path, body, timeout=60)
                    path = arm.path("filled", arm.client.headers.get("x-memchat-chat-id"))
                    body, _ = chat(qs.next(), [*messages, {"role": "assistant", "content": "Echo"}])
                marks.append(moto.mark())
                arm.client.at_first_token = lambda: marks.append(moto.mark())
                await arm.client.stream(path, body, timeout=60)
                arm.client.at_first_token = None
            await asyncio.sleep(0.3)  # moto logs a request after answering it
            before = moto.requests_since(marks[0])
            after = moto.requests_since(marks[1]) if len(marks) > 1 else []
            samples.append((before[:len(before) - len(after)], after))
        samples.sort(key=lambda s: len(s[0]) + len(s[1]))
        out[kind] = samples[len(samples) // 2]
    return out


# ------------------------------------------------------------------------------------------ report


def med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def per_block(arm: Arm, direct: Arm | None, metric: str, q: float) -> list[float]:
    """Per block: the arm's ``q`` percentile of ``metric`` (ms), minus direct's of the same block."""
    out = []
    for i, block in enumerate(arm.blocks):
        v = pct(block.get(metric, []), q) * 1e3
        if direct is not None:
            v -= pct(direct.blocks[i].get(metric, []), q) * 1e3
        out.append(v)
    return out


def summarize(arms: list[Arm]) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{arm: {row: (median p50, median p90, spread of p50 as max-min)}} in ms."""
    direct = arms[0]
    rows: dict[str, dict[str, tuple[float, float, float]]] = {}
    for arm in arms[1:]:
        r: dict[str, tuple[float, float, float]] = {}
        for kind in KINDS:
            for metric, label in ((kind, f"TTFT added, {kind}"), (kind + " tail", f"first token → [DONE] added, {kind}")):
                p50, p90 = per_block(arm, direct, metric, 50), per_block(arm, direct, metric, 90)
                r[label] = (med(p50), med(p90), max(p50) - min(p50))
        s50, s90 = per_block(arm, None, "search", 50), per_block(arm, None, "search", 90)
        r["search latency (not minus direct)"] = (med(s50), med(s90), max(s50) - min(s50))
        r["CPU ms per content chunk (memchat)"] = (med(arm.cpu), float("nan"), max(arm.cpu) - min(arm.cpu))
        if arm.moto_cpu:
            r["CPU ms per content chunk (moto S3 server)"] = (med(arm.moto_cpu), float("nan"),
                                                              max(arm.moto_cpu) - min(arm.moto_cpu))
        rows[arm.name] = r
    return rows


def table(rows: dict[str, dict[str, tuple[float, float, float]]]) -> str:
    names = list(rows)
    labels = list(dict.fromkeys(label for r in rows.values() for label in r))
    header = ["ms (median of blocks)"] + [f"{n} p50 / p90 (spread)" for n in names]
    header += [f"{n} ÷ local (p50)" for n in names if n != "local"]
    out = []
    for label in labels:
        row: list[str] = [label]
        for n in names:
            v = rows[n].get(label)
            row.append("—" if v is None else f"{fmt(v[0], 2)}" + (f" / {fmt(v[1], 2)}" if v[1] == v[1] else "")
                       + f" ({fmt(v[2], 2)})")
        base = rows.get("local", {}).get(label)
        for n in names:
            if n != "local":
                v = rows[n].get(label)
                ok = v is not None and base is not None and abs(base[0]) > 0.05
                row.append(f"{v[0] / base[0]:.1f}×" if ok else "—")  # type: ignore[index]
        out.append(row)
    return md_table(header, out)


def report(args: argparse.Namespace, command: str, machine: str, rows: dict[str, Any], arms: list[Arm],
           foreign: list[float], fills: dict[str, float], s3_requests: dict[str, tuple[list[str], list[str]]],
           wall: float) -> str:
    vers = ", ".join(f"{k} {v}" for k, v in versions().items() if k != "litellm")
    n = {a.name: {k: sum(len(b.get(k, [])) for b in a.blocks) for k in (*KINDS, "search")} for a in arms}
    errors = {a.name: len(a.errors) for a in arms}
    direct = {k: med([pct(b[k], 50) * 1e3 for b in arms[0].blocks]) for k in KINDS}
    direct_tail = {k: med([pct(b[k + " tail"], 50) * 1e3 for b in arms[0].blocks]) for k in KINDS}
    return f"""Measured {date.today().isoformat()} with

```sh
{command}
```

Versions: {vers}; moto (S3 server) {_version("moto")}. Machine: {machine}. Run: {wall:.0f} s.
Shared machine: other processes used {med(foreign):.2f} cores (median of blocks; min {min(foreign):.2f},
max {max(foreign):.2f}) of the {_cores()} while the blocks ran.

Arms, each a `memchat serve` with one worker started by the test kit, all against one fake upstream (zero delay,
50 tokens per reply): `local` (store under the data dir, default turn log: journal on),
{"`local-table` (local store, `MEMCHAT_TURNLOG_JOURNAL=false`), " if args.local_table else ""}`s3`
(`MEMCHAT_STORE_URI=s3://{BUCKET}/memchat` on moto's S3 server, a process on 127.0.0.1: journal off, so each
answered turn is in the store before `[DONE]`), and `direct` (client → fake). Namespace `filled` got
{args.memories} memories through `POST /api/v1/memory/import` (import took {", ".join(f"{k} {v:.1f} s" for k, v in fills.items())});
`empty` has none. {args.blocks} interleaved blocks (order rotated) after a warm-up; per block and arm
{args.convs} × (request to `empty`; turn 1 in `filled`; turn 2 with the history and `chat_id`, so the
conversation lookup reads the turns table), one at a time on a keep-alive connection, then {args.searches}
`POST /api/v1/memory/search` on `filled`. Requests measured per arm: {n}; failed: {errors}.
Each figure is computed per block (p50, p90 of that block's requests; TTFT and tail minus `direct`'s in the
same block) and the table gives the median over blocks, with the spread (max − min) of the per-block p50 in
parentheses as the noise. `direct` itself: TTFT p50 {", ".join(f"{k} {v:.2f} ms" for k, v in direct.items())};
first token → `[DONE]` p50 {", ".join(f"{k} {v:.2f} ms" for k, v in direct_tail.items())}. CPU is the
memchat process tree's user+system time over the block's chat requests (search excluded) per streamed
content chunk (per-request work amortised over ~50-chunk replies); for `s3` moto's own CPU is listed apart
(it stands in for a remote service and would not be on memchat's host).

{table(rows)}

S3 requests the `s3` arm made per request (moto's access log; the rep with the median count of
{args.probe_reps}, after the blocks):

{s3_table(s3_requests)}
"""


def s3_table(found: dict[str, tuple[list[str], list[str]]]) -> str:
    def show(reqs: list[str]) -> str:
        return ", ".join(f"{n}× {r}" if n > 1 else r for r, n in Counter(reqs).most_common()) or "none"
    return md_table(["request", "before the first token", "first token → [DONE]"],
                    [[k, f"{len(b)}: {show(b)}", f"{len(a)}: {show(a)}" if k != "search" else "—"]
                     for k, (b, a) in found.items()])


def _version(pkg: str) -> str:
    import importlib.metadata
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _cores() -> str:
    return f"{os.cpu_count()} cores"


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run (~1 min)")
    p.add_argument("--memories", type=int, default=1000, help="memories imported into namespace 'filled'")
    p.add_argument("--blocks", type=int, default=None, help="interleaved blocks (default 20, quick 3)")
    p.add_argument("--convs", type=int, default=None, help="conversations per arm and block (default 10, quick 4)")
    p.add_argument("--searches", type=int, default=None, help="searches per arm and block (default 15, quick 5)")
    p.add_argument("--probe-reps", type=int, default=5, help="reps per kind when counting S3 requests")
    p.add_argument("--no-local-table", dest="local_table", action="store_false",
                   help="skip the local-disk arm with MEMCHAT_TURNLOG_JOURNAL=false")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    a.blocks = a.blocks or (3 if a.quick else 20)
    a.convs = a.convs or (4 if a.quick else 10)
    a.searches = a.searches or (5 if a.quick else 15)
    if a.quick:
        a.memories = min(a.memories, 300)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = start_run("bench_store.py", argv)
    started = time.perf_counter()
    machine = machine_line()
    tmp = Path(tempfile.mkdtemp(prefix="memchat-bench-store-"))
    fake = moto = None
    servers: list[Memchat] = []
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        fake = FakeUpstream("--tokens", "50", "--no-record").start()
        moto = MotoS3().start()
        base = memchat_env(fake.base_url, "local", MEMCHAT_API_KEYS=f"{KEY}={ORG}")
        specs = {"local": {}, "local-table": {"MEMCHAT_TURNLOG_JOURNAL": "false"},
                 "s3": {"MEMCHAT_STORE_URI": f"s3://{BUCKET}/memchat", "MEMCHAT_STORAGE_OPTIONS": moto.storage_options()}}
        if not args.local_table:
            del specs["local-table"]
        arms = [Arm("direct", fake.port)]
        fills: dict[str, float] = {}
        for name, extra in specs.items():
            server = Memchat(tmp / name, env={**base, **extra})
            servers.append(server)
            server.start()
            fills[name] = fill(server, args.memories, args.seed)
            arms.append(Arm(name, server.port, server, moto if name == "s3" else None))
            print(f"[{time.perf_counter() - started:4.0f} s] {name}: memchat up, {args.memories} memories "
                  f"imported in {fills[name]:.1f} s", flush=True)
        foreign, s3_requests = runner(run_blocks(arms, args, Questions(args.seed), started))
        machine += f"; at the end {load_now()}"
        for arm in arms:
            if arm.errors:
                print(f"{arm.name}: {len(arm.errors)} failed requests, e.g. {arm.errors[:3]}", file=sys.stderr)
        if any(len(a.errors) > 5 for a in arms):
            for s in servers:
                print(f"--- {s.data_dir.name} log (tail) ---\n{s.log_text()[-2000:]}", file=sys.stderr)
            print("ERROR: too many failed requests; nothing is written.", file=sys.stderr)
            return 1
        rows = summarize(arms)
        text = report(args, command, machine, rows, arms, foreign, fills, s3_requests, time.perf_counter() - started)
        print("\n" + text)
        if not args.no_docs:
            write_section(SECTION, text)
            print(f"wrote section '{SECTION}' of docs/benchmarks.md")
        print(f"total {time.perf_counter() - started:.0f} s")
        return 0
    finally:
        stop_all(*servers, moto, fake)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
