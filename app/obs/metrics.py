"""memchat's Prometheus metrics, through ``prometheus_client``.

One `Metrics` object per process, owned by the app (built in `app.main`, handed to the services). With
one worker its metrics live in a `CollectorRegistry` of its own; with several (``memchat serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory under the data dir), every worker writes its values to
files there and a scrape, whichever worker takes it, merges them all: one scrape reports the whole server.
Gauges use ``livesum`` (the sum over living workers).

Labels are bounded: a surface, an HTTP status, an outcome, a store operation -- never a namespace, an
organisation or a chat id. Per-request label lookups happen once (`StreamMeter` holds the bound children
for a surface); nothing is looked up per streamed chunk.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SURFACES = ("openai", "personal", "rest", "ws", "web", "ops", "other")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ADDED_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
COMMIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
COUNT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)
SLOW_CALLBACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


T = TypeVar("T")


def timed_store_call(op: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorate a store method: its latency goes to ``memchat_store_call_duration_seconds{op}`` when the
    object has a ``metrics`` attribute that is not None."""
    def decorate(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(method)
        async def timed(self: Any, *args: Any, **kwargs: Any) -> T:
            metrics: Metrics | None = self.metrics
            if metrics is None:
                return await method(self, *args, **kwargs)
            with metrics.store_seconds.labels(op).time():
                return await method(self, *args, **kwargs)
        return timed
    return decorate


def multiprocess_dir() -> str | None:
    """The shared directory when this process is one of several workers, else None."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


class StreamMeter:
    """The per-surface children a chat stream reports to, bound once."""

    __slots__ = ("upstream_ttft", "added_ttft", "chunks", "tokens", "broken")

    def __init__(self, metrics: Metrics, surface: str) -> None:
        self.upstream_ttft = metrics.upstream_ttft.labels(surface)
        self.added_ttft = metrics.added_ttft.labels(surface)
        self.chunks = metrics.chunks.labels(surface)
        self.tokens = metrics.tokens.labels(surface)
        self.broken = metrics.upstream_errors.labels("stream")  # the upstream broke mid-stream

    def finished(self, opened_at: float, first_byte_at: float | None, first_sent_at: float | None, chunks: int,
                 usage: dict[str, Any] | None, broken: bool = False) -> None:
        """Once per stream: TTFTs, chunk and token counts (``first_sent_at``: when the consumer came back
        for the second event, i.e. the first chunk was sent to the client)."""
        if broken:
            self.broken.inc()
        if first_byte_at is not None:
            self.upstream_ttft.observe(first_byte_at - opened_at)
            if first_sent_at is not None:
                self.added_ttft.observe(first_sent_at - first_byte_at)
        if chunks:
            self.chunks.inc(chunks)
        tokens = usage.get("completion_tokens") if usage else None
        if isinstance(tokens, int) and tokens > 0:
            self.tokens.inc(tokens)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiproc_dir = multiprocess_dir()
        # In multiprocess mode the values live in files; the per-process registry is never scraped.
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("memchat_http_requests", "HTTP requests and websocket connections by surface "
                                "and status.", ["surface", "status"], registry=r)
        self.request_seconds = Histogram("memchat_http_request_duration_seconds", "Time from a request's arrival "
                                         "to its last byte (a stream's whole length).", ["surface"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_ttft = Histogram("memchat_upstream_ttft_seconds", "Upstream time to first byte: request "
                                       "sent upstream -> first byte of its stream.", ["surface"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.added_ttft = Histogram("memchat_added_ttft_seconds", "Time to first token added by memchat: first "
                                    "upstream byte -> first byte sent to the client.", ["surface"],
                                    buckets=ADDED_BUCKETS, registry=r)
        self.chunks = Counter("memchat_stream_chunks", "Upstream stream chunks relayed to clients.", ["surface"],
                              registry=r)
        self.tokens = Counter("memchat_stream_completion_tokens", "Completion tokens of relayed streams (from "
                              "the upstream's usage chunk, when it sends one).", ["surface"], registry=r)
        self.upstream_errors = Counter("memchat_upstream_errors", "Upstream failures by the upstream's HTTP "
                                       "status ('timeout', 'connect', 'stream' when there is none).", ["status"],
                                       registry=r)
        self.retrieval_seconds = Histogram("memchat_retrieval_duration_seconds", "Memory retrieval per chat "
                                           "request (when the namespace is not known empty).",
                                           buckets=FAST_BUCKETS, registry=r)
        self.memories_injected = Histogram("memchat_memories_injected", "Memories injected per chat request.",
                                           buckets=COUNT_BUCKETS, registry=r)
        self.store_seconds = Histogram("memchat_store_call_duration_seconds", "LanceDB calls by operation.",
                                       ["op"], buckets=FAST_BUCKETS, registry=r)
        # Commits and the turn log (the names memchat exported before prometheus_client are kept).
        self.commits = Counter("memchat_commits", "Conversation commits by outcome.", ["outcome"], registry=r)
        self.commit_seconds = Histogram("memchat_commit_seconds", "Time to commit a conversation.",
                                        buckets=COMMIT_BUCKETS, registry=r)
        self.commit_lag = Histogram("memchat_commit_lag_seconds", "A conversation's idle deadline -> its commit "
                                    "done (the wait for a commit slot included).", buckets=COMMIT_BUCKETS,
                                    registry=r)
        self.commits_deferred = Counter("memchat_commits_deferred", "New conversations not scheduled because "
                                        "the backlog held its maximum (the sweeper schedules them later).", registry=r)
        self.memories_written = Counter("memchat_memories_written", "Memories written by commits.", registry=r)
        self.turns_written = Counter("memchat_turnlog_rows_written", "Turns written to the durable turn log "
                                     "(journal or table).", registry=r)
        self.turn_batches = Counter("memchat_turnlog_batches_written", "Group-commit writes of the turn log.",
                                    registry=r)
        self.turn_flushes = Counter("memchat_turnlog_flushes", "Batches moved from the turn journal to the "
                                    "turns table.", registry=r)
        self.turns_flushed = Counter("memchat_turnlog_rows_flushed", "Turns moved from the journal to the "
                                     "turns table.", registry=r)
        self.turns_recovered = Counter("memchat_turnlog_recovered", "Journaled turns replayed into the table at "
                                       "start-up.", registry=r)
        gauge: dict[str, Any] = {"registry": r, "multiprocess_mode": "livesum"}
        self.pending = Gauge("memchat_conversations_pending", "Conversations waiting for their idle commit (the "
                             "commit backlog).", **gauge)
        self.in_progress = Gauge("memchat_commits_in_progress", "Due commits started: running or waiting for a "
                                 "commit slot.", **gauge)
        self.running = Gauge("memchat_commits_running", "Commits holding one of the MEMCHAT_COMMIT_CONCURRENCY "
                             "slots.", **gauge)
        self.store_cache_bytes = Gauge("memchat_store_cache_bytes", "Bytes held by LanceDB's metadata and index "
                                       "caches (bounded by MEMCHAT_STORE_*_CACHE_MB; sampled every 30 s).", **gauge)
        self.heap_bytes = Gauge("memchat_heap_bytes", "The C allocator's heap (glibc or jemalloc): bytes in use by "
                                "the program, and bytes it keeps free (sampled every 30 s; app/heap_usage.py).",
                                ["state"], **gauge)
        self.vector_cache_bytes = Gauge("memchat_vector_cache_bytes", "Bytes of namespace vectors held for the "
                                        "dense search leg (bounded by MEMCHAT_VECTOR_CACHE_MB).", **gauge)
        self.vector_cache_loads = Gauge("memchat_vector_cache_loads", "Namespaces read into the vector cache "
                                        "since start (a busy namespace re-read often shows here).", **gauge)
        self.loop_tasks = Gauge("memchat_event_loop_tasks", "Tasks alive on the workers' event loops (a leak "
                                "shows here).", **gauge)
        self.loop_lag = Histogram("memchat_event_loop_lag_seconds", "How late the event loop woke a probe that "
                                  "sleeps 0.25 s (a request path blocking the loop shows here).",
                                  buckets=LAG_BUCKETS, registry=r)
        self.slow_callbacks = Histogram("memchat_event_loop_slow_callbacks_seconds", "Event-loop callbacks that "
                                        "ran longer than MEMCHAT_LOOP_SLOW_CALLBACK_MS (only when it is set), by "
                                        "duration.", buckets=SLOW_CALLBACK_BUCKETS, registry=r)
        self.gc_pause = Histogram("memchat_gc_pause_seconds", "CPython's garbage collections by generation (2 = "
                                  "full) and duration: the thread that allocated waits, the event loop included.",
                                  ["generation"], buckets=GC_BUCKETS, registry=r)
        self.heap_trim_seconds = Histogram("memchat_heap_trim_seconds", "malloc_trim calls that handed the C "
                                           "heap's free pages back to the OS (after MEMCHAT_MALLOC_TRIM_IDLE "
                                           "quiet seconds, in a worker thread), by duration.",
                                           buckets=FAST_BUCKETS, registry=r)
        self.heap_released = Counter("memchat_heap_released_bytes", "Resident memory those calls gave back.",
                                     registry=r)
        for outcome in ("done", "failed"):
            self.commits.labels(outcome)
        self._gc_pause_by_generation = [self.gc_pause.labels(str(generation)) for generation in range(3)]
        self._meters: dict[str, StreamMeter] = {}
        # This process's HTTP requests (plain counts, read by the heap trimmer to tell a quiet process).
        self.requests_started = 0
        self.requests_in_flight = 0

    def stream_meter(self, surface: str) -> StreamMeter:
        meter = self._meters.get(surface)
        if meter is None:
            meter = self._meters[surface] = StreamMeter(self, surface)
        return meter

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        self._gc_pause_by_generation[generation].observe(seconds)

    def upstream_error(self, status: int | str) -> None:
        self.upstream_errors.labels(str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text: this process's registry, or every worker's files merged."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        _forget_dead_workers(self.multiproc_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST


_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def _forget_dead_workers(path: str) -> None:
    """Drop the live gauges of workers that are gone (uvicorn replaced them), so ``livesum`` sums the living."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:
            pass
