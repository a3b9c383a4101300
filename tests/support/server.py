"""Launch a real memchat server (``python -m app serve``: real uvicorn on a free port) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .fake_upstream import REPO_ROOT, free_port


class MemchatServerError(RuntimeError):
    pass


class MemchatServer:
    """A memchat process. ``env`` overrides are added to a clean base environment."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None, workers: int = 1,
                 startup_timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.env_overrides = dict(env or {})
        self.workers = workers
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1/memory"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MEMCHAT_", "OPENAI_"))}
        env.update({"PYTHONUNBUFFERED": "1", "MEMCHAT_EMBEDDER": "local"})
        env.update(self.env_overrides)
        return env

    def start(self, app_dir: Path = REPO_ROOT) -> MemchatServer:
        """Start ``python -m app serve``, importing the ``app`` package from ``app_dir`` (benchmarks pass an
        exported git ref); returns once ``/healthz`` answers."""
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="memchat-server-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--workers", str(self.workers), "--log-level", "warning"]
        env = self._env()
        if app_dir != REPO_ROOT:
            env["PYTHONPATH"] = str(app_dir)
        self.proc = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MemchatServerError(f"memchat exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise MemchatServerError(f"memchat did not become healthy:\n{self.log_text()}")

    def log_text(self) -> str:
        if self._log is None:
            return ""
        return Path(self._log.name).read_text(errors="replace")

    def kill9(self) -> None:
        """Kill the whole process group without any chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> MemchatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
