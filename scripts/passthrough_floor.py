"""The floor for a Python proxy hop: a bare Litestar + httpx2 byte passthrough (benchmark baseline only).

``POST /v1/chat/completions`` forwards the body to ``--upstream`` and streams the response bytes back
untouched: no auth, no parsing, no memory, no turn log. ``scripts/bench_proxy.py`` runs it as the
``floor`` arm, so memchat's overhead can be read against the cheapest possible hop on the same stack
(Litestar on uvicorn, httpx2), measured in the same run.

    .venv/bin/python scripts/passthrough_floor.py --port 9100 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import uvicorn
from litestar import Litestar, Request, post
from litestar.response import Stream


def create_app(upstream: str) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with httpx2.AsyncClient(timeout=600, limits=httpx2.Limits(max_connections=2000)) as client:
            app.state.client = client
            yield

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Stream:
        client: httpx2.AsyncClient = request.app.state.client
        upstream_request = client.build_request("POST", f"{upstream}/chat/completions", content=await request.body(),
                                                headers={"content-type": "application/json"})
        response = await client.send(upstream_request, stream=True)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return Stream(body(), media_type=response.headers.get("content-type", "text/event-stream"))

    return Litestar([chat], lifespan=[lifespan])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL ending in /v1")
    args = parser.parse_args()
    uvicorn.run(create_app(args.upstream.rstrip("/")), host=args.host, port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
