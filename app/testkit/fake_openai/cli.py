"""Run the fake under uvicorn from the command line; prints ``FAKE_OPENAI_LISTENING <port>`` once bound,
which is how ``FakeUpstream`` learns the port when it asked for ``--port 0``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from .app import create_app
from .config import FakeConfig

LISTENING_PREFIX = "FAKE_OPENAI_LISTENING "


class _DropNoiseFilter(logging.Filter):
    """Hide uvicorn's complaint about our *intentional* aborted responses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("ASGI callable returned without completing response")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream server (tests/benchmarks).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", default=None, help="write the bound port to this file")
    p.add_argument("--reply", default=None, help="default reply text (default: 'Echo: <last user message>')")
    p.add_argument("--first-token-delay", type=float, default=None, metavar="S")
    p.add_argument("--token-delay", type=float, default=None, metavar="S")
    p.add_argument("--tokens", type=int, default=None, metavar="N", help="repeat/trim replies to exactly N tokens")
    p.add_argument("--embedding-dim", type=int, default=256)
    p.add_argument("--no-responses-api", action="store_true", help="answer /v1/responses with 404")
    p.add_argument("--max-records", type=int, default=10000, help="keep at most N request/stream records")
    p.add_argument("--no-record", action="store_true", help="do not record requests (benchmarks)")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def _announce(port: int, port_file: str | None) -> None:
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, port_file)
    sys.stdout.write(f"{LISTENING_PREFIX}{port}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    cfg = FakeConfig(
        reply=args.reply,
        tokens=args.tokens,
        first_token_delay=args.first_token_delay,
        token_delay=args.token_delay,
        embedding_dim=args.embedding_dim,
        responses_api=not args.no_responses_api,
        record_requests=not args.no_record,
        max_records=args.max_records,
    )
    app = create_app(cfg)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    uconfig = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        timeout_keep_alive=30,
    )
    logging.getLogger("uvicorn.error").addFilter(_DropNoiseFilter())

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                _announce(self.servers[0].sockets[0].getsockname()[1], args.port_file)

    server = _Server(uconfig)
    server.run()
    return 0 if server.started else 1
