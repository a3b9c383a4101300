"""``GET /metrics``: Prometheus exposition through ``prometheus_client`` (`app.obs.metrics`).

With several workers one scrape, whichever worker takes it, reports the whole server (multiprocess mode).
The scraping worker samples its gauges first; the others' are at most a second old.
"""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Request, Response, get

from app.api.deps import services_of


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    services = services_of(request)
    services.sample_gauges()
    body, content_type = await anyio.to_thread.run_sync(services.metrics.render)
    return Response(body, media_type=content_type)
