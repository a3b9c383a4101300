"""``GET /metrics``: Prometheus text format."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get

from app.api.deps import services_of


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[str]:
    services = services_of(request)
    stats = services.scheduler.stats
    lines = [
        "# HELP memchat_conversations_pending Conversations waiting for their idle commit.",
        "# TYPE memchat_conversations_pending gauge",
        f"memchat_conversations_pending {services.scheduler.pending}",
        "# HELP memchat_commits_in_progress Due commits started: running or waiting for a commit slot.",
        "# TYPE memchat_commits_in_progress gauge",
        f"memchat_commits_in_progress {services.scheduler.committing}",
        "# HELP memchat_commits_running Commits holding one of the MEMCHAT_COMMIT_CONCURRENCY slots.",
        "# TYPE memchat_commits_running gauge",
        f"memchat_commits_running {services.scheduler.committing_now}",
        "# HELP memchat_commits_total Conversation commits by outcome.",
        "# TYPE memchat_commits_total counter",
        f'memchat_commits_total{{outcome="done"}} {stats.committed}',
        f'memchat_commits_total{{outcome="failed"}} {stats.failed}',
        "# HELP memchat_memories_written_total Memories written by commits.",
        "# TYPE memchat_memories_written_total counter",
        f"memchat_memories_written_total {stats.memories_written}",
        "# HELP memchat_commit_seconds Time to commit a conversation.",
        "# TYPE memchat_commit_seconds summary",
        f"memchat_commit_seconds_sum {stats.latency_sum:.6f}",
        f"memchat_commit_seconds_count {stats.latency_count}",
        "# HELP memchat_turnlog_rows_written_total Turns written to the durable turn log.",
        "# TYPE memchat_turnlog_rows_written_total counter",
        f"memchat_turnlog_rows_written_total {services.turnlog.rows_written}",
        "# HELP memchat_turnlog_batches_written_total Group-commit writes of the turn log.",
        "# TYPE memchat_turnlog_batches_written_total counter",
        f"memchat_turnlog_batches_written_total {services.turnlog.batches_written}",
        "# HELP memchat_turnlog_flushes_total Batches moved from the turn journal to the turns table.",
        "# TYPE memchat_turnlog_flushes_total counter",
        f"memchat_turnlog_flushes_total {services.turnlog.flushes}",
        "# HELP memchat_turnlog_recovered_total Journaled turns replayed into the table at start-up.",
        "# TYPE memchat_turnlog_recovered_total counter",
        f"memchat_turnlog_recovered_total {services.turnlog.rows_recovered}",
        "# HELP memchat_event_loop_tasks Tasks alive on this worker's event loop (a leak shows here).",
        "# TYPE memchat_event_loop_tasks gauge",
        f"memchat_event_loop_tasks {len(asyncio.all_tasks())}",
    ]
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
