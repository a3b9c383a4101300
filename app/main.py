"""App factory and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from litestar import Litestar
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from app.api.errors import handle_exception
from app.api.health import healthz, readyz
from app.api.memories import memory_router, shared_memory_router
from app.api.memory_conversations import conversations_router
from app.api.metrics import metrics
from app.api.observe import Observe
from app.api.personal import personal_router
from app.api.openai import openai_router
from app.api.web import web_router
from app.api.ws import chat_socket
from app.config import ConfigError, Settings
from app.heap import freeze_startup_objects
from app.obs.logs import configure_logging
from app.obs.metrics import Metrics
from app.obs.slow_callbacks import watch_slow_callbacks
from app.services import Services

log = logging.getLogger("memchat.main")
MAX_BODY_BYTES = 4 * 1024 * 1024


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await Services.start(settings, stack, metrics=app_metrics)
            app.state.services = services
            stack.callback(watch_slow_callbacks(settings.server.loop_slow_callback_ms,
                                                app_metrics.slow_callbacks.observe))
            async with anyio.create_task_group() as task_group:
                await services.run_background(task_group)
                frozen = freeze_startup_objects()  # full collections no longer walk them (`app.heap`)
                log.info("start-up: %d objects kept out of the garbage collector's passes", frozen)
                try:
                    yield
                finally:
                    task_group.cancel_scope.cancel()

    return Litestar(
        route_handlers=[openai_router, memory_router, shared_memory_router, conversations_router, personal_router,
                        healthz, readyz, metrics, web_router,
                        chat_socket],
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(title="memchat", version="0.1.0", path="/schema"),
        debug=False,
        logging_config=None,
        state=State({"metrics": app_metrics}),
    )


def create_app_from_env() -> Observe:
    """uvicorn factory entry point (``app.main:create_app_from_env``): settings from the environment;
    logging as ``MEMCHAT_LOG_FORMAT`` / ``MEMCHAT_LOG_LEVEL`` say; the app wrapped in `Observe` (request
    ids, access log, request metrics)."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"memchat: configuration error: {exc}") from None
    configure_logging(settings.server.log_format, settings.server.log_level)
    app = create_app(settings)
    return Observe(app, app.state.metrics, access_log=settings.server.access_log)
