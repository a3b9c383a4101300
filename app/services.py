"""The long-lived parts of a running memchat, built in the app lifespan and kept on ``app.state``."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from app.auth import KeyRing
from app.chat.pipeline import ChatPipeline
from app.config import Settings
from app.llm.backend import ChatBackend
from app.llm.offline import OfflineResponder
from app.llm.upstream import UpstreamClient

log = logging.getLogger("memchat")


def key_file_path(settings: Settings) -> anyio.Path:
    return anyio.Path(settings.store.data_dir / "keys.json")


@dataclass
class Services:
    settings: Settings
    keyring: KeyRing
    backend: ChatBackend
    pipeline: ChatPipeline
    task_group: TaskGroup | None = None
    extras: dict[str, object] = field(default_factory=dict)

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
        pipeline = ChatPipeline(backend)
        return cls(settings=settings, keyring=keyring, backend=backend, pipeline=pipeline)

    async def readiness(self) -> dict[str, bool]:
        return {"upstream": await self.backend.ping()}
