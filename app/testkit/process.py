"""One way to run a server as a child process for a test or a benchmark: start it in its own session,
send its output to a log file, wait until it is ready, stop it gracefully (SIGTERM to the whole process
group, SIGKILL after a grace period) or brutally (``kill9``, for crash tests).

memchat, the fake upstream, the proxies under benchmark and the schemathesis run all start through
``ManagedProcess``, so they share one set of rules: a failure to start raises ``ProcessError`` with the
log text, and stopping also reaps uvicorn's worker processes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("memchat.testkit.process")

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The directory the ``app`` package is imported from: the checkout in development (editable install)."""


class ProcessError(RuntimeError):
    """The process exited or did not become ready in time; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    """Readiness check: something accepts TCP connections on ``host:port``."""
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False
    return check


def http_ready(url: str, *, any_status: bool = False) -> Callable[[], bool]:
    """Readiness check: ``GET url`` answers 200 (or, with ``any_status``, any HTTP status at all)."""
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200 or any_status
        except urllib.error.HTTPError:
            return any_status
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False
    return check


class ManagedProcess:
    """A child process with its output in a log file; a context manager that stops it on exit.

    ``log_path`` None: a temporary file, removed by ``stop`` when ``keep_log`` is False.
    """

    def __init__(self, cmd: Sequence[str], *, name: str, env: dict[str, str] | None = None,
                 cwd: Path | str | None = None, log_path: Path | None = None, keep_log: bool = True,
                 startup_timeout: float = 60.0, poll_interval: float = 0.1, stop_timeout: float = 15.0) -> None:
        self.cmd = [str(c) for c in cmd]
        self.name = name
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.keep_log = keep_log
        self.startup_timeout = startup_timeout
        self.poll_interval = poll_interval
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, ready: Callable[[], bool] | None = None) -> ManagedProcess:
        """Start the command and poll ``ready`` until it returns True (no check: return at once)."""
        if self.proc is not None and self.proc.poll() is None:
            raise ProcessError(f"{self.name} is already running")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        if ready is not None:
            self.wait_ready(ready)
        return self

    def wait_ready(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                self._fail(f"{self.name} exited with code {self.proc.returncode} before it was ready")
            if ready():
                return
            if time.monotonic() >= deadline:
                self._fail(f"{self.name} was not ready within {self.startup_timeout:g}s")
            time.sleep(self.poll_interval)

    def _fail(self, msg: str) -> None:
        text = self.log_text()
        self.stop()
        raise ProcessError(f"{msg}\n--- log ---\n{text}")

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM to the process group, SIGKILL when it is still there after ``timeout`` seconds."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM; killing it", self.name)
                self._signal(signal.SIGKILL)
                proc.wait(timeout=10)
        if not self.keep_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def kill9(self) -> None:
        """Kill the whole process group without any chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
