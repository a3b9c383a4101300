"""Launch ``scripts/fake_openai.py`` as a subprocess and talk to its control API.

Stdlib only (subprocess + urllib), so it can be used from any test or benchmark::

    with FakeUpstream() as fake:
        client = OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
        fake.add_rule(match="extract memories", reply='{"memories": []}', times=1)
        ...
        assert fake.requests()[-1]["body"]["model"] == "fake-gpt"
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "fake_openai.py"
LISTENING_PREFIX = "FAKE_OPENAI_LISTENING "

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class FakeUpstreamError(RuntimeError):
    pass


class FakeUpstream:
    """A running fake OpenAI server in a subprocess.

    ``FakeUpstream(*args)`` / ``start(*args)``: extra CLI args for the script,
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
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self._stderr_file: Any = None
        self._reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self, *extra_args: str) -> FakeUpstream:
        if self.proc is not None:
            raise FakeUpstreamError("already started")
        cmd = [self.python, str(SCRIPT), "--host", self.host, "--port", "0", *self.args, *map(str, extra_args)]
        self._stderr_file = tempfile.TemporaryFile(mode="w+", prefix="fake_openai_stderr_")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=str(REPO_ROOT),
            env=env,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def reader(stream: Any) -> None:
            # Keeps draining stdout for the life of the process.
            for line in stream:
                lines.put(line)
            lines.put(None)

        self._reader = threading.Thread(target=reader, args=(self.proc.stdout,), daemon=True, name="fake-openai-stdout")
        self._reader.start()

        deadline = time.monotonic() + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"fake_openai did not report LISTENING within {self.startup_timeout}s")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    self._fail(f"fake_openai exited with code {self.proc.returncode} before listening")
                continue
            if line is None:
                self.proc.wait(timeout=5)
                self._fail(f"fake_openai exited with code {self.proc.returncode} before listening")
            if line.startswith(LISTENING_PREFIX):
                self.port = int(line[len(LISTENING_PREFIX):].strip())
                return self

    def _stderr_text(self) -> str:
        if self._stderr_file is None:
            return ""
        try:
            self._stderr_file.flush()
            self._stderr_file.seek(0)
            return self._stderr_file.read()
        except (OSError, ValueError):
            return ""

    def _fail(self, msg: str) -> None:
        err = self._stderr_text()
        self.stop()
        raise FakeUpstreamError(f"{msg}\n--- stderr ---\n{err}")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        self.port = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> FakeUpstream:
        if self.proc is None:
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
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise FakeUpstreamError(f"{method} {path} -> {e.code}: {e.read().decode(errors='replace')}") from None
        return json.loads(raw) if raw else None

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
