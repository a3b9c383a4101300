"""Shared fixtures: a real fake-OpenAI upstream process and real memchat servers on free ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from app.testkit import FakeUpstream, MemchatServer

KEY_ORG1 = "test-key-org1"
KEY_ORG1_B = "test-key-org1-second"
KEY_ORG2 = "test-key-org2"
API_KEYS = f"{KEY_ORG1}=org1,{KEY_ORG1_B}=org1,{KEY_ORG2}=org2"


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(autouse=False)
def clean_fake(fake: FakeUpstream) -> FakeUpstream:
    fake.reset()
    return fake


@pytest.fixture(scope="session")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemchatServer]:
    """memchat proxying to the fake upstream."""
    env = {"MEMCHAT_UPSTREAM_BASE_URL": fake.base_url, "MEMCHAT_UPSTREAM_API_KEY": "upstream-secret",
           "MEMCHAT_API_KEYS": API_KEYS}
    with MemchatServer(tmp_path_factory.mktemp("memchat-data"), env=env) as srv:
        yield srv


@pytest.fixture(scope="session")
def offline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemchatServer]:
    """memchat with no upstream configured (offline mode)."""
    with MemchatServer(tmp_path_factory.mktemp("memchat-offline"), env={"MEMCHAT_API_KEYS": API_KEYS}) as srv:
        yield srv


@pytest.fixture
def namespace() -> str:
    """A fresh namespace per test, so tests sharing a server never see each other's data."""
    return f"ns-{uuid.uuid4().hex[:12]}"


# -- markers by location: `pytest -m "not e2e"` is the fast lane (`make test-fast`) ------------------------

_SLOW_E2E = ("reliability", "test_web_browser", "test_openapi", "test_commits")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)
            if any(name in parts or item.path.stem == name for name in _SLOW_E2E):
                item.add_marker(pytest.mark.slow)
        if item.path.stem == "test_web_browser":
            item.add_marker(pytest.mark.browser)
        if item.path.stem == "test_openapi" and "schemathesis" in item.name:
            item.add_marker(pytest.mark.fuzz)
