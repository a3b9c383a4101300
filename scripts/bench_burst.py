"""A burst of new users: N streams started at once, each in a namespace never seen before, against memchat
and the bare Litestar + httpx2 passthrough (the floor) in the same run.

The fake upstream answers slowly, as a model does (first token after 100 ms, then ``--tokens`` tokens
100 ms apart), so the streams overlap fully. Per arm and level: errors, TTFT p50/p99, the p99 gap between
content chunks, the server's CPU, and -- for memchat -- its event-loop lag during the burst (the
``memchat_event_loop_lag_seconds`` histogram: observations over 50 ms). Levels run floor, memchat,
floor, memchat, ... so both meet the same machine. The probe says the loop was late, not whether one callback
held it or many short ones queued; ``--slow-callbacks 50`` adds an arm whose loop times every callback
(``MEMCHAT_LOOP_SLOW_CALLBACK_MS``, asyncio's debug mode) and counts those over 50 ms. Every memchat arm
also reports the garbage collector's full passes during the burst and the longest (``memchat_gc_pause_seconds``,
generation 2): a pass runs inside whichever request step allocated, so a long one is a long callback.

    .venv/bin/python scripts/bench_burst.py                     # 100, 300, 500 streams
    .venv/bin/python scripts/bench_burst.py --levels 500 --workers 2
    .venv/bin/python scripts/bench_burst.py --quick             # 50, 100
    .venv/bin/python scripts/bench_burst.py --slow-callbacks 50 # + the arm that times each callback
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import httpx2
from bench_common import (  # noqa: I001 (scripts import their siblings by name)
    API_KEY,
    CpuMeter,
    FloorProxy,
    Memchat,
    RawClient,
    chat_body,
    load_now,
    machine_line,
    md_table,
    memchat_env,
    pct,
    stop_all,
    system_busy_seconds,
    write_section,
)

from app.testkit import FakeUpstream
from app.testkit.sse import StreamResult

PATH = "/v1/chat/completions"
DEBUG_NOTE = (" `memchat-debug` is memchat with `MEMCHAT_LOOP_SLOW_CALLBACK_MS` set: the event loop in debug "
              "mode times every callback it runs and counts those over the threshold (debug mode records a "
              "traceback per scheduled callback, so this arm runs slower than `memchat`).")


async def burst(host: str, port: int, path_of, n: int, timeout: float) -> list[StreamResult]:
    """``n`` connections, each one streaming request, all sent at once; ``path_of(i)`` gives its path."""
    results = [StreamResult(start=0.0) for _ in range(n)]
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}

    async def one(i: int) -> None:
        client = RawClient(host, port, headers)
        try:
            results[i].start = time.perf_counter()
            await client.stream(path_of(i), chat_body(f"hello, I am new user {i}"), timeout=timeout, res=results[i])
        except Exception as exc:  # noqa: BLE001 - counted as an error of this stream
            results[i].error = results[i].error or repr(exc)
        finally:
            await client.close()

    await asyncio.gather(*(one(i) for i in range(n)))
    return results


def lag_over(url: str, threshold: float = 0.05) -> tuple[float, float]:
    """(observations of the loop-lag probe so far, of which over ``threshold`` seconds)."""
    families = text_string_to_metric_families(httpx2.get(f"{url}/metrics", timeout=30).text)
    lag = next(f for f in families if f.name == "memchat_event_loop_lag_seconds")
    total = next(s.value for s in lag.samples if s.name.endswith("_count"))
    under = max((s.value for s in lag.samples if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
                 and float(s.labels["le"]) <= threshold), default=0.0)
    return total, total - under


def histogram(url: str, family: str, **labels: str) -> tuple[float, dict[float, float]]:
    """(observations of a histogram so far, cumulative bucket counts by upper bound); ``labels`` pick a child."""
    families = text_string_to_metric_families(httpx2.get(f"{url}/metrics", timeout=30).text)
    hist = next(f for f in families if f.name == family)
    mine = [s for s in hist.samples if all(s.labels.get(k) == v for k, v in labels.items())]
    total = next(s.value for s in mine if s.name.endswith("_count"))
    buckets = {float(s.labels["le"]): s.value for s in mine if s.name.endswith("_bucket")}
    return total, buckets


def slow_callbacks(url: str) -> tuple[float, dict[float, float]]:
    """The slow-callback report's histogram (see `histogram`)."""
    return histogram(url, "memchat_event_loop_slow_callbacks_seconds")


def full_collections(url: str) -> tuple[float, dict[float, float]]:
    """The garbage collector's full (generation 2) passes (see `histogram`)."""
    return histogram(url, "memchat_gc_pause_seconds", generation="2")


def slow_note(before: tuple[float, dict[float, float]], after: tuple[float, dict[float, float]]) -> str:
    """"N (longest ≤ X ms)" for the observations counted between two scrapes of a histogram."""
    n = int(after[0] - before[0])
    if n == 0:
        return "0"
    longest = min(le for le, c in after[1].items() if c - before[1].get(le, 0.0) >= n)
    if longest == float("inf"):
        return f"{n} (longest > {max(le for le in after[1] if le != float('inf')) * 1000:.0f} ms)"
    return f"{n} (longest ≤ {longest * 1000:g} ms)"


def wait_quiet(limit: float = 90.0, cores: float = 0.15) -> float:
    """Wait until the machine is idle for a second (the servers' start-up work -- the embedding model's worker
    building its session -- must not land in the first level); returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        busy = system_busy_seconds()
        time.sleep(1.0)
        if system_busy_seconds() - busy < cores:
            break
    return time.perf_counter() - t0


def summarise(results: list[StreamResult]) -> dict[str, float]:
    ok = [r for r in results if r.ok]
    gaps = [g for r in ok for g in r.gaps()]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    return {"errors": len(results) - len(ok), "ttft50": pct(ttfts, 50) * 1000, "ttft99": pct(ttfts, 99) * 1000,
            "gap99": pct(gaps, 99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="100,300,500")
    parser.add_argument("--tokens", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--aiohttp", action="store_true", help="also memchat with MEMCHAT_UPSTREAM_HTTP_CLIENT=aiohttp "
                        "(the openai SDK's aiohttp transport; needs the openai[aiohttp] extra)")
    parser.add_argument("--slow-callbacks", type=float, default=0.0, metavar="MS",
                        help="also memchat with MEMCHAT_LOOP_SLOW_CALLBACK_MS=MS (asyncio's debug mode times every "
                        "callback; slower, so a separate arm) and count its callbacks over MS")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    levels = [50, 100] if args.quick else [int(x) for x in args.levels.split(",")]
    load_before = load_now()
    tmp = Path(tempfile.mkdtemp(prefix="memchat-burst-"))
    fake = FakeUpstream("--tokens", str(args.tokens), "--no-record").start()
    fake.set_config(tokens=args.tokens, first_token_delay=0.1, token_delay=0.1)
    floor = FloorProxy(fake.base_url).start()
    mc = Memchat(tmp / "data", env=memchat_env(fake.base_url, "local"), workers=args.workers).start()
    arms = [("floor", floor), ("memchat", mc)]
    if args.aiohttp:
        arms.append(("memchat-aiohttp", Memchat(tmp / "data-aiohttp", workers=args.workers, env=memchat_env(
            fake.base_url, "local", MEMCHAT_UPSTREAM_HTTP_CLIENT="aiohttp")).start()))
    if args.slow_callbacks > 0:
        arms.append(("memchat-debug", Memchat(tmp / "data-debug", workers=args.workers, env=memchat_env(
            fake.base_url, "local", MEMCHAT_LOOP_SLOW_CALLBACK_MS=f"{args.slow_callbacks:g}")).start()))
    rows = []
    print(f"waited {wait_quiet():.0f} s for the servers' start-up work", flush=True)
    try:
        for n in levels:
            for name, server in arms:
                meter = CpuMeter(server.pid)
                lag0 = lag_over(server.url) if name != "floor" else (0.0, 0.0)
                slow0 = slow_callbacks(server.url) if name == "memchat-debug" else None
                full0 = full_collections(server.url) if name != "floor" else None
                run = uuid.uuid4().hex[:6]
                path_of = (lambda i: PATH) if name == "floor" else (
                    lambda i, run=run: f"/v1/memory/chat/completions?namespace=new-{run}-{i}")
                results = asyncio.run(burst("127.0.0.1", server.port, path_of, n, timeout=120))
                cpu = meter.stop()
                s = summarise(results)
                lag = lag_over(server.url) if name != "floor" else (0.0, 0.0)
                rows.append([n, name, int(s["errors"]), f"{s['ttft50']:.0f}", f"{s['ttft99']:.0f}", f"{s['gap99']:.0f}",
                             f"{sum(cpu['procs'].values()):.1f}", f"{cpu['foreign_cores']:.2f}",
                             "—" if name == "floor" else f"{int(lag[1] - lag0[1])} of {int(lag[0] - lag0[0])}",
                             "—" if full0 is None else slow_note(full0, full_collections(server.url)),
                             "—" if slow0 is None else slow_note(slow0, slow_callbacks(server.url))])
                print(" | ".join(str(c) for c in rows[-1]), flush=True)
                time.sleep(2)
    finally:
        # What the debug arm's loop reported (asyncio's "Executing <callback> took N seconds" warnings), so that
        # a callback over the threshold is named, not only counted; read before the stop removes the log.
        reported = [short(line.strip()) for name, server in arms if name == "memchat-debug"
                    for line in server.log_text().splitlines()
                    if ("Executing" in line or "garbage collection" in line) and "took" in line]
        stop_all(*(server for _, server in reversed(arms)), fake)
    table = md_table(["streams", "arm", "errors", "TTFT p50 ms", "TTFT p99 ms", "p99 gap ms", "server CPU s",
                      "other processes, cores", "loop-lag probes > 50 ms", "full GC passes",
                      f"callbacks > {args.slow_callbacks:g} ms" if args.slow_callbacks > 0 else "slow callbacks"], rows)
    body = (f"```\n.venv/bin/python scripts/bench_burst.py {'--quick' if args.quick else '--levels ' + args.levels}"
            f"{' --workers ' + str(args.workers) if args.workers > 1 else ''}{' --aiohttp' if args.aiohttp else ''}"
            f"{f' --slow-callbacks {args.slow_callbacks:g}' if args.slow_callbacks > 0 else ''}\n```\n\n{machine_line()}; load average "
            f"before {load_before}, after {load_now()}. Upstream: first token after 100 ms, then {args.tokens} tokens "
            f"100 ms apart. Each memchat stream is a new namespace; memchat has {args.workers} worker(s)."
            f"{DEBUG_NOTE if args.slow_callbacks > 0 else ''}\n\n{table}\n")
    if args.slow_callbacks > 0:
        body += (f"\nCallbacks the debug arm reported over {args.slow_callbacks:g} ms, and its garbage collections "
                 f"over 50 ms ({len(reported)}):\n\n"
                 + "".join(f"* `{line}`\n" for line in reported[:10]))
    print(body)
    if not args.no_docs:
        write_section("Burst of new users", body)


def short(line: str, keep: int = 260) -> str:
    """A long log line cut in its middle, so that both the callback and "took N seconds" stay."""
    return line if len(line) <= 2 * keep else f"{line[:keep]} … {line[-keep:]}"


if __name__ == "__main__":
    main()
