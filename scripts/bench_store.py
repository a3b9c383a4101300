#!/usr/bin/env python3
"""Request-path cost of memchat with its store on an S3 endpoint versus on local disk, in one run.

Loopback only; one fake upstream (``FakeUpstream``, zero delay, 50 tokens per reply) is every arm's model, and
each memchat arm is a ``memchat serve`` with one worker (the test kit's ``MemchatServer``):

    direct       client -> fake: the baseline, subtracted from every latency (same block)
    local        store under the data dir, default turn log (local journal, flushed in batches)
    local-table  local store, MEMCHAT_TURNLOG_JOURNAL=false: separates "S3" from "no journal" (optional)
    s3           MEMCHAT_STORE_URI=s3://memchat-bench/memchat on moto's S3 server (``moto_server`` on
                 127.0.0.1); no journal (the default for a remote store): each turn is stored before [DONE]

Namespace ``filled`` gets ``--memories`` memories (``POST /api/v1/memory/import``), ``empty`` none. After a
warm-up, ``--blocks`` interleaved blocks (arm order rotated); per block each arm serves ``--convs`` x
(``empty``: one message to ``empty``; ``filled``: turn 1 in ``filled``, retrieval runs; ``follow-up``: turn 2
with the history and turn 1's ``chat_id``, so the conversation lookup reads the turns table), one at a time
on a keep-alive connection (the kit's SSE client), every question new; then ``--searches`` searches.

Per block: TTFT (sent -> first content token) and tail (first token -> ``[DONE]``: the turn write) at p50 and
p90 minus direct's; CPU of memchat's process tree (``CpuMeter``) per streamed content chunk, moto's apart;
search latency; for s3, the turns table's manifests and moto's time to list them. Reported: medians over
blocks, the spread of per-block p50s (the noise), ratios to ``local``; and from moto's access log the S3
requests each kind of request makes before and after its first token.

    .venv/bin/python scripts/bench_store.py              # ~3-6 min, writes its section of docs/benchmarks.md
    .venv/bin/python scripts/bench_store.py --quick      # ~1 min
    .venv/bin/python scripts/bench_store.py --no-docs    # print only
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
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
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path

import msgspec
import uvloop

from app.testkit import ManagedProcess, free_port, http_ready, raw_request
from app.testkit.rawhttp import http_call
from bench_common import (
    MODEL, CpuMeter, FakeUpstream, Memchat, RawClient, StreamResult, fmt, load_now, machine_line, md_table,
    memchat_env, pct, start_run, stop_all, use_app_ref, versions, write_section,
)

KEY, ORG, BUCKET = "bench-key", "bench", "memchat-bench"
SECTION = "Store on an object store vs local disk"
KINDS = ("empty", "filled", "follow-up")
WORDS = ("garden", "budget", "recipe", "holiday", "printer", "violin", "marathon", "tax", "kitten", "bicycle",
         "novel", "interview", "podcast", "roof", "camera", "visa", "wedding", "exam", "sourdough", "climbing")
PEOPLE = ("Anna", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas")
S3_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*(GET|PUT|HEAD|POST|DELETE) (\S+) HTTP/1\.[01]')  # moto's access log
Probe = tuple[list[str], list[str]]  # S3 requests of one request: before its first token, after it


class MotoS3:
    """moto's S3 server on a loopback port (the kit's ``ManagedProcess``) with one bucket; its access log
    (one line per S3 request served) tells which requests memchat made."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ManagedProcess([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                       "-p", str(self.port)], name="moto-s3", keep_log=False, startup_timeout=60)

    def start(self) -> MotoS3:
        self.process.start(http_ready(self.url, any_status=True))
        http_call("PUT", f"{self.url}/{BUCKET}", parse=False)
        return self

    def storage_options(self) -> str:
        return json.dumps({"aws_endpoint": self.url, "aws_access_key_id": "k", "aws_secret_access_key": "s",
                           "aws_region": "us-east-1", "allow_http": "true"})

    def mark(self) -> int:
        return Path(str(self.process.log_path)).stat().st_size

    def requests_since(self, offset: int) -> list[str]:
        """S3 requests logged since ``offset`` as "METHOD table/part": "PUT turns/data", "LIST turns/_versions"."""
        with open(str(self.process.log_path), "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        out = []
        for method, target in S3_LINE.findall(text):
            path, _, query = target.partition("?")
            if "list-type" in query:
                method, path = "LIST", urllib.parse.unquote(query.partition("prefix=")[2].partition("&")[0]) + "/"
            parts = path.strip("/").split("/") if method == "LIST" else path.split("/")[:-1]
            i = next((i for i, p in enumerate(parts) if p.endswith(".lance")), None)
            out.append(f"{method} " + ("?" if i is None else "/".join([parts[i][:-6], *parts[i + 1:i + 2]])))
        return out

    def list_versions(self, table: str) -> tuple[int, float]:
        """Manifests of ``table`` on the first page of its ``_versions/`` listing (the request Lance makes
        to find the latest version; at most 1000), and the seconds moto took."""
        t0 = time.perf_counter()
        xml = http_call("GET", f"{self.url}/{BUCKET}?list-type=2&prefix=memchat/{table}.lance/_versions/", parse=False)
        return xml.count(b"<Key>"), time.perf_counter() - t0


class Client(RawClient):
    """The kit's SSE client, keeping the last response's headers and calling ``at_first_token`` (if set)
    when the first content token arrives."""

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
        self.name, self.server, self.moto = name, server, moto
        self.client = Client("127.0.0.1", port, {} if server is None else {"authorization": f"Bearer {KEY}"})
        self.blocks: list[dict[str, list[float]]] = []  # per block: {metric: samples (s)}
        self.cpu: list[float] = []       # per block: memchat CPU ms per content chunk
        self.moto_cpu: list[float] = []  # per block: moto CPU ms per content chunk
        self.listings: list[tuple[int, float]] = []  # per block (s3): turn manifests, moto's LIST seconds
        self.errors: list[str] = []

    def path(self, namespace: str, chat_id: str | None = None) -> str:
        if self.server is None:
            return "/v1/chat/completions"
        return f"/v1/memory/chat/completions?namespace={namespace}" + (f"&chat_id={chat_id}" if chat_id else "")


class Questions(random.Random):
    n = 0

    def next(self) -> str:  # always a new text: the embedder's cache never answers
        self.n += 1
        a, b = self.sample(WORDS, 2)
        return f"What should {self.choice(PEOPLE)} know about the {a} and the {b}? (#{self.n})"


def fill(server: Memchat, n: int, seed: int) -> float:
    """Import ``n`` memories into namespace ``filled``; returns the seconds it took."""
    rng = random.Random(seed)
    facts = ("likes", "is saving for", "worries about", "is learning about", "wrote a note on", "asked about")
    body = b"\n".join(msgspec.json.encode({"content": f"{rng.choice(PEOPLE)} {rng.choice(facts)} the "
                                           f"{rng.choice(WORDS)} and the {rng.choice(WORDS)} (fact {i})."})
                      for i in range(n))
    t0 = time.perf_counter()
    status, _, out = raw_request(server.port, "POST", "/api/v1/memory/import?namespace=filled",
                                 [(b"authorization", f"Bearer {KEY}".encode())], body, timeout=600)
    if status != 200 or not isinstance(out, dict) or out.get("total") != n:
        raise RuntimeError(f"import into {server.url} failed: {status} {out!r}")
    return time.perf_counter() - t0


def chat(question: str, history: list[dict[str, str]] | None = None) -> tuple[bytes, list[dict[str, str]]]:
    messages = [*(history or []), {"role": "user", "content": question}]
    return msgspec.json.encode({"model": MODEL, "stream": True, "messages": messages}), messages


def followup(messages: list[dict[str, str]], qs: Questions) -> bytes:
    return chat(qs.next(), [*messages, {"role": "assistant", "content": "Echo: " + messages[-1]["content"]}])[0]


async def one(arm: Arm, path: str, body: bytes, out: dict[str, list[float]], kind: str) -> bool:
    res = await arm.client.stream(path, body, timeout=60)
    if not res.ok or res.ttft is None or res.done is None:
        arm.errors.append(f"{kind}: {res.error or res.status}")
        return False
    out[kind].append(res.ttft)
    out[kind + " tail"].append(res.done - res.start - res.ttft)
    out["chunks"].append(len(res.content_times))
    return True


async def chat_block(arm: Arm, convs: int, qs: Questions) -> dict[str, list[float]]:
    await arm.client.close()  # a fresh connection (connecting is not timed): uvicorn drops idle ones after 5 s
    out: dict[str, list[float]] = {k: [] for k in ("chunks", *KINDS, *(k + " tail" for k in KINDS))}
    for _ in range(convs):
        await one(arm, arm.path("empty"), chat(qs.next())[0], out, "empty")
        body, messages = chat(qs.next())
        if await one(arm, arm.path("filled"), body, out, "filled"):
            chat_id = arm.client.headers.get("x-memchat-chat-id")
            await one(arm, arm.path("filled", chat_id), followup(messages, qs), out, "follow-up")
    return out


async def search_block(arm: Arm, n: int, qs: Questions) -> list[float]:
    lat = []
    for _ in range(n):
        body = msgspec.json.encode({"query": qs.next(), "limit": 8})
        res = await arm.client.stream("/api/v1/memory/search?namespace=filled", body, timeout=60)
        if res.status != 200 or res.error is not None or res.end is None:
            arm.errors.append(f"search: {res.error or res.status}")
        else:
            lat.append(res.end - res.start)
    return lat


async def count_s3_requests(arm: Arm, reps: int, qs: Questions) -> dict[str, Probe]:
    """Per kind of request, the S3 requests of a rep with the most common count (background work -- commit
    sweeper, maintenance, reloads -- can land in a rep; ties go to the smaller count)."""
    assert arm.moto is not None
    moto, out = arm.moto, {}
    await arm.client.close()
    for kind in (*KINDS, "search"):
        samples: list[Probe] = []
        for _ in range(reps):
            marks = [moto.mark()]
            if kind == "search":
                await search_block(arm, 1, qs)
            else:
                body, messages = chat(qs.next())
                path = arm.path("filled" if kind == "follow-up" else kind)
                if kind == "follow-up":  # its turn 1 first, not counted
                    await arm.client.stream(path, body, timeout=60)
                    path = arm.path("filled", arm.client.headers.get("x-memchat-chat-id"))
                    body, marks = followup(messages, qs), [moto.mark()]
                arm.client.at_first_token = lambda m=marks: m.append(moto.mark())
                await arm.client.stream(path, body, timeout=60)
                arm.client.at_first_token = None
            await asyncio.sleep(0.3)  # moto logs a request after answering it
            before, after = moto.requests_since(marks[0]), moto.requests_since(marks[-1]) if len(marks) > 1 else []
            samples.append((before[:len(before) - len(after)], after))
        counts = Counter(len(b) + len(a) for b, a in samples)
        usual = min(counts, key=lambda n: (-counts[n], n))
        out[kind] = next(s for s in samples if len(s[0]) + len(s[1]) == usual)
    return out


async def measure(arms: list[Arm], fake_pid: int, args: argparse.Namespace,
                  started: float) -> tuple[list[float], dict[str, Probe]]:
    """Warm-up, interleaved blocks, then the S3 request counts. Returns the other processes' load
    (cores) per block, and the counts."""
    qs = Questions(args.seed)
    for arm in arms:  # connections, embedder, vector cache, first reads and writes of every table
        await chat_block(arm, 3, qs)
        if arm.server is not None:
            await search_block(arm, 3, qs)
        arm.errors.clear()
    ours = [fake_pid, *(a.server.pid for a in arms if a.server), *(a.moto.process.pid for a in arms if a.moto)]
    foreign: list[float] = []
    for b in range(args.blocks):
        whole = CpuMeter(*ours)
        for arm in arms[b % len(arms):] + arms[:b % len(arms)]:
            meter = CpuMeter(*(p for p in (arm.server and arm.server.pid, arm.moto and arm.moto.process.pid) if p))
            block = await chat_block(arm, args.convs, qs)
            cpu, chunks = meter.stop()["procs"], sum(block["chunks"]) or 1
            if arm.server is not None:
                arm.cpu.append(cpu[arm.server.pid] / chunks * 1e3)
                block["search"] = await search_block(arm, args.searches, qs)
            if arm.moto is not None:
                arm.moto_cpu.append(cpu[arm.moto.process.pid] / chunks * 1e3)
                arm.listings.append(arm.moto.list_versions("turns"))
            arm.blocks.append(block)
        foreign.append(whole.stop()["foreign_cores"])
        print(f"[{time.perf_counter() - started:4.0f} s] block {b + 1}/{args.blocks}, filled TTFT / tail p50 ms: "
              + ", ".join(f"{a.name} {pct(a.blocks[-1]['filled'], 50) * 1e3:.1f} / "
                          f"{pct(a.blocks[-1]['filled tail'], 50) * 1e3:.1f}" for a in arms)
              + f"; other processes {foreign[-1]:.2f} cores", flush=True)
    s3 = next((a for a in arms if a.moto is not None), None)
    return foreign, (await count_s3_requests(s3, args.probe_reps, qs) if s3 is not None else {})


# ------------------------------------------------------------------------------------------ report


def med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def per_block(arm: Arm, base: Arm | None, metric: str, q: float) -> list[float]:
    """Per block: the ``q`` percentile of ``metric`` in ms, minus ``base``'s in the same block."""
    return [pct(b[metric], q) * 1e3 - (pct(base.blocks[i][metric], q) * 1e3 if base else 0.0)
            for i, b in enumerate(arm.blocks)]


Row = tuple[float, float, float]  # median over blocks of p50, of p90, spread of the per-block p50 (ms)


def summarize(arms: list[Arm]) -> dict[str, dict[str, Row]]:
    def row(p50: list[float], p90: list[float] | None = None) -> Row:
        return med(p50), med(p90) if p90 else float("nan"), max(p50) - min(p50)
    rows = {}
    for arm in arms[1:]:
        r = {f"{what}, {kind}": row(per_block(arm, arms[0], metric, 50), per_block(arm, arms[0], metric, 90))
             for kind in KINDS
             for what, metric in (("TTFT added", kind), ("first token → [DONE] added", kind + " tail"))}
        r["search latency (absolute)"] = row(per_block(arm, None, "search", 50), per_block(arm, None, "search", 90))
        r["CPU ms per content chunk, memchat"] = row(arm.cpu)
        if arm.moto_cpu:
            r["CPU ms per content chunk, moto (S3 server)"] = row(arm.moto_cpu)
        rows[arm.name] = r
    return rows


def table(rows: dict[str, dict[str, Row]]) -> str:
    names = list(rows)
    others = [n for n in names if n != "local"]
    out = []
    for label in dict.fromkeys(label for r in rows.values() for label in r):
        line = [label]
        for n in names:
            v = rows[n].get(label)
            line.append("—" if v is None else fmt(v[0], 2) + (f" / {fmt(v[1], 2)}" if v[1] == v[1] else "")
                        + f" ({fmt(v[2], 2)})")
        base = rows["local"].get(label) if "local" in rows else None
        for n in others:
            v = rows[n].get(label)
            line.append(f"{v[0] / base[0]:.1f}×" if v and base and base[0] >= 0.5 else "—")
        out.append(line)
    return md_table(["ms, median of blocks", *(f"{n}: p50 / p90 (spread)" for n in names),
                     *(f"{n} ÷ local, p50" for n in others)], out)


def drift_table(arms: list[Arm]) -> str:
    """Per block: the s3 store's turn manifests, moto's time to list them, and the tails that depend on it."""
    s3 = next((a for a in arms if a.moto is not None), None)
    if s3 is None:
        return ""
    rows = [["turn manifests in the s3 store", *(str(n) for n, _ in s3.listings)],
            ["moto: one LIST of them, ms", *(f"{t * 1e3:.0f}" for _, t in s3.listings)]]
    for arm in arms[1:]:
        rows.append([f"{arm.name}: first token → [DONE] added, filled, p50",
                     *(f"{v:.0f}" for v in per_block(arm, arms[0], "filled tail", 50))])
    rows.append(["s3: TTFT added, follow-up, p50", *(f"{v:.0f}" for v in per_block(s3, arms[0], "follow-up", 50))])
    return ("The store grows during the run (each answered turn is one more table version, and maintenance keeps "
            "10 minutes of versions); per block, in ms:\n\n"
            + md_table(["block", *(str(i + 1) for i in range(len(s3.listings)))], rows))


def s3_table(found: dict[str, Probe]) -> str:
    def show(reqs: list[str]) -> str:
        return f"{len(reqs)}: " + (", ".join(f"{n}× {r}" if n > 1 else r for r, n in Counter(reqs).most_common())
                                   or "none")
    return md_table(["request", "S3 requests before the first token", "first token → [DONE]"],
                    [[k, show(b), show(a) if k != "search" else "—"] for k, (b, a) in found.items()])


def report(args: argparse.Namespace, command: str, machine: str, arms: list[Arm], foreign: list[float],
           fills: dict[str, float], probes: dict[str, Probe], wall: float) -> str:
    rows = summarize(arms)
    vers = ", ".join(f"{k} {v}" for k, v in versions().items() if k != "litellm")
    counts = "; ".join(f"{a.name} {sum(len(b['filled']) for b in a.blocks)} of each chat kind"
                       + (f", {sum(len(b['search']) for b in a.blocks)} searches" if a.server else "")
                       + f", {len(a.errors)} failed" for a in arms)
    direct = ", ".join(f"{k} {med(per_block(arms[0], None, k, 50)):.2f} / "
                       f"{med(per_block(arms[0], None, k + ' tail', 50)):.2f} ms" for k in KINDS)
    table_arm = ", `local-table` (local store, `MEMCHAT_TURNLOG_JOURNAL=false`)" if args.local_table else ""
    text = f"""Measured {date.today().isoformat()} with

```sh
{command}
```

Versions: {vers}, moto {importlib.metadata.version("moto")}. Machine: {machine}; the run took {wall:.0f} s.
Shared with other jobs: while the blocks ran, other processes used {med(foreign):.2f} cores (median of
blocks; {min(foreign):.2f}–{max(foreign):.2f}) of the {os.cpu_count()}.

Arms (see the script's docstring): `memchat serve`, 1 worker, local embedder, heuristic extractor,
idle commits off, in front of one fake upstream (zero delay, 50 tokens per reply): `local` (journal on,
the default){table_arm}, `s3` (`MEMCHAT_STORE_URI=s3://{BUCKET}/memchat` on moto's S3 server on 127.0.0.1;
no journal: each answered turn is in the store before `[DONE]`); `direct` = client → fake. `filled` holds
{args.memories} memories (import: {", ".join(f"{k} {v:.1f} s" for k, v in fills.items())}), `empty` none.
{args.blocks} interleaved blocks after a warm-up; per block and arm {args.convs} × (request to `empty`; turn 1
in `filled`; turn 2 with history and `chat_id`, whose lookup reads the turns table), one at a time, then
{args.searches} searches on `filled`. Requests: {counts}.

Per block: p50 and p90 of the block's requests (TTFT and first token → `[DONE]` minus `direct`'s in that
block); the table gives the median over blocks and, in parentheses, the spread (max − min) of the per-block
p50s: the noise. `direct` (TTFT / first token → `[DONE]`, p50): {direct}. CPU: user+system time of the
memchat process tree (background work included) over the block's chat requests, per content chunk.

{table(rows)}

{drift_table(arms)}

The S3 requests behind it, from moto's access log (`s3` arm, after the blocks; per kind, the most common
count in {args.probe_reps} requests; `LIST x/_versions` lists table x's manifests):

{s3_table(probes)}
"""
    if "s3" in rows and "local" in rows and probes:
        s3, loc, tab = rows["s3"], rows["local"], rows.get("local-table", rows["local"])
        tail = per_block(next(a for a in arms if a.moto), arms[0], "filled tail", 50)
        text += (
            f"\nReading: on S3 the cost is after the last token. Each answered turn is appended to `turns` before "
            f"`[DONE]` ({len(probes['filled'][1])} S3 requests): +{med(tail[:3]):.0f} ms p50 in the first three "
            f"blocks, {med(tail[-3:]):.0f} ms in the last three as the table's versions pile up (the median over "
            f"the run depends on its length), against {fmt(loc['first token → [DONE] added, filled'][0], 1)} ms for "
            f"`local` and {fmt(tab['first token → [DONE] added, filled'][0], 1)} ms for a local append without "
            f"journal. Before the first token, retrieval costs "
            f"{fmt(s3['TTFT added, filled'][0] - loc['TTFT added, filled'][0], 1)} ms more than `local` "
            f"({len(probes['filled'][0])} S3 requests), a follow-up with `chat_id` "
            f"{fmt(s3['TTFT added, follow-up'][0] - loc['TTFT added, follow-up'][0], 1)} ms more "
            f"({len(probes['follow-up'][0])}). moto on loopback answers in milliseconds while its LIST time grows "
            f"with the keys; a real object store takes tens of ms per request, so scale by the request counts.\n")
    return text


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run (~1 min)")
    p.add_argument("--memories", type=int, default=1000, help="memories imported into namespace 'filled'")
    p.add_argument("--blocks", type=int, default=None, help="interleaved blocks (default 16, quick 3)")
    p.add_argument("--convs", type=int, default=None, help="conversations per arm and block (default 6, quick 4)")
    p.add_argument("--searches", type=int, default=None, help="searches per arm and block (default 10, quick 5)")
    p.add_argument("--probe-reps", type=int, default=5, help="reps per kind of request when counting S3 requests")
    p.add_argument("--no-local-table", dest="local_table", action="store_false",
                   help="skip the local-disk arm with MEMCHAT_TURNLOG_JOURNAL=false")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    a.blocks = a.blocks or (3 if a.quick else 16)
    a.convs = a.convs or (4 if a.quick else 6)
    a.searches = a.searches or (5 if a.quick else 10)
    if a.quick:
        a.memories = min(a.memories, 300)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = start_run("bench_store.py", argv)
    started = time.perf_counter()
    machine = machine_line()
    source = use_app_ref(None)  # "work tree at <commit>", for the report
    tmp = Path(tempfile.mkdtemp(prefix="memchat-bench-store-"))
    fake, moto, servers = None, None, []
    try:
        fake = FakeUpstream("--tokens", "50", "--no-record").start()
        moto = MotoS3()
        moto.start()
        base = memchat_env(fake.base_url, "local", MEMCHAT_API_KEYS=f"{KEY}={ORG}")
        specs = {"local": {}, "local-table": {"MEMCHAT_TURNLOG_JOURNAL": "false"},
                 "s3": {"MEMCHAT_STORE_URI": f"s3://{BUCKET}/memchat",
                        "MEMCHAT_STORAGE_OPTIONS": moto.storage_options()}}
        if not args.local_table:
            del specs["local-table"]
        arms, fills = [Arm("direct", fake.port)], {}
        for name, extra in specs.items():
            server = Memchat(tmp / name, env={**base, **extra})
            servers.append(server)
            server.start()
            fills[name] = fill(server, args.memories, args.seed)
            arms.append(Arm(name, server.port, server, moto if name == "s3" else None))
            print(f"[{time.perf_counter() - started:4.0f} s] {name}: {args.memories} memories imported in "
                  f"{fills[name]:.1f} s", flush=True)
        assert fake.proc is not None
        foreign, probes = uvloop.run(measure(arms, fake.proc.pid, args, started))
        machine += f"; at the end {load_now()}"
        if any(len(a.errors) > 5 for a in arms):
            print("ERROR: too many failed requests; nothing is written.\n" + "\n".join(
                f"{a.name}: {a.errors[:3]}\n{a.server.log_text()[-1500:] if a.server else ''}" for a in arms),
                file=sys.stderr)
            return 1
        text = report(args, command, f"{machine}. memchat: {source}", arms, foreign, fills, probes, time.perf_counter() - started)
        print("\n" + text)
        if not args.no_docs:
            write_section(SECTION, text)
            print(f"wrote section '{SECTION}' of docs/benchmarks.md")
        print(f"total {time.perf_counter() - started:.0f} s")
        return 0
    finally:
        stop_all(*servers, moto and moto.process, fake)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
