"""Reliability: kill -9 while replies are streaming loses no answered turn and duplicates nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx2

from tests.conftest import API_KEYS, KEY_ORG1
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import MemchatServer

AUTH = {"Authorization": f"Bearer {KEY_ORG1}"}


def server(data: Path, fake: FakeUpstream) -> MemchatServer:
    return MemchatServer(data, env={"MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "x",
                                    "MEMCHAT_API_KEYS": API_KEYS, "MEMCHAT_COMMIT_LEASE": "2",
                                    "MEMCHAT_EXTRACTOR": "heuristic", "MEMCHAT_EMBEDDER": "none"})


def turn(srv: MemchatServer, text: str, namespace: str, commit_after: int) -> None:
    body = {"model": "fake-gpt", "stream": True, "messages": [{"role": "user", "content": text}]}
    with httpx2.stream("POST", f"{srv.url}/v1/memory/chat/completions", json=body, headers=AUTH, timeout=30,
                       params={"namespace": namespace, "commit_after": commit_after}) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def committed(srv: MemchatServer, namespace: str) -> list[str]:
    resp = httpx2.get(f"{srv.url}/api/v1/memory", params={"namespace": namespace, "limit": 100}, headers=AUTH)
    return sorted(m["content"] for m in resp.json()["memories"] if m["source"] == "conversation")


def test_kill9_during_streaming(tmp_path: Path, fake: FakeUpstream, namespace: str) -> None:
    fake.reset()
    facts = [f"I own a vintage bicycle number {i}." for i in range(5)]
    srv = server(tmp_path / "data", fake).start()
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
    with server(tmp_path / "data", fake) as srv:
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
