#!/usr/bin/env python3
"""The durable turn log under concurrency: group commit versus single-row LanceDB appends.

This measures the table mode (``MEMCHAT_TURNLOG_JOURNAL=false``), the one for replicas without a durable
local disk. The default mode makes turns durable in a local journal and moves them to the table in batches
in the background; its cost on the request path is measured by ``scripts/bench_proxy.py``.
``--turnlog journal`` runs this script against the default instead.

memchat writes every answered turn to the LanceDB table ``turns`` *before* it sends ``data: [DONE]``
(``app/chat/turnlog.py``): concurrent turns queue their row and one writer task appends everything queued
in a single ``table.add`` (one new table version per batch). This script measures that through the full
proxy, loopback only:

* fake upstream with a realistic cadence (first token after 50 ms, then 30 tokens/s, ``--tokens`` per reply),
* 1, 10, 50, 200 concurrent closed-loop streams (lean raw-socket SSE client), each level started over one
  reply's length and then held ``--hold`` seconds,
* per turn, the **record latency**: arrival of the last content chunk -> arrival of ``data: [DONE]``,
* completed requests/s, and rows per batch from memchat's ``/metrics``
  (``memchat_turnlog_rows_written_total`` / ``memchat_turnlog_batches_written_total``),
* the same levels straight to the fake upstream (no turn log: the floor of the record latency, and the
  requests/s the harness can drive),
* the baseline in the same run: ``--baseline-rows`` sequential single-row ``table.add`` calls into a scratch
  LanceDB table with the turn schema (ms per row, versions created), and the same rows in one ``add``.

    .venv/bin/python scripts/bench_turnlog.py            # full run (~6 min), writes docs/benchmarks.md
    .venv/bin/python scripts/bench_turnlog.py --quick    # ~1.5 min
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("LANCEDB_LOG", "error")

from bench_common import (  # noqa: E402
    start_run,
    stop_all,
    API_KEY,
    REALISTIC,
    CpuMeter,
    FakeUpstream,
    Memchat,
    chat_body,
    cleanup_app_exports,
    closed_loop,
    fmt,
    load_now,
    machine_line,
    md_table,
    memchat_env,
    pct,
    peak_rss_mib,
    use_app_ref,
    versions,
    write_section,
)

NS = "bench-turnlog"


# ------------------------------------------------------------------------------------------ baseline


def _record(i: int) -> Any:
    from app.turns.turnlog import TurnRecord

    return TurnRecord(
        turn_id=str(uuid.uuid4()), chat_id=str(uuid.uuid4()), org_id="benchorg", namespace=NS, seq=1,
        user=f"question number {i} about something the user cares about", assistant="tok " * 150,
        status="complete", model="fake-gpt", surface="openai", commit_after=120, prefix_hash="0" * 32,
        transcript_hash=uuid.uuid4().hex, created_at=datetime.now(UTC),
    )


async def lancedb_baseline(rows: int, scratch: Path) -> dict[str, float]:
    """``rows`` sequential one-row appends vs one ``rows``-row append, into fresh tables."""
    import lancedb

    from app.turns.turnlog import TURN_SCHEMA, to_arrow

    db = await lancedb.connect_async(str(scratch), read_consistency_interval=timedelta(0))
    single = await db.create_table("single", schema=TURN_SCHEMA)
    data = [to_arrow([_record(i)]) for i in range(rows)]
    await single.add(to_arrow([_record(-1)]))  # warm-up (first write, file layout)
    v0 = await single.version()
    lat: list[float] = []
    t0 = time.perf_counter()
    for d in data:
        t = time.perf_counter()
        await single.add(d)
        lat.append(time.perf_counter() - t)
    single_wall = time.perf_counter() - t0
    versions_single = await single.version() - v0

    group = await db.create_table("group", schema=TURN_SCHEMA)
    await group.add(to_arrow([_record(-1)]))
    v0 = await group.version()
    batch = to_arrow([_record(i) for i in range(rows)])
    t0 = time.perf_counter()
    await group.add(batch)
    group_wall = time.perf_counter() - t0
    versions_group = await group.version() - v0
    for t in (single, group):
        t.close()
    db.close()
    return {
        "rows": rows, "ms_per_row": single_wall / rows * 1e3, "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3, "rows_per_s": rows / single_wall, "versions": versions_single,
        "group_ms": group_wall * 1e3, "group_ms_per_row": group_wall / rows * 1e3, "group_versions": versions_group,
    }


# ------------------------------------------------------------------------------------------ levels


class Questions:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0
        self.words = ("garden", "budget", "recipe", "holiday", "printer", "violin", "marathon", "tax", "kitten",
                      "bicycle", "novel", "interview", "podcast", "roof", "camera", "visa", "wedding", "exam")

    def body(self) -> bytes:
        self.n += 1
        a, b = self.rng.sample(self.words, 2)
        return chat_body(f"Help me think about the {a} and the {b}, please ({self.n}).")


async def settle(fake: FakeUpstream, pid: int, limit: float = 60.0) -> float:
    """Wait until no upstream stream is open and the server is idle, so a level never inherits the
    previous level's backlog (requests still queued in memchat when their clients were cut off)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        meter = CpuMeter(pid)
        await asyncio.sleep(1.0)
        busy = meter.stop()["procs"][pid]
        if fake.streams().get("open", 0) == 0 and busy < 0.05:
            break
    return time.perf_counter() - t0


async def run_level(host: str, port: int, path: str, headers: dict[str, str], n: int, stagger: float,
                    hold: float, qs: Questions, pid: int, fake: FakeUpstream, metrics: Any) -> dict[str, Any]:
    m0 = metrics() if metrics else {}
    meter = CpuMeter(pid, fake.proc.pid)
    results, t_measure, t_end = await closed_loop(host, port, path, headers, n, stagger, hold, qs.body)
    cpu = meter.stop()
    settled = await settle(fake, pid)  # cancelled streams write their partial turns
    m1 = metrics() if metrics else {}

    rec: list[float] = []
    ttft: list[float] = []
    done_in_window = 0
    errors = 0
    for r in results:
        if r.error is not None or r.status not in (0, 200):
            if r.end is not None and r.end >= t_measure:
                errors += 1
            continue
        if r.done is not None and t_measure <= r.done <= t_end:
            done_in_window += 1
            if r.content_times:
                rec.append(r.done - r.content_times[-1])
        if r.start >= t_measure:
            if r.ttft is not None:
                ttft.append(r.ttft)
            elif r.start < t_end - 1.0:
                ttft.append(t_end - r.start)  # no first token before the level ended: a lower bound
    out: dict[str, Any] = {
        "n": n, "done": done_in_window, "errors": errors, "rps": done_in_window / hold,
        "rec_p50": pct(rec, 50), "rec_p95": pct(rec, 95), "rec_p99": pct(rec, 99), "rec_max": max(rec, default=float("nan")),
        "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99), "cores": cpu["procs"][pid] / cpu["wall"],
        "foreign_cores": cpu["foreign_cores"], "client_cores": cpu["client_cores"], "settle": settled,
    }
    if metrics:
        rows = m1.get("memchat_turnlog_rows_written_total", 0) - m0.get("memchat_turnlog_rows_written_total", 0)
        batches = (m1.get("memchat_turnlog_batches_written_total", 0)
                   - m0.get("memchat_turnlog_batches_written_total", 0))
        out.update(rows=rows, batches=batches, rows_per_batch=rows / batches if batches else float("nan"),
                   batches_per_s=batches / cpu["wall"])
    return out


def _line(name: str, lv: dict[str, Any]) -> str:
    extra = ""
    if "rows_per_batch" in lv:
        extra = f", {lv['rows']:.0f} rows in {lv['batches']:.0f} batches ({fmt(lv['rows_per_batch'], 1)} rows/batch)"
    return (f"  {name:8s} {lv['n']:4d} streams: {lv['rps']:.1f} req/s, record latency p50 {fmt(lv['rec_p50'] * 1e3, 1)} "
            f"ms p99 {fmt(lv['rec_p99'] * 1e3, 1)} ms, TTFT p50 {fmt(lv['ttft_p50'] * 1e3, 0)} ms p99 "
            f"{fmt(lv['ttft_p99'] * 1e3, 0)} ms, errors {lv['errors']}, server {lv['cores']:.2f} cores, client "
            f"{lv['client_cores']:.2f}, other processes {lv['foreign_cores']:.2f}{extra}")


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run (~1.5 min)")
    p.add_argument("--levels", default="1,10,50,200", help="concurrent streams, comma separated")
    p.add_argument("--tokens", type=int, default=None, help="tokens per reply (300: ~10 s at 30 tokens/s)")
    p.add_argument("--hold", type=float, default=None, help="seconds measured per level (20)")
    p.add_argument("--baseline-rows", type=int, default=200)
    p.add_argument("--embedder", default="local", choices=["local", "none"])
    p.add_argument("--turnlog", default="table", choices=["table", "journal"],
                   help="turn log mode of memchat (MEMCHAT_TURNLOG_JOURNAL false / true)")
    p.add_argument("--no-direct", action="store_true", help="skip the direct-to-fake levels")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--app-ref", default=None, metavar="REF",
                   help="benchmark memchat as committed at this git ref (default: the work tree as it is)")
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args(argv)
    a.tokens = a.tokens or (60 if a.quick else 300)
    a.hold = a.hold or (5.0 if a.quick else 20.0)
    a.levels = [int(x) for x in a.levels.split(",")]
    a.stagger = 0.05 + a.tokens / 30
    if a.quick:
        a.baseline_rows = min(a.baseline_rows, 100)
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = start_run("bench_turnlog.py", argv)
    started = time.perf_counter()
    machine = machine_line()
    source = use_app_ref(args.app_ref)
    tmp = Path(tempfile.mkdtemp(prefix="memchat-bench-turnlog-"))
    fake = mc = None
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    try:
        print(f"[{time.perf_counter() - started:4.0f} s] baseline: {args.baseline_rows} single-row appends", flush=True)
        base_before = runner(lancedb_baseline(args.baseline_rows, tmp / "scratch1"))
        print(f"  {base_before['ms_per_row']:.2f} ms/row, {base_before['versions']} versions; one "
              f"{args.baseline_rows}-row add {base_before['group_ms']:.1f} ms", flush=True)

        fake = FakeUpstream("--tokens", str(args.tokens), "--no-record",
                            "--first-token-delay", str(REALISTIC["first_token_delay"]),
                            "--token-delay", str(REALISTIC["token_delay"])).start()
        mc = Memchat(tmp / "data", env=memchat_env(
            fake.base_url, args.embedder,
            MEMCHAT_TURNLOG_JOURNAL="true" if args.turnlog == "journal" else "false")).start()
        qs = Questions(args.seed)
        mc_path = f"/v1/memory/chat/completions?namespace={NS}"
        auth = {"authorization": f"Bearer {API_KEY}"}
        # warm-up: connections, embedder, first LanceDB reads and writes
        runner(closed_loop("127.0.0.1", mc.port, mc_path, auth, 4, 0.0, 2.0 + args.tokens / 30, qs.body))

        results: dict[str, list[dict[str, Any]]] = {"memchat": [], "direct": []}
        for n in args.levels:  # interleaved: memchat then direct at each level
            lv = runner(run_level("127.0.0.1", mc.port, mc_path, auth, n, args.stagger, args.hold, qs, mc.pid,
                                  fake, mc.metrics))
            results["memchat"].append(lv)
            print(_line("memchat", lv), flush=True)
            if not args.no_direct:
                lv = runner(run_level("127.0.0.1", fake.port, "/v1/chat/completions", {}, n, args.stagger,
                                      args.hold, qs, fake.proc.pid, fake, None))
                results["direct"].append(lv)
                print(_line("direct", lv), flush=True)

        print(f"[{time.perf_counter() - started:4.0f} s] baseline again", flush=True)
        base_after = runner(lancedb_baseline(args.baseline_rows, tmp / "scratch2"))
        print(f"  {base_after['ms_per_row']:.2f} ms/row, {base_after['versions']} versions", flush=True)
        rss = peak_rss_mib(mc.pid)
        machine += f"; at the end {load_now()}"

        if any(lv["errors"] > max(1, lv["done"] // 10) for lv in results["memchat"]):
            print(f"ERROR: memchat failed more than 10 % of its requests; nothing is written.\n"
                  f"--- memchat log (tail) ---\n{mc.log_text()[-3000:]}", file=sys.stderr)
            return 1
        text = report(args, command, machine + f". memchat source: {source}", results, base_before, base_after, rss)
        print("\n" + text)
        if not args.no_docs:
            write_section("Turn log under concurrency", text)
            print("wrote section 'Turn log under concurrency' of docs/benchmarks.md")
        print(f"total {time.perf_counter() - started:.0f} s")
        return 0
    finally:
        stop_all(mc, fake)
        shutil.rmtree(tmp, ignore_errors=True)
        cleanup_app_exports()


def report(args: argparse.Namespace, command: str, machine: str, results: dict[str, list[dict[str, Any]]],
           b0: dict[str, float], b1: dict[str, float], rss: float) -> str:
    vers = ", ".join(f"{k} {v}" for k, v in versions().items() if k != "litellm")
    base_ms = (b0["ms_per_row"] + b1["ms_per_row"]) / 2
    direct = {lv["n"]: lv for lv in results["direct"]}
    rows = []
    for lv in results["memchat"]:
        d = direct.get(lv["n"])
        ideal = lv["n"] / (0.05 + args.tokens / 30)
        # Write cost per row as the writer sees it: the wall time of the level spent per row is not it;
        # the batch cadence is. One batch per (1 / batches_per_s) seconds serves rows_per_batch rows.
        rows.append([
            lv["n"], f"{lv['rps']:.1f}", f"{d['rps']:.1f}" if d else "—", f"{ideal:.1f}",
            fmt(lv["rec_p50"] * 1e3, 1), fmt(lv["rec_p95"] * 1e3, 1), fmt(lv["rec_p99"] * 1e3, 1),
            fmt(lv["rec_max"] * 1e3, 1), fmt(d["rec_p99"] * 1e3, 2) if d else "—",
            f"{lv['rows']:.0f} / {lv['batches']:.0f}", fmt(lv["rows_per_batch"], 1),
            fmt(lv["rec_p50"] * 1e3 / base_ms, 1), fmt(lv["ttft_p50"] * 1e3, 0), fmt(lv["ttft_p99"] * 1e3, 0),
            f"{lv['cores']:.2f}", f"{lv['foreign_cores']:.2f}", lv["errors"],
        ])
    table = md_table(["streams", "memchat req/s", "direct req/s", "ideal req/s", "record p50 ms", "record p95 ms",
                      "record p99 ms", "record max ms", "direct p99 ms", "rows / batches", "rows per batch",
                      "record p50 ÷ single-row append", "TTFT p50 ms", "TTFT p99 ms", "memchat cores",
                      "other processes, cores", "errors"], rows)
    base = md_table(
        ["baseline (scratch table, same run)", "ms per row", "p50 ms", "p99 ms", "rows/s", "versions created"],
        [[f"{int(b['rows'])} sequential single-row `table.add` ({when})", fmt(b["ms_per_row"], 2), fmt(b["p50_ms"], 2),
          fmt(b["p99_ms"], 2), fmt(b["rows_per_s"], 0), int(b["versions"])] for b, when in ((b0, "before"), (b1, "after"))]
        + [[f"the same {int(b0['rows'])} rows in one `table.add` (before)", fmt(b0["group_ms_per_row"], 3), "—", "—",
            fmt(b0["rows"] / (b0["group_ms"] / 1e3), 0), int(b0["group_versions"])]])
    summary = ""
    if results["memchat"]:
        top = results["memchat"][-1]
        low = results["memchat"][0]
        cap = 1000 / base_ms
        d = direct.get(top["n"])
        summary = (
            f"What it means: alone ({low['n']} stream) a turn waits for exactly one LanceDB append "
            f"(record p50 {fmt(low['rec_p50'] * 1e3, 1)} ms, {fmt(low['rec_p50'] * 1e3 / base_ms, 1)}× the "
            f"{fmt(base_ms, 2)} ms single-row append of the baseline). Under load the writer batches whatever "
            f"queued meanwhile: at {top['n']} streams {top['rows']:.0f} rows went into {top['batches']:.0f} writes "
            f"({fmt(top['rows_per_batch'], 1)} rows per write, one table version each), where one `add` per turn "
            f"would have made {top['rows']:.0f} versions; one {int(b0['rows'])}-row `add` costs "
            f"{fmt(b0['group_ms_per_row'], 3)} ms per row against {fmt(base_ms, 2)} ms for single-row appends. ")
        if top["rps"] < 0.5 * cap:
            summary += (
                f"At {top['n']} streams memchat completed {top['rps']:.1f} turns/s"
                + (f" (direct: {d['rps']:.1f}, ideal {top['n'] / (0.05 + args.tokens / 30):.1f})" if d else "")
                + f", far below the ~{cap:.0f} rows/s even sequential single-row appends sustain here, so the turn "
                f"log is not what limits throughput: memchat is CPU-bound on per-request work (TTFT p50 "
                f"{fmt(top['ttft_p50'] * 1e3, 0)} ms shows requests queueing before their first token; memchat used "
                f"{top['cores']:.2f} cores while other processes took {top['foreign_cores']:.2f}), and the record "
                f"latency (p50 {fmt(top['rec_p50'] * 1e3, 0)} ms, p99 {fmt(top['rec_p99'] * 1e3, 0)} ms) is the writer "
                f"waiting for CPU behind that work, not LanceDB write time.")
        else:
            summary += (
                f"At {top['n']} streams memchat completed {top['rps']:.1f} turns/s, near the ~{cap:.0f} rows/s that "
                f"sequential single-row appends sustain here: without group commit the write path alone would cap "
                f"the proxy there.")
    return f"""Measured {date.today().isoformat()} with

```sh
{command}
```

Versions: {vers}. Machine: {machine}. memchat: 1 uvicorn worker, `MEMCHAT_EMBEDDER={args.embedder}`,
`MEMCHAT_TURNLOG_JOURNAL={"true" if args.turnlog == "journal" else "false"}`, idle
commits disabled for the run. Fake upstream: first token after 50 ms, then 30 tokens/s, {args.tokens} tokens per
reply (~{0.05 + args.tokens / 30:.1f} s). Each level: N closed-loop streams (raw-socket SSE client) started over
{args.stagger:.1f} s, then measured for {args.hold:.0f} s; memchat and the direct-to-fake run alternate at each
level. **Record latency** = arrival of the last content chunk → arrival of `data: [DONE]`, which memchat sends
only after the turn's row is durably in the LanceDB `turns` table (group commit, `app/chat/turnlog.py`);
"direct" is the same without memchat (the fake sends `[DONE]` at once). Rows and batches come from `/metrics`
(they include partial turns of streams cut at the end of a level). "ideal req/s" = N / reply duration.
"other processes, cores" = CPU the rest of the machine used meanwhile (not memchat, the fake or the client):
on a shared 2-core machine that is CPU the proxy could not have. After each level the script waits until
memchat is idle and no upstream stream is open, so no level inherits the previous one's backlog.
Peak RSS of memchat: {rss:.0f} MiB.

{table}

{base}

{summary}
"""


if __name__ == "__main__":
    raise SystemExit(main())
