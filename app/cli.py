"""The ``memchat`` command: ``serve``, ``keys``, and the memory tools ``export``, ``import`` and
``backfill-entities`` (HTTP clients of a running server: ``--url``, ``--key`` or ``MEMCHAT_API_KEY``)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from app.auth import KeyRing
from app.config import ConfigError, Settings


def _keyring(data_dir: Path) -> KeyRing:
    settings = Settings.from_env()
    return KeyRing(data_dir / "keys.json", settings.auth.static_keys)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # app.obs.metrics.MULTIPROC_ENV (not imported: keeps the CLI light)


def _metrics_dir(data_dir: Path, workers: int) -> None:
    """Several workers share their metrics through files in a fresh directory under the data dir
    (prometheus_client's multiprocess mode); one worker keeps them in memory."""
    if workers <= 1:
        os.environ.pop(MULTIPROC_ENV, None)
        return
    path = data_dir / "prometheus-multiproc"
    shutil.rmtree(path, ignore_errors=True)  # the last run's values (and dead workers') are not this run's
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path.resolve())


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.obs.logs import configure_logging

    os.environ["MEMCHAT_DATA_DIR"] = str(args.data_dir)
    os.environ["MEMCHAT_LOG_LEVEL"] = args.log_level
    if args.access_log is not None:
        os.environ["MEMCHAT_ACCESS_LOG"] = "true" if args.access_log else "false"
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"memchat: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_format, settings.server.log_level)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    _metrics_dir(args.data_dir, args.workers)
    keyring = KeyRing(args.data_dir / "keys.json", settings.auth.static_keys)
    if keyring.empty and settings.auth.create_key_if_none:
        key, record = keyring.create("default")
        print(
            "memchat: no API key existed, so one was created for organisation 'default'.\n"
            f"memchat: API key (shown once, store it now): {key}\n"
            f"memchat: manage keys with `memchat keys list|create|revoke` (key id {record.key_id})",
            flush=True,
        )
    if settings.upstream.offline:
        print("memchat: OFFLINE MODE — no upstream model configured; set MEMCHAT_UPSTREAM_BASE_URL "
              "and/or MEMCHAT_UPSTREAM_API_KEY to use a real model.", flush=True)
    uvicorn.run(
        "app.main:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=None,     # memchat's own format (app.obs.logs), set up in every worker
        timeout_graceful_shutdown=10,
        access_log=False,    # replaced by memchat.access (app.api.observe)
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    keyring = _keyring(args.data_dir)
    if args.keys_command == "create":
        try:
            key, record = keyring.create(args.org)
        except ValueError as exc:
            print(f"memchat: {exc}", file=sys.stderr)
            return 2
        print(f"key id {record.key_id} for organisation {record.org_id!r} (shown once):")
        print(key)
        return 0
    if args.keys_command == "list":
        for record in keyring.list():
            state = "revoked" if record.revoked else "active"
            print(f"{record.key_id}\t{record.org_id}\t{record.created_at}\t{state}")
        return 0
    if args.keys_command == "revoke":
        if keyring.revoke(args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"memchat: no active key with id {args.key_id}", file=sys.stderr)
        return 1
    return 2


class CliError(Exception):
    pass


def _client(args: argparse.Namespace):  # -> httpx2.Client
    import httpx2

    key = args.key or os.environ.get("MEMCHAT_API_KEY")
    if not key:
        raise CliError("an API key is needed: --key or MEMCHAT_API_KEY")
    return httpx2.Client(base_url=args.url.rstrip("/") + "/api/v1/memory", timeout=args.timeout,
                         headers={"Authorization": f"Bearer {key}"})


def _check(resp) -> dict:
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail") or resp.text
        except ValueError:
            detail = resp.text
        raise CliError(f"HTTP {resp.status_code} from {resp.request.method} {resp.request.url.path}: {detail}")
    return resp.json()


def _progress(label: str, done: int, total: int | None, end: bool = False) -> None:
    if total:
        width = 30
        filled = min(width, width * done // total)
        text = f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
    else:
        text = f"\r{label} {done}"
    print(text, end="\n" if end else "", file=sys.stderr, flush=True)


def cmd_export(args: argparse.Namespace) -> int:
    out = open(args.output, "wb") if args.output and args.output != "-" else sys.stdout.buffer  # noqa: SIM115
    lines = 0
    try:
        with _client(args) as client, client.stream("GET", "/export", params={"namespace": args.namespace}) as resp:
            if resp.status_code >= 400:
                resp.read()
                _check(resp)
            for chunk in resp.iter_bytes():
                out.write(chunk)
                lines += chunk.count(b"\n")
                if out is not sys.stdout.buffer:
                    _progress("export", lines, None)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    print(f"\rexported {lines} memories", file=sys.stderr)
    return 0


def _has_link(line: bytes) -> bool:
    import json

    try:
        item = json.loads(line)
    except ValueError:
        return False
    return isinstance(item, dict) and bool(item.get("supersededBy"))


def cmd_import(args: argparse.Namespace) -> int:
    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    text = raw.lstrip()
    if text.startswith(b"["):
        import json

        lines = [json.dumps(item).encode() for item in json.loads(text)]
    else:
        lines = [line for line in raw.splitlines() if line.strip()]
    total = len(lines)
    if not total:
        print("nothing to import (empty file)", file=sys.stderr)
        return 0
    unresolved_lines: list[bytes] = []
    result: dict = {}
    with _client(args) as client:
        def send(batch: list[bytes]) -> dict:
            resp = client.post("/import", params={"namespace": args.namespace}, content=b"\n".join(batch),
                               headers={"Content-Type": "application/x-ndjson"})
            return _check(resp)

        done = 0
        for start in range(0, total, args.batch):
            batch = lines[start:start + args.batch]
            result = send(batch)
            if result.get("unresolvedLinks"):
                unresolved_lines.extend(line for line in batch if _has_link(line))
            done += len(batch)
            _progress("import", done, total)
        # A link whose successor came in a later batch: send those records again (ids are kept, so the
        # memories are not written twice); now the successor exists.
        if unresolved_lines:
            for start in range(0, len(unresolved_lines), args.batch):
                result = send(unresolved_lines[start:start + args.batch])
    _progress("import", total, total, end=True)
    print(f"imported {total} records; namespace now holds {result.get('total', '?')} memories"
          + (f"; {result['unresolvedLinks']} supersession links unresolved" if result.get("unresolvedLinks") else ""),
          file=sys.stderr)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    totals = {"examined": 0, "processed": 0, "skipped": 0, "failed": 0}
    with _client(args) as client:
        params = {"namespace": args.namespace, "limit": 1, "include_superseded": "true"}
        memories = _check(client.get("/", params=params))["total"]
        offset = 0
        while True:
            page = _check(client.post("/backfill-entities", params={
                "namespace": args.namespace, "limit": args.limit, "offset": offset, "chunk_size": args.chunk_size}))
            for key in totals:
                totals[key] += page[key]
            _progress("backfill-entities", page["nextOffset"], max(memories, page["nextOffset"]))
            if not page["hasMore"]:
                break
            offset = page["nextOffset"]
    _progress("backfill-entities", totals["examined"], max(memories, totals["examined"]), end=True)
    print(" ".join(f"{k}={v}" for k, v in totals.items()), file=sys.stderr)
    return 1 if totals["failed"] else 0


def _remote(sub, name: str, help_: str, func) -> argparse.ArgumentParser:
    env = os.environ
    cmd = sub.add_parser(name, help=help_)
    cmd.add_argument("--url", default=env.get("MEMCHAT_URL", "http://127.0.0.1:8000"), help="memchat server")
    cmd.add_argument("--key", default=None, help="API key (default: $MEMCHAT_API_KEY)")
    cmd.add_argument("--namespace", default="", help="the user's namespace (default: global)")
    cmd.add_argument("--timeout", type=float, default=600.0, help="seconds per HTTP request")
    cmd.set_defaults(func=func)
    return cmd


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(prog="memchat", description="OpenAI-compatible chat with long-term memory")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=env.get("MEMCHAT_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(env.get("MEMCHAT_PORT", "8000")))
    serve.add_argument("--data-dir", type=Path, default=Path(env.get("MEMCHAT_DATA_DIR", "data")))
    serve.add_argument("--workers", type=int, default=int(env.get("MEMCHAT_WORKERS", "1")))
    serve.add_argument("--log-level", default=env.get("MEMCHAT_LOG_LEVEL", "info"),
                       choices=["critical", "error", "warning", "info", "debug", "trace"],
                       help="memchat's and uvicorn's log level (the access log is at info)")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                       help="one memchat.access line per request (default: on; $MEMCHAT_ACCESS_LOG)")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys")
    keys.add_argument("--data-dir", type=Path, default=Path(env.get("MEMCHAT_DATA_DIR", "data")))
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for an organisation (printed once)")
    create.add_argument("--org", required=True)
    keys_sub.add_parser("list", help="list keys (ids and organisations, never the keys)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    export = _remote(sub, "export", "write a namespace's memories as JSON Lines", cmd_export)
    export.add_argument("-o", "--output", default=None, help="file to write (default: stdout)")
    imp = _remote(sub, "import", "import memories from a JSON Lines (or JSON array) file", cmd_import)
    imp.add_argument("file", help="file to read ('-': stdin)")
    imp.add_argument("--batch", type=int, default=5000, help="records per request")
    backfill = _remote(sub, "backfill-entities", "extract entities for every memory that has none", cmd_backfill)
    backfill.add_argument("--limit", type=int, default=50, help="memories per request (1..50)")
    backfill.add_argument("--chunk-size", type=int, default=5, help="memories per model call (1..10)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"\nmemchat: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if isinstance(exc, OSError) or type(exc).__module__.startswith("httpx"):  # unreadable file, no server
            print(f"\nmemchat: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        raise
