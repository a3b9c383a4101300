"""The long-lived parts of a running memchat, built in the app lifespan and kept on ``app.state``."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import lancedb
from anyio.abc import TaskGroup

from app.auth import KeyRing
from app.chat.conversations import Conversations
from app.chat.events import EventHub
from app.chat.pipeline import ChatPipeline
from app.chat.turnlog import TurnLog
from app.config import Settings
from app.llm.backend import ChatBackend
from app.llm.offline import OfflineResponder
from app.llm.upstream import UpstreamClient
from app.memory.commitlog import CommitLog
from app.memory.committer import ChatKey, Committer
from app.memory.embed import Embedder, EmbedderUnavailable, build_embedder
from app.memory.entities import EntityExtractor, EntityMarks
from app.memory.extract import build_extractor
from app.memory.models import Memory
from app.memory.retrieval import MemoryRetriever
from app.memory.scheduler import CommitScheduler
from app.memory.serialize import memory_json
from app.memory.store import MemoryStore
from app.memory.versions import VersionLog

log = logging.getLogger("memchat")

FORGET_GRACE = 0.5  # seconds after one journal flush interval before a forget's second pass


def _embedder(settings: Settings, backend: ChatBackend) -> Embedder:
    kind = settings.memory.embedder
    client = backend.sdk if isinstance(backend, UpstreamClient) else None
    if kind == "openai" and client is None:
        log.warning("MEMCHAT_EMBEDDER=openai needs an upstream; using full-text search only")
        kind = "none"
    try:
        return build_embedder(kind, openai_client=client,
                              model=settings.memory.embed_model if kind == "openai" else None)
    except EmbedderUnavailable as exc:
        log.warning("local embedder unavailable (%s); using full-text search only", exc)
        return build_embedder("none")


@dataclass
class Services:
    settings: Settings
    keyring: KeyRing
    backend: ChatBackend
    store: MemoryStore
    turnlog: TurnLog
    commits: CommitLog
    conversations: Conversations
    scheduler: CommitScheduler
    pipeline: ChatPipeline
    events: EventHub
    versions: VersionLog  # these three: memory REST API (PATCH history, entity backfill)
    entity_marks: EntityMarks
    entity_extractor: EntityExtractor
    task_group: TaskGroup | None = None

    @classmethod
    async def start(cls, settings: Settings, stack: AsyncExitStack) -> Services:
        settings.store.data_dir.mkdir(parents=True, exist_ok=True)
        keyring = KeyRing(settings.store.data_dir / "keys.json", settings.auth.static_keys)
        backend: ChatBackend
        if settings.upstream.offline:
            log.warning(
                "OFFLINE MODE: no upstream model configured (set MEMCHAT_UPSTREAM_BASE_URL and/or "
                "MEMCHAT_UPSTREAM_API_KEY); replies come from the built-in responder 'memchat-offline'"
            )
            backend = OfflineResponder()
        else:
            backend = UpstreamClient(settings.upstream)
            log.info("upstream: %s", settings.upstream.effective_base_url)
        stack.push_async_callback(backend.aclose)

        uri = settings.store.memory_uri
        options = settings.store.storage_options or None
        embedder = _embedder(settings, backend)
        stack.push_async_callback(embedder.aclose)
        resolve_dim = getattr(embedder, "resolve_dim", None)
        if resolve_dim is not None and not embedder.dim:  # the upstream's embedding size, before the schema
            await resolve_dim()
        store = await MemoryStore.open(uri, embedder, options)
        store.presence.empty_ttl = settings.memory.empty_namespace_ttl
        if store.dim > 0:
            store.vectors.max_bytes = settings.memory.vector_cache_mb * 1024 * 1024
            store.vectors.ttl = settings.memory.vector_cache_ttl
        stack.push_async_callback(store.close)
        db = await lancedb.connect_async(uri, storage_options=options, read_consistency_interval=timedelta(0))
        turns = settings.turnlog
        turnlog = await TurnLog.open(db, settings.store.data_dir / "turns-journal" if turns.journal else None,
                                     fsync=turns.fsync, flush_interval=turns.flush_interval,
                                     flush_rows=turns.flush_rows)
        commits = await CommitLog.open(db, lease=timedelta(seconds=settings.memory.commit_lease))
        versions, entity_marks = await VersionLog.open(db), await EntityMarks.open(db)
        entity_extractor = EntityExtractor(None if backend.offline else backend,  # type: ignore[arg-type]
                                           settings.memory.memory_model or settings.server.default_model)

        events = EventHub()
        extractor = build_extractor(settings.memory.extractor, client=backend if not backend.offline else None,
                                    model=settings.memory.memory_model, offline=backend.offline)
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

        def committed(key: ChatKey, memories: list[Memory]) -> None:
            events.publish(key.org_id, key.namespace, {"type": "memory_committed", "chat_id": key.chat_id,
                                                       "memories": [memory_json(m) for m in memories]})

        committer = Committer(turnlog, commits, store, extractor, owner=owner,
                              memory_model=settings.memory.memory_model, on_committed=committed)
        scheduler = CommitScheduler(committer, max_concurrent=settings.memory.commit_concurrency)
        conversations = Conversations(turnlog, default_commit_after=settings.memory.commit_after,
                                      on_recorded=scheduler.touch_turn)
        retriever = MemoryRetriever(store, top_k=settings.memory.top_k, min_score=settings.memory.min_score,
                                    token_budget=settings.memory.token_budget)
        pipeline = ChatPipeline(backend, retriever, conversations)
        log.info("memory: store %s, embedder %s, extractor %s", uri, embedder.name, extractor.name)
        return cls(settings=settings, keyring=keyring, backend=backend, store=store, turnlog=turnlog,
                   commits=commits, conversations=conversations, scheduler=scheduler, pipeline=pipeline,
                   events=events, versions=versions, entity_marks=entity_marks,
                   entity_extractor=entity_extractor)

    async def run_background(self, task_group: TaskGroup) -> None:
        """Start the background work in the lifespan's task group."""
        self.task_group = task_group
        await task_group.start(self.turnlog.run_writer)
        await task_group.start(self.scheduler.run)
        await self.scheduler.recover(self.turnlog, self.commits)
        task_group.start_soon(self._maintenance_loop)
        warmup = getattr(self.store.embedder, "warmup", None)
        if warmup is not None:  # load the local model off the request path
            task_group.start_soon(warmup)

    async def maintain_once(self) -> None:
        await self.store.maintain()
        await self.turnlog.maintain()
        await self.commits.maintain()
        await self.versions.maintain()
        await self.entity_marks.maintain()

    async def _maintenance_loop(self) -> None:
        interval = self.settings.memory.maintenance_interval
        await anyio.sleep(min(5.0, interval))
        while True:
            try:
                await self.maintain_once()
            except Exception:
                log.exception("index maintenance failed; will retry")
            await anyio.sleep(interval)

    async def forget_tenant(self, org_id: str, namespace: str) -> dict[str, int]:
        """Forget a user: every memory, earlier version and conversation of the namespace. Runs again in
        the background one journal flush later (see `_forget_again`). Returns the first pass's counts."""
        counts = await self._forget_once(org_id, namespace)
        if self.task_group is not None and self.settings.turnlog.journal:
            self.task_group.start_soon(self._forget_again, org_id, namespace)
        return counts

    async def _forget_once(self, org_id: str, namespace: str) -> dict[str, int]:
        # Conversations first, so an idle commit cannot rebuild memories from them meanwhile.
        turns = await self.turnlog.delete_tenant(org_id, namespace)
        commits = await self.commits.delete_tenant(org_id, namespace)
        memories = await self.store.delete_namespace(org_id, namespace)
        versions = await self.versions.delete_tenant(org_id, namespace)
        await self.entity_marks.delete_tenant(org_id, namespace)
        return {"memories": memories, "versions": versions, "turns": turns, "commits": commits}

    async def _forget_again(self, org_id: str, namespace: str) -> None:
        """A turn another worker journaled just before the forget reaches the table with that worker's next
        flush (and an idle commit may have turned it into memories): one flush interval later, everything
        of the namespace is deleted once more. (A conversation started in that interval goes too.)"""
        await anyio.sleep(self.settings.turnlog.flush_interval + FORGET_GRACE)
        try:
            counts = await self._forget_once(org_id, namespace)
        except Exception:
            log.exception("second pass of forgetting a namespace failed; run the forget again")
            return
        if any(counts.values()):
            log.info("forget, second pass: removed %s", counts)

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
