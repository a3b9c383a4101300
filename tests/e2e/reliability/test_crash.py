"""Reliability: kill -9 while replies are streaming loses no answered turn and duplicates nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx2
import pytest

from app.testkit import FakeUpstream, MemchatServer
from tests.conftest import API_KEYS, KEY_ORG1

AUTH = {"Authorization": f"Bearer {KEY_ORG1}"}


# How answered turns are made durable: "journal" keeps them in the local journal only (the flush to the
# table is an hour away, so the kill finds them there and the restart must replay them); "table" writes
# them straight to LanceDB (MEMCHAT_TURNLOG_JOURNAL=false).
TURNLOG_MODES = {
    "journal": {"MEMCHAT_TURNLOG_FLUSH_INTERVAL": "3600"},
    "table": {"MEMCHAT_TURNLOG_JOURNAL": "false"},
}


def server(data: Path, fake: FakeUpstream, mode: str = "journal") -> MemchatServer:
    return MemchatServer(data, env={"MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "x",
                                    "MEMCHAT_API_KEYS": API_KEYS, "MEMCHAT_COMMIT_LEASE": "2",
                                    "MEMCHAT_EXTRACTOR": "heuristic", "MEMCHAT_EMBEDDER": "none",
                                    **TURNLOG_MODES[mode]})


def turn(srv: MemchatServer, text: str, namespace: str, commit_after: int) -> None:
    body = {"model": "fake-gpt", "stream": True, "messages": [{"role": "user", "content": text}]}
    with httpx2.stream("POST", f"{srv.url}/v1/memory/chat/completions", json=body, headers=AUTH, timeout=30,
                       params={"namespace": namespace, "commit_after": commit_after}) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def committed(srv: MemchatServer, namespace: str) -> list[str]:
    resp = httpx2.get(f"{srv.url}/api/v1/memory", params={"namespace": namespace, "limit": 100}, headers=AUTH)
    return sorted(m["content"] for m in resp.json()["memories"] if m["source"] == "conversation")


@pytest.mark.parametrize("mode", sorted(TURNLOG_MODES))
def test_kill9_during_streaming(tmp_path: Path, fake: FakeUpstream, namespace: str, mode: str) -> None:
    fake.reset()
    facts = [f"I own a vintage bicycle number {i}." for i in range(5)]
    srv = server(tmp_path / "data", fake, mode).start()
    try:
        for fact in facts:
            turn(srv, fact, namespace, commit_after=2)
        fake.add_rule(match="endless story", tokens=500, token_delay=0.05)
        streams = [threading.Thread(target=lambda: _ignore_errors(turn, srv, "endless story please", namespace, 2))
                   for _ in range(5)]
        for thread in streams:
            thread.start()
        fake.wait_for(lambda: fake.streams()["open"] >= 5, timeout=10)
    finally:
        srv.kill9()  # five replies mid-stream, five answered turns not yet committed
    for thread in streams:
        thread.join(timeout=10)
    if mode == "journal":
        assert list((tmp_path / "data" / "turns-journal").glob("*.wal")), "the answered turns were only journaled"
    with server(tmp_path / "data", fake, mode) as srv:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(committed(srv, namespace)) < len(facts):
            time.sleep(0.3)
        time.sleep(2)
        assert committed(srv, namespace) == sorted(facts)


def _ignore_errors(fn, *args) -> None:  # the killed server breaks these streams on purpose
    try:
        fn(*args)
    except (httpx2.HTTPError, AssertionError):
        pass
