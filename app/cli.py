"""The ``memchat`` command: ``serve`` and ``keys``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.auth import KeyRing
from app.config import ConfigError, Settings


def _keyring(data_dir: Path) -> KeyRing:
    settings = Settings.from_env()
    return KeyRing(data_dir / "keys.json", settings.auth.static_keys)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ["MEMCHAT_DATA_DIR"] = str(args.data_dir)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"memchat: configuration error: {exc}", file=sys.stderr)
        return 2
    args.data_dir.mkdir(parents=True, exist_ok=True)
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
        timeout_graceful_shutdown=10,
        access_log=args.access_log,
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


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(prog="memchat", description="OpenAI-compatible chat with long-term memory")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=env.get("MEMCHAT_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(env.get("MEMCHAT_PORT", "8000")))
    serve.add_argument("--data-dir", type=Path, default=Path(env.get("MEMCHAT_DATA_DIR", "data")))
    serve.add_argument("--workers", type=int, default=int(env.get("MEMCHAT_WORKERS", "1")))
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action="store_true", help="log every request")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
