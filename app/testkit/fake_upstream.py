"""Run the fake OpenAI server (``python -m app.testkit.fake_openai``) as a subprocess and talk to its
control API. Standard library only (plus the kit), so any test or benchmark can use it::

    with FakeUpstream() as fake:
        client = OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
        fake.add_rule(match="extract memories", reply='{"memories": []}', times=1)
        ...
        assert fake.requests()[-1]["body"]["model"] == "fake-gpt"
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from .fake_openai.cli import LISTENING_PREFIX
from .process import REPO_ROOT, ManagedProcess, ProcessError
from .rawhttp import HTTPCallError, http_call

T = TypeVar("T")
_LISTENING = re.compile("^" + re.escape(LISTENING_PREFIX) + r"(\d+)$", re.M)


class FakeUpstreamError(ProcessError):
    pass


class FakeUpstream:
    """A running fake OpenAI server in a subprocess.

    ``FakeUpstream(*args)`` / ``start(*args)``: extra CLI args for the server,
    e.g. ``FakeUpstream("--token-delay", "0.01", "--tokens", "200")``.
    """

    def __init__(
        self,
        *args: str,
        host: str = "127.0.0.1",
        startup_timeout: float = 20.0,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.args = [str(a) for a in args]
        self.host = host
        self.startup_timeout = startup_timeout
        self.env = env
        self.python = python
        self.process: ManagedProcess | None = None
        self.port: int | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self, *extra_args: str) -> FakeUpstream:
        if self.process is not None:
            raise FakeUpstreamError("already started")
        cmd = [self.python, "-m", "app.testkit.fake_openai", "--host", self.host, "--port", "0", *self.args,
               *map(str, extra_args)]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        process = ManagedProcess(cmd, name="fake-openai", env=env, cwd=REPO_ROOT, keep_log=False,
                                 startup_timeout=self.startup_timeout, poll_interval=0.02, stop_timeout=5.0)
        self.process = process
        try:
            process.start(lambda: self._listening_port() is not None)
        except ProcessError as exc:
            self.process = None
            raise FakeUpstreamError(str(exc)) from None
        self.port = self._listening_port()
        return self

    def _listening_port(self) -> int | None:
        m = _LISTENING.search(self.log_text())
        return int(m.group(1)) if m else None

    def log_text(self) -> str:
        """Everything the server wrote (stdout and stderr)."""
        return "" if self.process is None else self.process.log_text()

    _stderr_text = log_text  # the name the fake's own tests know

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.stop(timeout)
        self.port = None

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.process is None else self.process.proc

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def __enter__(self) -> FakeUpstream:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise FakeUpstreamError("not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # -- control API ---------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """Plain JSON HTTP call against the fake server; returns parsed JSON."""
        try:
            return http_call(method, self.url + path, body, timeout)
        except HTTPCallError as exc:
            raise FakeUpstreamError(str(exc)) from None

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """Recorded API requests (optionally only those whose path contains ``path``)."""
        q = "" if path is None else "?path=" + urllib.parse.quote(path)
        return self.call("GET", "/_fake/requests" + q)

    def clear_requests(self) -> None:
        self.call("DELETE", "/_fake/requests")

    def streams(self) -> dict[str, Any]:
        return self.call("GET", "/_fake/streams")

    def add_rule(self, **kw: Any) -> dict[str, Any]:
        """``add_rule(match="substr", reply="...", times=1, fault={...}, ...)``"""
        return self.call("POST", "/_fake/rules", kw)

    def rules(self) -> list[dict[str, Any]]:
        return self.call("GET", "/_fake/rules")

    def clear_rules(self) -> None:
        self.call("DELETE", "/_fake/rules")

    def set_config(self, **kw: Any) -> dict[str, Any]:
        """Update server defaults: reply, tokens, first_token_delay, token_delay, tool_call, fault, embedding_dim."""
        return self.call("POST", "/_fake/config", kw)

    def config(self) -> dict[str, Any]:
        return self.call("GET", "/_fake/config")

    def reset(self) -> None:
        self.call("POST", "/_fake/reset")

    @staticmethod
    def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02) -> T:
        """Poll ``predicate`` until it returns a truthy value (returned); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
            time.sleep(interval)
