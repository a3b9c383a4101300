"""A real S3 endpoint (moto's server, a process on loopback) and memchat replicas sharing one bucket."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.conftest import API_KEYS
from app.testkit import FakeUpstream, MemchatServer, free_port

BUCKET = "memchat-replicas"


class S3Endpoint:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def storage_options(self) -> dict[str, str]:
        return {"aws_endpoint": self.url, "aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret",
                "aws_region": "us-east-1", "allow_http": "true"}


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = S3Endpoint(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.put(f"{endpoint.url}/{BUCKET}", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("moto's S3 server did not start")
            time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


class Cluster:
    """Replicas of one memchat deployment: one store prefix on the S3 endpoint, a data dir each (a host each).
    Only the store URI and its credentials are set beyond the test's upstream and keys."""

    def __init__(self, root: Path, s3: S3Endpoint, fake: FakeUpstream) -> None:
        self.root = root
        self.env = {"MEMCHAT_STORE_URI": f"s3://{BUCKET}/{uuid.uuid4().hex}",
                    "MEMCHAT_STORAGE_OPTIONS": json.dumps(s3.storage_options()),
                    "MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "upstream-secret",
                    "MEMCHAT_API_KEYS": API_KEYS}
        self.replicas: list[MemchatServer] = []

    def start_replica(self) -> MemchatServer:
        return self.start_replicas(1)[0]

    def start_replicas(self, count: int) -> list[MemchatServer]:
        """Start ``count`` replicas at once (a start is seconds of imports; they overlap)."""
        servers = [MemchatServer(self.root / f"host-{len(self.replicas) + i}", env=self.env) for i in range(count)]
        self.replicas.extend(servers)  # registered first: stop() reaches a replica whose start failed
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(MemchatServer.start, servers))
        return servers

    def stop(self) -> None:
        for server in self.replicas:
            server.stop()


@pytest.fixture
def cluster(tmp_path: Path, s3: S3Endpoint, fake: FakeUpstream) -> Iterator[Cluster]:
    fake.reset()
    group = Cluster(tmp_path, s3, fake)
    try:
        yield group
    finally:
        group.stop()
