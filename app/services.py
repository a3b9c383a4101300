"""The container: the long-lived parts of a running memchat, built in the app lifespan and kept on
``app.state``. It wires the layers together and owns background work; the behaviour is in the services
(`app.chat.service`, `app.memory.service`) and below."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from lancedb.db import AsyncConnection

from app.auth import KeyRing
from app.chat.events import EventHub
from app.chat.service import ChatService
from app.commits.committer import ChatKey, Committer
from app.commits.log import CommitLog
from app.commits.scheduler import CommitScheduler
from app.commits.sweeper import CommitSweeper
from app.config import Settings
from app.heap import HeapTrimmer, fix_mmap_threshold, jemalloc_active
from app.heap_usage import heap_usage
from app.llm.backend import ChatBackend
from app.llm.offline import OfflineResponder
from app.llm.upstream import UpstreamClient
from app.memory.bert_ops import limit_blas_threads
from app.memory.embed import Embedder, EmbedderUnavailable
from app.memory.embedders import build_embedder
from app.memory.entities import EntityExtractor
from app.memory.entity_marks import EntityMarks
from app.memory.extractors import build_extractor
from app.memory.models import Memory
from app.memory.retrieval import MemoryRetriever
from app.memory.service import MemoryService
from app.memory.store import MemoryStore
from app.memory.versions import VersionLog
from app.obs.gc_pauses import GcPauses
from app.obs.metrics import Metrics
from app.storage.compaction import Compactor
from app.storage.connection import cache_session, connect
from app.turns.conversations import Conversations
from app.turns.turnlog import TurnLog

log = logging.getLogger("memchat.services")

GAUGE_INTERVAL = 1.0  # seconds between gauge samples (with several workers, how stale another's may be)
# seconds between samples of LanceDB's cache size: reading it walks the caches, tens of ms with the GIL held
# (measured: a quarter of a worker's CPU in a commit drain when every scrape read it), so no scrape does
STORE_CACHE_SAMPLE = 30.0
LOOP_PROBE_PERIOD = 0.25  # seconds between event-loop lag probes
LONG_GC_PAUSE = 0.05  # a garbage collection longer than this is also logged (it held a request step that long)
FORGET_GRACE = 0.5  # seconds after one journal flush interval before a forget's second pass


def _embedder(settings: Settings, backend: ChatBackend) -> Embedder:
    kind = settings.memory.embedder
    client = backend.sdk if isinstance(backend, UpstreamClient) else None
    if kind == "openai" and client is None:
        log.warning("MEMCHAT_EMBEDDER=openai needs an upstream; using full-text search only")
        kind = "none"
    try:
        return build_embedder(kind, openai_client=client,
                              model=settings.memory.embed_model if kind == "openai" else None,
                              isolation=settings.memory.embed_isolation,
                              runtime=settings.memory.embed_runtime,
                              query_precision=settings.memory.embed_query_precision)
    except EmbedderUnavailable as exc:
        log.warning("local embedder unavailable (%s); using full-text search only", exc)
        return build_embedder("none")


def _backend(settings: Settings) -> ChatBackend:
    if settings.upstream.offline:
        log.warning(
            "OFFLINE MODE: no upstream model configured (set MEMCHAT_UPSTREAM_BASE_URL and/or "
            "MEMCHAT_UPSTREAM_API_KEY); replies come from the built-in responder 'memchat-offline'"
        )
        return OfflineResponder()
    log.info("upstream: %s", settings.upstream.effective_base_url)
    return UpstreamClient(settings.upstream)


@dataclass
class Services:
    settings: Settings
    keyring: KeyRing
    db: AsyncConnection
    backend: ChatBackend
    store: MemoryStore
    turnlog: TurnLog
    commits: CommitLog
    conversations: Conversations
    scheduler: CommitScheduler
    sweeper: CommitSweeper
    compactor: Compactor
    chat: ChatService
    memories: MemoryService
    events: EventHub
    metrics: Metrics
    heap_trimmer: HeapTrimmer
    store_cache: Any = None  # the connection's lancedb.Session (its caches' size is a gauge)
    gc_pauses: GcPauses = field(default_factory=GcPauses)  # collections timed; drained by the loop-lag probe
    task_group: TaskGroup | None = None

    @classmethod
    async def start(cls, settings: Settings, stack: AsyncExitStack, *, metrics: Metrics | None = None) -> Services:
        settings.store.data_dir.mkdir(parents=True, exist_ok=True)
        metrics = metrics or Metrics()
        keyring = KeyRing(settings.store.data_dir / "keys.json", settings.auth.static_keys)
        backend = _backend(settings)
        if isinstance(backend, UpstreamClient):
            backend.metrics = metrics
        stack.push_async_callback(backend.aclose)

        limit_blas_threads(1)  # the vector cache's products run on the event loop (`bert_ops.limit_blas_threads`)
        fix_mmap_threshold(settings.server.malloc_mmap_threshold_kb)  # opt-in (`app.heap`)
        if jemalloc_active():
            log.info("heap: malloc is jemalloc's; glibc's trimming and mmap threshold are not used")
        elif settings.server.allocator == "auto":
            log.info("heap: malloc is the system's (MEMCHAT_ALLOCATOR=auto found no libjemalloc.so.2 to preload, "
                     "or LD_PRELOAD names another allocator); on glibc, install libjemalloc2 for a heap that "
                     "does not fragment (README, \"Memory use\")")
        embedder = _embedder(settings, backend)
        stack.push_async_callback(embedder.aclose)
        store_cache = cache_session(settings.store.metadata_cache_mb, settings.store.index_cache_mb)
        db = await connect(settings.store.memory_uri, settings.store.storage_options or None, session=store_cache)
        stack.callback(db.close)
        store = await MemoryStore.open_on(db, embedder)
        store.presence.empty_ttl = settings.memory.empty_namespace_ttl
        if store.dim > 0:
            store.vectors.max_bytes = settings.memory.vector_cache_mb * 1024 * 1024
            store.vectors.ttl = settings.memory.vector_cache_ttl
        store.metrics = metrics
        stack.push_async_callback(store.close)
        turns = settings.turnlog
        journal, why = turns.journal_for(settings.store)
        log.info("turn log: %s (%s)", "local journal, flushed to the store in batches" if journal
                 else "each turn written to the store before the reply ends", why)
        turnlog = await TurnLog.open(db, settings.store.data_dir / "turns-journal" if journal else None,
                                     fsync=turns.fsync, flush_interval=turns.flush_interval,
                                     flush_rows=turns.flush_rows, metrics=metrics)
        commits = await CommitLog.open(db, lease=timedelta(seconds=settings.memory.commit_lease))
        model_client = None if backend.offline else backend
        events = EventHub()
        extractor = build_extractor(settings.memory.extractor, client=model_client,  # type: ignore[arg-type]
                                    model=settings.memory.memory_model, offline=backend.offline)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

        def committed(key: ChatKey, written: list[Memory]) -> None:
            events.publish(key.org_id, key.namespace,
                           {"type": "memory_committed", "chat_id": key.chat_id, "memories": written})

        committer = Committer(turnlog, commits, store, extractor, owner=owner,
                              memory_model=settings.memory.memory_model, on_committed=committed,
                              write_batch=settings.memory.commit_write_batch)
        scheduler = CommitScheduler(committer, max_concurrent=settings.memory.commit_concurrency, metrics=metrics)
        sweeper = CommitSweeper(scheduler, turnlog, commits, interval=settings.memory.commit_sweep_interval,
                                grace=settings.memory.commit_takeover_grace)
        compactor = Compactor({"memories": store.table, "turns": turnlog.table, "commits": commits.table},
                              after_writes=settings.store.compact_after_writes,
                              keep_versions=timedelta(seconds=settings.store.keep_versions))
        conversations = Conversations(turnlog, default_commit_after=settings.memory.commit_after,
                                      on_recorded=scheduler.touch_turn)
        memories = MemoryService(
            store, await VersionLog.open(db), await EntityMarks.open(db),
            EntityExtractor(model_client, settings.memory.memory_model or settings.server.default_model),  # type: ignore[arg-type]
            conversation_data={"turns": conversations, "commits": commits},
            forget_again_after=turns.flush_interval + FORGET_GRACE if journal else None)
        retriever = MemoryRetriever(store, top_k=settings.memory.top_k, min_score=settings.memory.min_score,
                                    token_budget=settings.memory.token_budget)
        chat = ChatService(backend, conversations, retriever, default_model=settings.server.default_model,
                           metrics=metrics)
        def trimmed(seconds: float, released: int) -> None:
            metrics.heap_trim_seconds.observe(seconds)
            metrics.heap_released.inc(released)

        def activity() -> tuple[int, int] | None:
            if metrics.requests_in_flight or scheduler.committing:
                return None
            return metrics.requests_started, scheduler.pending

        heap_trimmer = HeapTrimmer(settings.server.malloc_trim_idle, activity, observe=trimmed)
        log.info("memory: store %s, embedder %s%s, extractor %s", settings.store.memory_uri, embedder.name,
                 f" ({embedder.runtime}, {embedder.query_precision} queries)" if getattr(embedder, "runtime", None)
                 else "", extractor.name)
        return cls(settings=settings, keyring=keyring, db=db, backend=backend, store=store, turnlog=turnlog,
                   commits=commits, conversations=conversations, scheduler=scheduler, sweeper=sweeper,
                   compactor=compactor, chat=chat,
                   memories=memories, events=events, metrics=metrics, heap_trimmer=heap_trimmer,
                   store_cache=store_cache)

    async def run_background(self, task_group: TaskGroup) -> None:
        """Start the background work in the lifespan's task group."""
        self.task_group = task_group
        self.memories.task_group = task_group
        await task_group.start(self.turnlog.run_writer)
        await task_group.start(self.scheduler.run)
        await task_group.start(self.sweeper.run)
        await task_group.start(self.compactor.run)
        await task_group.start(self.heap_trimmer.run)
        await task_group.start(self._timed_collections)  # before the start-up freeze: its full pass is timed
        task_group.start_soon(self._maintenance_loop)
        task_group.start_soon(self._loop_lag_probe)
        task_group.start_soon(self._gauge_loop)
        warmup = getattr(self.store.embedder, "warmup", None)
        if warmup is not None:  # load the local model off the request path
            task_group.start_soon(warmup)

    def sample_gauges(self) -> None:
        """Set this process's gauges (a scrape does it first; `_gauge_loop` keeps other workers' fresh)."""
        m = self.metrics
        m.pending.set(self.scheduler.pending)
        m.in_progress.set(self.scheduler.committing)
        m.running.set(self.scheduler.committing_now)
        m.loop_tasks.set(len(asyncio.all_tasks()))
        m.vector_cache_bytes.set(self.store.vectors.nbytes)
        m.vector_cache_loads.set(self.store.vectors.loads)

    async def sample_store_cache(self) -> None:
        """Set the LanceDB cache-size gauge (`STORE_CACHE_SAMPLE`), read in a worker thread."""
        session = self.store_cache
        if session is not None:
            self.metrics.store_cache_bytes.set(await anyio.to_thread.run_sync(lambda: session.size_bytes))

    async def sample_heap(self) -> None:
        """Set the C heap gauge (in use / kept free by the allocator), read in a worker thread."""
        usage = await anyio.to_thread.run_sync(heap_usage)
        if usage is not None:
            self.metrics.heap_bytes.labels("in_use").set(usage.in_use)
            self.metrics.heap_bytes.labels("free").set(usage.free)

    async def _gauge_loop(self) -> None:
        next_cache_sample = 0.0
        while True:
            self.sample_gauges()
            if time.monotonic() >= next_cache_sample:
                try:  # a failed sample must not end the task group (and with it the commits)
                    await self.sample_store_cache()
                    await self.sample_heap()
                except Exception:
                    log.exception("sampling the store cache / heap gauges failed; will retry")
                next_cache_sample = time.monotonic() + STORE_CACHE_SAMPLE
            await anyio.sleep(GAUGE_INTERVAL)

    async def maintain_once(self) -> None:
        await self.store.maintain()
        await self.turnlog.maintain()
        await self.commits.maintain()
        await self.memories.versions.maintain()
        await self.memories.marks.maintain()

    async def _timed_collections(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Time the garbage collector's passes while the app runs (the hook is removed when this is cancelled)."""
        remove = self.gc_pauses.install()
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            remove()

    def _observe_gc_pause(self, generation: int, seconds: float) -> None:
        self.metrics.observe_gc_pause(generation, seconds)
        if seconds > LONG_GC_PAUSE:
            log.warning("garbage collection of generation %d took %.3f s (the thread that allocated waited)",
                        generation, seconds)

    async def _loop_lag_probe(self, period: float = LOOP_PROBE_PERIOD) -> None:
        """Sleep ``period`` again and again; how late each wake-up comes is the event loop's lag: a
        callback that holds the loop for 50 ms shows as a 50 ms observation."""
        while True:
            started = anyio.current_time()
            await anyio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, anyio.current_time() - started - period))
            self.gc_pauses.drain(self._observe_gc_pause)

    async def _maintenance_loop(self) -> None:
        interval = self.settings.memory.maintenance_interval
        await anyio.sleep(min(5.0, interval))
        while True:
            try:
                await self.maintain_once()
            except Exception:
                log.exception("index maintenance failed; will retry")
            await anyio.sleep(interval)

    async def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"upstream": await self.backend.ping()}
        try:
            with anyio.fail_after(5):
                await self.store.count("__readyz__", "")
            checks["store"] = True
        except Exception:
            log.exception("readiness: store check failed")
            checks["store"] = False
        return checks
