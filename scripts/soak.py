#!/usr/bin/env python3
"""Soak test: N concurrent closed-loop chat clients for D seconds on every chat surface.

memchat (1 uvicorn worker, LanceDB in a temp dir, idle commits after 5 s with the LLM extractor, seeded
namespaces) in front of the fake upstream at a realistic cadence. A quarter of the clients each use OpenAI
streaming, OpenAI non-streaming, personal-chat SSE and the websocket, in multi-turn conversations across
namespaces; after the hold every client finishes its current request. Errors are counted per surface and
kind; afterwards health, the turn log of every error-free conversation, commits, event-loop tasks and the
server log are checked. Exit 1 on any error or when server RSS grows more than ``--rss-growth`` % from the
end of the ramp to the end of the hold. The report (also the "## Soak" section of docs/benchmarks.md unless
``--no-docs``) describes the method.

    .venv/bin/python scripts/soak.py                      # 300 x 60 s, writes docs/benchmarks.md
    .venv/bin/python scripts/soak.py --quick --no-docs    # 50 x 15 s
    .venv/bin/python scripts/soak.py --rounds 3           # the load 3 times on one server: is RSS flat across rounds?
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("LANCEDB_LOG", "error")

from app.testkit.chunks import decode_message  # noqa: E402
from bench_common import (  # noqa: E402, I001
    start_run,
    stop_all,
    MODEL, REALISTIC, CpuMeter, FakeUpstream, Memchat, load_now, machine_line, memchat_env,
    own_rss_mib, peak_rss_mib, rss_mib, versions, write_section)
from bench_text import Questions, fill_template, memory_texts  # noqa: E402
from soak_clients import AUTH, Conv, Res, SoakClient, WsClient, classify, http_get  # noqa: E402
from soak_report import bucket_quantile, report  # noqa: E402

SURFACES = ("openai-sse", "openai-json", "personal-sse", "ws")
COMMIT_AFTER = 5
STATEMENTS = ["I live in {city}.", "My {rel} {name} is a {job}.", "I love {food}.", "I have a {pet} called {name}.",
              "I started {hobby} last month.", "I work as a {job} in {city}."]


@dataclass
class Stats:
    clients: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)


class Load:
    def __init__(self, port: int, n: int, ramp: float, duration: float, namespaces: list[str], seed: int,
                 timeout: float) -> None:
        self.port, self.n, self.ramp, self.namespaces, self.seed, self.timeout = port, n, ramp, namespaces, seed, timeout
        self.stats = {s: Stats() for s in SURFACES}
        self.convs: list[Conv] = []
        self.done = self.committed_events = self.hangs = 0
        self.t0 = time.perf_counter()
        self.t_steady, self.t_end = self.t0 + ramp, self.t0 + ramp + duration
        self.qs = Questions(seed)

    def errors(self) -> int:
        return sum(sum(s.errors.values()) for s in self.stats.values())

    def end_turn(self, conv: Conv, res: Res, user: str) -> Conv | None:
        """Count the request; returns the conversation to continue, or None to start a new one."""
        kind, s = classify(res), self.stats[conv.surface]
        got = res.headers.get("x-memchat-chat-id") or res.headers.get("x-memchat-session-id") or res.chat_id
        if kind is None and conv.chat_id is not None and got != conv.chat_id:
            kind, res.error = "resolve_miss", f"expected chat {conv.chat_id}, got {got} (turn {conv.turns + 1})"
        self.done += 1
        if kind is not None:
            s.errors[kind] += 1
            s.examples.setdefault(kind, (res.error or kind)[:240])
            conv.tainted = True
        else:
            s.ok += 1
            if self.t_steady <= res.start < self.t_end:
                s.ttft.append(res.ttft if conv.surface != "openai-json" else res.done - res.start)
                s.gaps.extend(res.gaps())
            conv.chat_id, conv.turns, conv.left = got, conv.turns + 1, conv.left - 1
            conv.history += [{"role": "user", "content": user}, {"role": "assistant", "content": "".join(res.parts)}]
        if kind is None and conv.left > 0:
            return conv
        self.convs.append(conv)
        return None

    async def client(self, i: int) -> None:
        surface, rng = SURFACES[i % 4], random.Random(self.seed * 100_003 + i)
        conn: SoakClient | WsClient = WsClient(self.port) if surface == "ws" else SoakClient(self.port, surface)
        conv: Conv | None = None
        try:
            await asyncio.sleep(self.ramp * i / self.n)
            while time.perf_counter() < self.t_end:
                if conv is None:
                    conv = Conv(surface, rng.choice(self.namespaces), rng.randint(1, 4))
                    if surface.startswith("openai") and rng.random() < 0.5:
                        conv.by_id, conv.chat_id = True, str(uuid.uuid4())
                user = f"{fill_template(rng.choice(STATEMENTS), rng)} {self.qs.next()}"
                conv = self.end_turn(conv, await conn.turn(conv, user, rng, self), user)
                if conv is None:
                    await asyncio.sleep(0.02)
        finally:
            if conv is not None and conv.turns:
                self.convs.append(conv)
            await conn.close()

    async def run(self) -> None:
        for i in range(self.n):
            self.stats[SURFACES[i % 4]].clients += 1
        tasks = [asyncio.create_task(self.client(i)) for i in range(self.n)]
        _done, pending = await asyncio.wait(tasks, timeout=self.t_end - time.perf_counter() + self.timeout + 15)
        for t in pending:          # a client stuck beyond its own request timeout
            t.cancel()
            self.hangs += 1
        await asyncio.gather(*tasks, return_exceptions=True)


async def check_turn_log(port: int, convs: list[Conv], limit: int) -> tuple[int, int, list[str]]:
    """Each error-free conversation's turn log (websocket ``history``) against the turns the client got."""
    from websockets.asyncio.client import connect

    clean = [c for c in convs if not c.tainted and c.turns and c.chat_id]
    sample, bad = random.Random(5).sample(clean, min(limit, len(clean))), []
    async with connect(f"ws://127.0.0.1:{port}/ws/chat", additional_headers=AUTH, proxy=None, max_size=None) as ws:
        for c in sample:
            await ws.send(json.dumps({"type": "history", "namespace": c.ns, "chat_id": c.chat_id}))
            while (m := decode_message(await asyncio.wait_for(ws.recv(), 30))).type != "history" or m.chat_id != c.chat_id:
                pass
            turns = m.turns or []
            if len(turns) != c.turns or any(t.get("status") != "complete" or not t.get("assistant") for t in turns):
                bad.append(f"{c.surface} {c.ns}/{c.chat_id}: client got {c.turns} turns, log: "
                           f"{[t.get('status') for t in turns]}")
    return len(clean), len(sample), bad


class Extraction:
    """Keeps a few ``memchat-extract`` rules queued on the fake, each answering 10 extraction calls with
    two fresh facts, so commits write new memories all along the run."""

    def __init__(self, fake: FakeUpstream) -> None:
        self.fake, self.facts = fake, iter(memory_texts(50_000, seed=99))

    def top_up(self) -> None:
        queued = sum(1 for r in self.fake.rules() if r.get("match") == "memchat-extract")
        rules = [{"match": "memchat-extract", "times": 10, "tokens": None, "first_token_delay": 0.2, "token_delay": None,
                  "reply": json.dumps({"facts": [{"content": next(self.facts), "turn": 1} for _ in range(2)]})}
                 for _ in range(max(0, 6 - queued))]
        if rules:
            self.fake.call("POST", "/_fake/rules", rules)


def point(label: str, t: float, mc: Memchat, load: Load | None, cores: float | None = None) -> dict[str, Any]:
    m = mc.metrics()
    rss = rss_mib(mc.pid)
    return {"label": label, "t": t, "rss": rss, "rss_children": rss - own_rss_mib(mc.pid),
            "store_cache": m.get("memchat_store_cache_bytes", 0) / 2**20,
            "heap_in_use": m.get('memchat_heap_bytes{state="in_use"}', 0) / 2**20,
            "heap_free": m.get('memchat_heap_bytes{state="free"}', 0) / 2**20,
            "trimmed": m.get("memchat_heap_released_bytes_total", 0) / 2**20, "cores": cores, "done": load.done if load else 0,
            "errors": load.errors() if load else 0, "commits": m.get('memchat_commits_total{outcome="done"}', 0),
            "failed": m.get('memchat_commits_total{outcome="failed"}', 0),
            "memories": m.get("memchat_memories_written_total", 0), "rows": m.get("memchat_turnlog_rows_written_total", 0),
            "tasks": m.get("memchat_event_loop_tasks", 0), "pending": m.get("memchat_conversations_pending", 0),
            "commit_s": m.get("memchat_commit_seconds_sum", 0) / max(1, m.get("memchat_commit_seconds_count", 0)),
            "commit_p95": bucket_quantile(m, "memchat_commit_seconds", 0.95),
            "lag_s": m.get("memchat_commit_lag_seconds_sum", 0) / max(1, m.get("memchat_commit_lag_seconds_count", 0)),
            "lag_p95": bucket_quantile(m, "memchat_commit_lag_seconds", 0.95)}


async def sampler(load: Load, mc: Memchat, extraction: Extraction, samples: list[dict[str, Any]]) -> None:
    """Every 10 s of load: server RSS, CPU cores since the previous sample, progress, metrics."""
    k, meter = 0, CpuMeter(mc.pid)
    while True:
        k += 1
        while time.perf_counter() < load.t0 + 10 * k:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(extraction.top_up)
        cpu, meter = meter.stop(), CpuMeter(mc.pid)
        samples.append(await asyncio.to_thread(point, f"t = {10 * k} s", time.perf_counter() - load.t0, mc, load,
                                               cpu["procs"][mc.pid] / cpu["wall"]))


async def soak(args: argparse.Namespace, fake: FakeUpstream, mc: Memchat, namespaces: list[str]) -> dict[str, Any]:
    extraction = Extraction(fake)
    extraction.top_up()
    warm = Load(mc.port, 4, 0.0, 2.0, namespaces, args.seed + 1, args.timeout)   # one client per surface
    await warm.run()
    await heap_trimmed(mc)
    samples = [point("idle, after warm-up", 0.0, mc, None)]
    load = Load(mc.port, args.streams, args.ramp, args.duration, namespaces, args.seed, args.timeout)
    out: dict[str, Any] = {"samples": samples, "load": load, "warm_errors": warm.errors()}
    meter = CpuMeter(mc.pid, fake.proc.pid)
    tick, runner = asyncio.create_task(sampler(load, mc, extraction, samples)), asyncio.create_task(load.run())
    await asyncio.sleep(max(0.0, load.t_steady - time.perf_counter()))
    samples.append(await asyncio.to_thread(point, "end of ramp (load start)", time.perf_counter() - load.t0, mc, load))
    await asyncio.sleep(max(0.0, load.t_end - time.perf_counter()))
    samples.append(await asyncio.to_thread(point, "end of hold (load end)", time.perf_counter() - load.t0, mc, load))
    out["cpu"] = meter.stop()
    await runner
    out["drain"] = time.perf_counter() - load.t_end
    samples.append(point("all clients done", time.perf_counter() - load.t0, mc, load))
    tick.cancel()
    await asyncio.gather(tick, return_exceptions=True)
    samples.sort(key=lambda p: p["t"])
    t_idle = time.perf_counter()
    out["settled"] = await settle(args, mc, extraction, samples[0]["tasks"])
    samples.append(point(f"idle, {time.perf_counter() - t_idle:.0f} s after the drain", time.perf_counter() - load.t0,
                         mc, load))
    out["turnlog"] = await check_turn_log(mc.port, load.convs, args.check_convs)
    out["rounds"] = [await again(args, mc, extraction, namespaces, r, samples[0]["tasks"])
                     for r in range(2, args.rounds + 1)]
    return out


async def settle(args: argparse.Namespace, mc: Memchat, extraction: Extraction, idle_tasks: float) -> bool:
    """Wait until the load's commits are done; False after ``--settle`` s. Every conversation commits
    COMMIT_AFTER s after its last turn. A commit handed to the committer leaves "pending" but stays an event-loop
    task (queued for a slot, then running) until it is done, so wait until both are back to the idle level."""
    t_idle = time.perf_counter()
    while time.perf_counter() - t_idle < args.settle:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(extraction.top_up)
        m = mc.metrics()
        if (time.perf_counter() - t_idle > COMMIT_AFTER + 1 and not m["memchat_conversations_pending"]
                and m["memchat_event_loop_tasks"] <= idle_tasks + 1):
            return await heap_trimmed(mc)
    return False


async def heap_trimmed(mc: Memchat, timeout: float = 30.0) -> bool:
    """True once the quiet server has trimmed its heap (app.heap.HeapTrimmer, MEMCHAT_MALLOC_TRIM_IDLE), or
    after ``timeout`` s (trimming off, or done before this call): the RSS measured then is what an idle server holds."""
    trims = mc.metrics().get("memchat_heap_trim_seconds_count", 0)
    for _ in range(int(timeout)):
        if mc.metrics().get("memchat_heap_trim_seconds_count", 0) > trims:
            break
        await asyncio.sleep(1.0)
    return True


async def again(args: argparse.Namespace, mc: Memchat, extraction: Extraction, namespaces: list[str], r: int,
                idle_tasks: float) -> dict[str, Any]:
    """``--rounds``: the same load once more on the same server (new conversations, same namespaces), then its
    drain; the RSS at the end of its hold and once its commits are done."""
    load = Load(mc.port, args.streams, args.ramp, args.duration, namespaces, args.seed + 1000 * r, args.timeout)
    runner = asyncio.create_task(load.run())
    await asyncio.sleep(max(0.0, load.t_end - time.perf_counter()))
    hold = await asyncio.to_thread(point, f"round {r}: end of hold", time.perf_counter() - load.t0, mc, load)
    await runner
    settled = await settle(args, mc, extraction, idle_tasks)
    idle = point(f"round {r}: idle after the drain", time.perf_counter() - load.t0, mc, load)
    return {"round": r, "requests": load.done, "errors": load.errors(), "hangs": load.hangs, "hold": hold,
            "idle": idle, "settled": settled}


def seed_memories(mc: Memchat, namespaces: list[str], per_ns: int) -> float:
    t0, texts = time.perf_counter(), memory_texts(len(namespaces) * per_ns)
    for k, ns in enumerate(namespaces):
        body = json.dumps([{"content": t} for t in texts[k * per_ns:(k + 1) * per_ns]]).encode()
        req = urllib.request.Request(f"{mc.url}/api/v1/memory/import?namespace={ns}", data=body, method="POST",
                                     headers={**AUTH, "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=300):
            pass
    return time.perf_counter() - t0


def verdict(args: argparse.Namespace, mc: Memchat, out: dict[str, Any]) -> tuple[list[str], list[str], float]:
    """(checks, failures, RSS growth %)."""
    load, samples = out["load"], out["samples"]
    failures = [f"{n} request errors" for n in [load.errors()] if n]
    failures += [f"{n} errors in the warm-up" for n in [out["warm_errors"]] if n]
    failures += [f"{n} clients hung past their timeout" for n in [load.hangs] if n]
    checks = []
    for path in ("/healthz", "/readyz"):
        status, body = http_get(mc.url + path)
        checks.append(f"`GET {path}` → {status} `{body}`")
        failures += [f"{path} answered {status}"] if status != 200 else []
    clean, checked, bad = out["turnlog"]
    checks.append(f"turn log: {checked} of {clean} error-free conversations checked (websocket `history`): "
                  f"{checked - len(bad)} hold exactly one complete turn per answered request" + (f"; {bad[:5]}" if bad else ""))
    failures += [f"{len(bad)} conversations whose turn log does not match"] if bad else []
    first, last = samples[0], samples[-1]
    checks.append(f"commits: {last['commits']:.0f} done, {last['failed']:.0f} failed, {last['pending']:.0f} pending at "
                  f"the end; {last['memories']:.0f} memories written; {last['rows']:.0f} turn-log rows for {load.done} "
                  f"requests (+ warm-up)")
    clean = sum(1 for c in load.convs if c.turns and not c.tainted)
    checks[-1] += (f"; {clean} error-free conversations; commit lag (idle deadline → done, the wait for a slot "
                   f"included) mean {last['lag_s']:.1f} s, p95 ≤ {last['lag_p95']} s; a commit itself mean "
                   f"{last['commit_s']:.2f} s, p95 ≤ {last['commit_p95']} s (p95: histogram bucket bounds)")
    failures += ["failed commits"] if last["failed"] else []
    failures += [f"{last['commits']:.0f} commits for {clean} conversations"] if last["commits"] < clean else []
    checks.append(f"event-loop tasks: {first['tasks']:.0f} idle before the load, {last['tasks']:.0f} after it")
    if not out["settled"]:
        failures.append(f"not idle {args.settle:.0f} s after the drain: {last['pending']:.0f} commits pending, "
                        f"{last['tasks']:.0f} event-loop tasks (idle before: {first['tasks']:.0f}): slow commits or a leak")
    log = mc.log_text().splitlines()
    bad_lines = [i for i, line in enumerate(log) if "Traceback" in line or " ERROR " in line or "CRITICAL" in line]
    warnings = Counter(line.split(": ", 1)[-1][:90] for line in log if " WARNING " in line)
    checks.append(f"server log: {len(log)} lines, {len(bad_lines)} tracebacks/ERROR lines, {sum(warnings.values())} "
                  f"warnings" + (f" (most common: {warnings.most_common(3)})" if warnings else ""))
    if bad_lines:
        failures.append(f"{len(bad_lines)} tracebacks/ERROR lines in the server log")
        print("--- server log around the first error ---\n" + "\n".join(log[max(0, bad_lines[0] - 3):bad_lines[0] + 80]))
    by = {p["label"]: p["rss"] for p in samples}
    start, end = by["end of ramp (load start)"], by["end of hold (load end)"]
    growth = (end - start) / start * 100
    failures += [f"server RSS grew {growth:.1f} % under the same load ({start:.0f} → {end:.0f} MiB)"] \
        if growth > args.rss_growth else []
    for rd in out["rounds"]:
        failures += [f"round {rd['round']}: {rd['errors']} request errors"] if rd["errors"] else []
        failures += [f"round {rd['round']}: {rd['hangs']} clients hung"] if rd["hangs"] else []
        failures += [f"round {rd['round']}: not idle {args.settle:.0f} s after the drain"] if not rd["settled"] else []
        failures += [f"round {rd['round']}: failed commits"] if rd["idle"]["failed"] else []
    return checks, failures, growth


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="50 streams x 15 s (3 s ramp, 12 namespaces)")
    p.add_argument("--streams", type=int, default=None, help="concurrent clients (300)")
    p.add_argument("--duration", type=float, default=None, help="seconds the load is held after the ramp (60)")
    p.add_argument("--ramp", type=float, default=None, help="seconds over which the clients start (5)")
    p.add_argument("--embedder", default="local", choices=["local", "none", "openai"])
    p.add_argument("--namespaces", type=int, default=None, help="namespaces (40)")
    p.add_argument("--seed-memories", type=int, default=20, help="memories imported per namespace before the run")
    p.add_argument("--rss-growth", type=float, default=25.0, help="max RSS growth %% (end of hold vs end of ramp)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    p.add_argument("--settle", type=float, default=300.0, help="seconds to wait for the commits after the load")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the load this many times on the same server, each followed by its drain (RSS flat?)")
    p.add_argument("--check-convs", type=int, default=2000, help="conversations whose turn log is checked, at most")
    p.add_argument("--no-docs", action="store_true", help="do not write the 'Soak' section of docs/benchmarks.md")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for memchat (repeatable), e.g. MEMCHAT_COMMIT_CONCURRENCY=4")
    a = p.parse_args(argv)
    a.streams = a.streams or (50 if a.quick else 300)
    a.duration = a.duration or (15.0 if a.quick else 60.0)
    a.ramp = a.ramp if a.ramp is not None else (3.0 if a.quick else 5.0)
    a.namespaces = a.namespaces or (12 if a.quick else 40)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = start_run("soak.py", argv)
    info: dict[str, Any] = {"command": command, "date": date.today().isoformat(), "machine": machine_line(),
                            "commit_after": COMMIT_AFTER,
                            "versions": versions()}
    namespaces = [f"soak-u{k:02d}" for k in range(args.namespaces)]
    tmp = Path(tempfile.mkdtemp(prefix="memchat-soak-"))
    fake: FakeUpstream | None = None
    mc: Memchat | None = None
    try:
        fake = FakeUpstream("--no-record").start()
        fake.set_config(tokens=100, **REALISTIC)
        env = memchat_env(fake.base_url, args.embedder, MEMCHAT_COMMIT_AFTER=str(COMMIT_AFTER), MEMCHAT_EXTRACTOR="llm",
                          MEMCHAT_DEFAULT_MODEL=MODEL, **dict(kv.split("=", 1) for kv in args.env))
        mc = Memchat(tmp / "data", env=env).start()
        info.update(mc_pid=mc.pid, fake_pid=fake.proc.pid)
        print(f"seeding {args.namespaces} namespaces x {args.seed_memories} memories ...", flush=True)
        print(f"  {seed_memories(mc, namespaces, args.seed_memories):.0f} s", flush=True)
        print(f"soak: {args.streams} streams, ramp {args.ramp:.0f} s, hold {args.duration:.0f} s", flush=True)
        try:
            import uvloop
            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        out = runner(soak(args, fake, mc, namespaces))
        checks, failures, growth = verdict(args, mc, out)
        info.update(checks=checks, failures=failures, rss_growth=growth, peak_rss=peak_rss_mib(mc.pid), load_end=load_now())
        text = report(args, info, out)
        print("\n" + text)
        if not args.no_docs:
            write_section("Soak", text)
            print("wrote section 'Soak' of docs/benchmarks.md")
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1 if failures else 0
    finally:
        stop_all(mc, fake)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
