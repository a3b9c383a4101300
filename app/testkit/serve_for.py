"""Run a command against a throw-away memchat, for shell scripts (``scripts/schemathesis_run.sh``)::

    python -m app.testkit.serve_for --api-keys KEY=org1 --fail-on-traceback -- \\
        schemathesis run http://127.0.0.1:{port}/schema/openapi.json ...

Starts memchat (offline mode, data in a temporary directory, ``MEMCHAT_EMBEDDER`` from the environment or
``local``) through ``MemchatServer``, replaces ``{port}`` and ``{url}`` in the command, runs it, stops the
server and exits with the command's code. With ``--fail-on-traceback`` a traceback in the server's log
is printed and turns success into exit code 1. A shell loop polling ``/healthz`` is what this replaces.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .memchat_server import MemchatServer


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.testkit.serve_for", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api-keys", default="", help="MEMCHAT_API_KEYS of the server (KEY=org,...)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--fail-on-traceback", action="store_true", help="exit 1 when the server logged a traceback")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command; {port} and {url} are replaced")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        p.error("no command given")
    return args


def tracebacks(log: str, limit: int = 120) -> str:
    """Every traceback of a log with two lines before and 25 after it (like ``grep -B2 -A25``), capped."""
    lines = log.splitlines()
    keep: set[int] = set()
    for i, line in enumerate(lines):
        if "Traceback" in line:
            keep.update(range(max(0, i - 2), min(len(lines), i + 26)))
    return "\n".join(lines[i] for i in sorted(keep)[:limit])


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="memchat-serve-for-"))
    env = {"MEMCHAT_EMBEDDER": os.environ.get("MEMCHAT_EMBEDDER", "local")}
    if args.api_keys:
        env["MEMCHAT_API_KEYS"] = args.api_keys
    try:
        with MemchatServer(data / "data", env=env, workers=args.workers, keep_log=False) as server:
            command = [c.replace("{port}", str(server.port)).replace("{url}", server.url) for c in args.command]
            status = subprocess.run(command, check=False).returncode
            log = server.log_text()
        if args.fail_on_traceback and "Traceback" in log:
            print("== the server logged tracebacks:")
            print(tracebacks(log))
            status = status or 1
        return status
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
