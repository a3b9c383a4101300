"""App factory and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from app.api.errors import handle_exception
from app.api.health import healthz, readyz
from app.api.memories import memory_router
from app.api.memory_conversations import conversations_router
from app.api.metrics import metrics
from app.api.personal import personal_router
from app.api.openai import openai_router
from app.api.web import web_router
from app.api.ws import chat_socket
from app.config import Settings
from app.services import Services

MAX_BODY_BYTES = 4 * 1024 * 1024


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await Services.start(settings, stack)
            app.state.services = services
            async with anyio.create_task_group() as task_group:
                await services.run_background(task_group)
                try:
                    yield
                finally:
                    task_group.cancel_scope.cancel()

    return Litestar(
        route_handlers=[openai_router, memory_router, conversations_router, personal_router, healthz, readyz, metrics, web_router,
                        chat_socket],
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(title="memchat", version="0.1.0", path="/schema"),
        debug=False,
        logging_config=None,
    )


def create_app_from_env() -> Litestar:
    """uvicorn factory entry point (``app.main:create_app_from_env``): settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The HTTP clients log every request at INFO: one line per chat turn would flood the log (and cost
    # CPU on the request path). Their warnings and errors still show.
    for noisy in ("httpx2", "httpcore2", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return create_app(Settings.from_env())
