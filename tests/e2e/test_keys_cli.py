"""API keys: `memchat keys create/list/revoke`, first-start key creation, keys stored hashed."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from app.testkit import REPO_ROOT, MemchatServer

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def memchat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})


def chat_status(srv: MemchatServer, key: str) -> int:
    return httpx2.post(f"{srv.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = memchat("keys", "--data-dir", str(data), "create", "--org", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    key_id = re.search(r"key id (\w+)", created.stdout).group(1)
    assert key.startswith("mc_") and key not in (data / "keys.json").read_text()
    listed = memchat("keys", "--data-dir", str(data), "list")
    assert key_id in listed.stdout and "acme" in listed.stdout and key not in listed.stdout
    with MemchatServer(data) as srv:
        assert chat_status(srv, key) == 200
        # a key created while the server runs works at once; a revoked one stops working at once
        second = memchat("keys", "--data-dir", str(data), "create", "--org", "beta").stdout.strip().splitlines()[-1]
        assert chat_status(srv, second) == 200
        time.sleep(0.01)
        assert memchat("keys", "--data-dir", str(data), "revoke", key_id).returncode == 0
        assert chat_status(srv, key) == 401
        assert chat_status(srv, second) == 200
    assert memchat("keys", "--data-dir", str(data), "revoke", "nope").returncode == 1


def test_first_start_creates_and_prints_a_key(tmp_path: Path) -> None:
    with MemchatServer(tmp_path / "fresh") as srv:
        log = srv.log_text()
        match = re.search(r"API key \(shown once, store it now\): (mc_\S+)", log)
        assert match, log
        assert chat_status(srv, match.group(1)) == 200
        assert chat_status(srv, "mc_wrong") == 401
    with MemchatServer(tmp_path / "fresh") as srv:  # second start: no new key
        assert "shown once" not in srv.log_text()


def test_keys_create_writes_where_serve_reads(tmp_path: Path) -> None:
    """`memchat keys create --data-dir X` (flag after the subcommand too) reaches `memchat serve --data-dir X`."""
    data = tmp_path / "served"
    with MemchatServer(data) as srv:
        created = memchat("keys", "create", "--org", "late", "--data-dir", str(data))
        assert created.returncode == 0, created.stderr
        assert chat_status(srv, created.stdout.strip().splitlines()[-1]) == 200
    assert "--data-dir" in memchat("keys", "list", "--help").stdout
    for command in (["serve"], ["keys"], ["keys", "create"], ["export"], ["import"], ["backfill-entities"]):
        assert "Reads and writes" in " ".join(memchat(*command, "--help").stdout.split()), command
