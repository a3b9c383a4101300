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


def _restart_with_jemalloc(allocator: str) -> int | None:
    """Start this process again, same command line, with jemalloc preloaded (`app.heap`), when ``allocator``
    (``MEMCHAT_ALLOCATOR``) asks for it and malloc is not jemalloc's yet. ``jemalloc``: a missing library, or a
    preload that did not take, is a configuration error (exit code 2). ``auto`` (the default): jemalloc when
    ``libjemalloc.so.2`` is found and the operator preloads no allocator of their own, else this process goes
    on with the system's malloc (None; the server logs which). ``system``: None."""
    from app.heap import (JEMALLOC_DIRS, JEMALLOC_LIBRARY, PRELOADED_MARK, find_jemalloc, jemalloc_active,
                          operator_preloads_allocator, preload_jemalloc)

    if allocator == "system" or jemalloc_active():
        return None
    required = allocator == "jemalloc"
    if os.environ.get(PRELOADED_MARK):
        if not required:
            return None  # auto: the preload did not take; go on without it rather than restart again
        print(f"memchat: configuration error: MEMCHAT_ALLOCATOR=jemalloc: {os.environ.get('LD_PRELOAD')} was "
              "preloaded but malloc is not jemalloc's", file=sys.stderr)
        return 2
    if not required and operator_preloads_allocator(os.environ):
        return None
    library = find_jemalloc()
    if library is None:
        if not required:
            return None
        print(f"memchat: configuration error: MEMCHAT_ALLOCATOR=jemalloc but {JEMALLOC_LIBRARY} is in none of "
              f"{', '.join(JEMALLOC_DIRS)} (Debian/Ubuntu: apt install libjemalloc2)", file=sys.stderr)
        return 2
    argv = [sys.executable, *sys.orig_argv[1:]]
    os.execve(sys.executable, argv, preload_jemalloc(os.environ, library))
    return 2  # not reached: execve replaces the process or raises


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
    if (failed := _restart_with_jemalloc(settings.server.allocator)) is not None:
        return failed
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
    path = "/api/v1/memory/shared" if args.shared else "/api/v1/memory"
    return httpx2.Client(base_url=args.url.rstrip("/") + path, timeout=args.timeout,
                         headers={"Authorization": f"Bearer {key}"})


def _check(resp) -> dict:
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail") or resp.text
        except ValueError:
            detail = resp.text
        raise CliError(f"HTTP {resp.status_code} from {resp.request.method} {resp.request.url.path}: {detail}")
    return resp.json()


def _progress(label: str, total: int | None, unit: str):  # -> tqdm.tqdm
    """A progress bar on stderr with rate and ETA (tqdm); silent when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(), leave=True)


def _scope(args: argparse.Namespace) -> dict[str, str]:
    """The query parameter naming the namespace a command works on (none for the shared scope: its routes
    have a path of their own, see `_client`)."""
    return {} if args.shared else {"namespace": args.namespace}


def cmd_export(args: argparse.Namespace) -> int:
    out = open(args.output, "wb") if args.output and args.output != "-" else sys.stdout.buffer  # noqa: SIM115
    lines = 0
    try:
        with _client(args) as client, client.stream("GET", "/export", params=_scope(args)) as resp, \
                _progress("export", None, " memories") as bar:
            if resp.status_code >= 400:
                resp.read()
                _check(resp)
            for chunk in resp.iter_bytes():
                out.write(chunk)
                count = chunk.count(b"\n")
                lines += count
                bar.update(count)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    print(f"exported {lines} memories", file=sys.stderr)
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
    with _client(args) as client, _progress("import", total, " records") as bar:
        def send(batch: list[bytes]) -> dict:
            resp = client.post("/import", params=_scope(args), content=b"\n".join(batch),
                               headers={"Content-Type": "application/x-ndjson"})
            return _check(resp)

        for start in range(0, total, args.batch):
            batch = lines[start:start + args.batch]
            result = send(batch)
            if result.get("unresolvedLinks"):
                unresolved_lines.extend(line for line in batch if _has_link(line))
            bar.update(len(batch))
        # A link whose successor came in a later batch: send those records again (ids are kept, so the
        # memories are not written twice); now the successor exists.
        if unresolved_lines:
            for start in range(0, len(unresolved_lines), args.batch):
                result = send(unresolved_lines[start:start + args.batch])
    print(f"imported {total} records; namespace now holds {result.get('total', '?')} memories"
          + (f"; {result['unresolvedLinks']} supersession links unresolved" if result.get("unresolvedLinks") else ""),
          file=sys.stderr)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    totals = {"examined": 0, "processed": 0, "skipped": 0, "failed": 0}
    with _client(args) as client:
        params = {**_scope(args), "limit": 1, "include_superseded": "true"}
        memories = _check(client.get("/", params=params))["total"]
        offset = 0
        with _progress("backfill-entities", memories, " memories") as bar:
            while True:
                page = _check(client.post("/backfill-entities", params={
                    **_scope(args), "limit": args.limit, "offset": offset, "chunk_size": args.chunk_size}))
                for key in totals:
                    totals[key] += page[key]
                if page["nextOffset"] > (bar.total or 0):
                    bar.total = page["nextOffset"]
                bar.update(page["nextOffset"] - bar.n)
                if not page["hasMore"]:
                    break
                offset = page["nextOffset"]
    print(" ".join(f"{k}={v}" for k, v in totals.items()), file=sys.stderr)
    return 1 if totals["failed"] else 0


REMOTE_IO = ("Reads and writes nothing locally except {files}: it talks to a running server over HTTP "
             "(--url, default $MEMCHAT_URL or http://127.0.0.1:8000) with an API key (--key or $MEMCHAT_API_KEY). "
             "Progress on stderr when it is a terminal.")


def _remote(sub, name: str, help_: str, func, files: str) -> argparse.ArgumentParser:
    env = os.environ
    cmd = sub.add_parser(name, help=help_, description=f"{help_[0].upper()}{help_[1:]}. "
                         + REMOTE_IO.format(files=files))
    cmd.add_argument("--url", default=env.get("MEMCHAT_URL", "http://127.0.0.1:8000"), help="memchat server")
    cmd.add_argument("--key", default=None, help="API key (default: $MEMCHAT_API_KEY)")
    scope = cmd.add_mutually_exclusive_group()
    scope.add_argument("--namespace", default="", help="the user's namespace (default: global)")
    scope.add_argument("--shared", action="store_true", help="the organisation's shared scope (public memories)")
    cmd.add_argument("--timeout", type=float, default=600.0, help="seconds per HTTP request")
    cmd.set_defaults(func=func)
    return cmd


def _data_dir(parser: argparse.ArgumentParser, default: Path | str = argparse.SUPPRESS) -> None:  # type: ignore[assignment]
    parser.add_argument("--data-dir", type=Path, default=default,
                        help="memchat's data directory (default: $MEMCHAT_DATA_DIR or ./data); the same as "
                             "`memchat serve --data-dir`")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    data_default = Path(env.get("MEMCHAT_DATA_DIR", "data"))
    parser = argparse.ArgumentParser(prog="memchat", description="OpenAI-compatible chat with long-term memory")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server", description=(
        "Run the server. Reads and writes the data directory: LanceDB tables in <data dir>/lancedb (unless "
        "MEMCHAT_STORE_URI names another store), API keys in <data dir>/keys.json, the turn journal in "
        "<data dir>/turns-journal/ and, with --workers > 1, the workers' shared metrics in "
        "<data dir>/prometheus-multiproc/ (emptied at start). Logs go to stderr (MEMCHAT_LOG_FORMAT=text|json)."))
    serve.add_argument("--host", default=env.get("MEMCHAT_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(env.get("MEMCHAT_PORT", "8000")))
    _data_dir(serve, data_default)
    serve.add_argument("--workers", type=int, default=int(env.get("MEMCHAT_WORKERS", "1")))
    serve.add_argument("--log-level", default=env.get("MEMCHAT_LOG_LEVEL", "info"),
                       choices=["critical", "error", "warning", "info", "debug", "trace"],
                       help="memchat's and uvicorn's log level (the access log is at info)")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                       help="one memchat.access line per request (default: on; $MEMCHAT_ACCESS_LOG)")
    serve.set_defaults(func=cmd_serve)

    keys_io = ("Reads and writes <data dir>/keys.json (only each key's SHA-256 is stored), the file "
               "`memchat serve --data-dir` reads; a running server sees changes at once.")
    keys = sub.add_parser("keys", help="manage API keys", description=f"Manage API keys. {keys_io}")
    _data_dir(keys, data_default)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key for an organisation (printed once)",
                                 description=f"Create a key for an organisation; it is printed once. {keys_io}")
    create.add_argument("--org", required=True)
    listing = keys_sub.add_parser("list", help="list keys (ids and organisations, never the keys)",
                                  description=f"List key ids, organisations and states (never the keys). {keys_io}")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id", description=f"Revoke a key by id. {keys_io}")
    revoke.add_argument("key_id")
    for cmd in (create, listing, revoke):  # `memchat keys create --data-dir X` as well as `keys --data-dir X create`
        _data_dir(cmd)
    keys.set_defaults(func=cmd_keys)

    export = _remote(sub, "export", "write a namespace's memories as JSON Lines", cmd_export,
                     "the output file (-o; default stdout)")
    export.add_argument("-o", "--output", default=None, help="file to write (default: stdout)")
    imp = _remote(sub, "import", "import memories from a JSON Lines (or JSON array) file", cmd_import,
                  "the input file (FILE, or stdin for '-'), which it only reads")
    imp.add_argument("file", help="file to read ('-': stdin)")
    imp.add_argument("--batch", type=int, default=5000, help="records per request")
    backfill = _remote(sub, "backfill-entities", "extract entities for every memory that has none", cmd_backfill,
                       "nothing at all")
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
