"""A real memchat (``python -m app serve``: uvicorn on a free port) for end-to-end tests and benchmarks.

The environment starts clean of ``MEMCHAT_*`` / ``OPENAI_*`` variables so that a developer's shell cannot
change what a test sees; ``env`` adds the test's own settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .process import REPO_ROOT, ManagedProcess, ProcessError, free_port, http_ready


class MemchatServerError(ProcessError):
    pass


class MemchatServer:
    """A memchat process. ``env`` overrides are added to a clean base environment."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None, workers: int = 1,
                 startup_timeout: float = 60.0, keep_log: bool = True, log_level: str = "warning") -> None:
        self.data_dir = Path(data_dir)
        self.log_level = log_level
        self.env_overrides = dict(env or {})
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.keep_log = keep_log
        self.port: int | None = None
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1/memory"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.process is None else self.process.proc

    @property
    def pid(self) -> int:
        assert self.process is not None, "memchat was never started"
        return self.process.pid

    def _env(self, app_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MEMCHAT_", "OPENAI_"))}
        env.update({"PYTHONUNBUFFERED": "1", "MEMCHAT_EMBEDDER": "local"})
        env.update(self.env_overrides)
        if app_dir != REPO_ROOT:
            env["PYTHONPATH"] = str(app_dir)
        return env

    def start(self, app_dir: Path = REPO_ROOT) -> MemchatServer:
        """Start ``python -m app serve``, importing the ``app`` package from ``app_dir``; returns once
        ``/healthz`` answers."""
        self.port = free_port()
        cmd = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--workers", str(self.workers), "--log-level", self.log_level]
        self.process = ManagedProcess(cmd, name="memchat-server", env=self._env(app_dir), cwd=app_dir,
                                      keep_log=self.keep_log, startup_timeout=self.startup_timeout)
        try:
            self.process.start(http_ready(f"{self.url}/healthz"))
        except ProcessError as exc:
            raise MemchatServerError(str(exc)) from None
        return self

    def log_text(self) -> str:
        return "" if self.process is None else self.process.log_text()

    def kill9(self) -> None:
        """Kill the whole process group without any chance to clean up."""
        if self.process is not None:
            self.process.kill9()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as {sample name with labels: value}."""
        from .rawhttp import http_call

        text = http_call("GET", f"{self.url}/metrics", timeout=10, parse=False).decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def __enter__(self) -> MemchatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["MemchatServer", "MemchatServerError"]
