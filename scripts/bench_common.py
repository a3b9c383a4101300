"""Shared helpers for the proxy-level benchmarks (``bench_proxy.py``, ``bench_turnlog.py``, ``soak.py``).

* process accounting from ``/proc`` (CPU seconds and RSS of a process and its live descendants),
* the test kit's lean raw-socket SSE client (``app.testkit.sse.SSEClient``, re-exported as ``RawClient``)
  and a closed-loop load on it,
* launchers, all on the kit's ``ManagedProcess``: the fake upstream, memchat, the bare passthrough and,
  if available, a LiteLLM proxy,
* percentiles, versions, and a writer that replaces only its own ``## section`` of docs/benchmarks.md.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from app.testkit import REPO_ROOT, FakeUpstream, ManagedProcess, MemchatServer, free_port, http_ready
from app.testkit.sse import SSEClient as RawClient
from app.testkit.sse import StreamResult

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "benchkey"
ORG = "benchorg"
MODEL = "fake-gpt"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DOCS = ROOT / "docs" / "benchmarks.md"

# Set (to "<export dir>\t<description>") in a run that ``use_app_ref`` started again on an exported git ref.
SOURCE_ENV = "MEMCHAT_BENCH_SOURCE"

# The fake's cadences (seconds).
REALISTIC = {"first_token_delay": 0.05, "token_delay": 1 / 30}
ZERO = {"first_token_delay": None, "token_delay": None}


# ------------------------------------------------------------------------------------------ /proc


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (uvicorn workers, LiteLLM's server child, ...)."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live descendants (plus children they already reaped)."""
    total = 0
    for p in process_tree(pid):
        fields = _stat_fields(p)
        if fields is None:
            continue
        # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17 -> index 11..14
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def thread_cpu(pid: int) -> dict[tuple[int, int], tuple[str, float]]:
    """CPU seconds of every thread of the process tree: {(pid, tid): (thread name, seconds)}.

    Thread names tell the runtimes apart: ``python`` (the event loop and Python threads),
    ``lancedb-tokio-w`` (LanceDB's Rust runtime), ``lance-cpu``, ...
    """
    out: dict[tuple[int, int], tuple[str, float]] = {}
    for p in process_tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/comm") as f:
                    comm = f.read().strip()
                with open(f"/proc/{p}/task/{t}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            fields = raw[raw.rfind(b")") + 2:].split()
            out[(p, int(t))] = (comm, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def thread_cpu_delta(before: dict[tuple[int, int], tuple[str, float]],
                     after: dict[tuple[int, int], tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two ``thread_cpu`` snapshots, summed per thread name."""
    agg: dict[str, float] = {}
    for key, (comm, secs) in after.items():
        agg[comm] = agg.get(comm, 0.0) + secs - before.get(key, (comm, 0.0))[1]
    return dict(sorted(agg.items(), key=lambda kv: -kv[1]))


def system_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores; idle and iowait excluded)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    # user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user)
    return (vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)) / CLK_TCK


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU cores used during a window: by given processes, by this (client) process, and by everything
    else on the machine ("foreign" load, which a shared machine adds to every measurement)."""

    def __init__(self, *pids: int) -> None:
        self.pids = sorted(set(pids))
        self.t0 = time.perf_counter()
        self.sys0 = system_busy_seconds()
        self.self0 = self_cpu_seconds()
        self.proc0 = {p: cpu_seconds(p) for p in self.pids}

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        procs = {p: cpu_seconds(p) - c for p, c in self.proc0.items()}
        client = self_cpu_seconds() - self.self0
        total = system_busy_seconds() - self.sys0
        foreign = max(0.0, total - client - sum(procs.values()))
        return {"wall": wall, "procs": procs, "client": client, "total": total, "foreign": foreign,
                "foreign_cores": foreign / wall, "client_cores": client / wall}


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pid: int) -> float:
    """Current RSS of the process tree."""
    return sum(_status_kb(p, "VmRSS") for p in process_tree(pid)) / 1024


def own_rss_mib(pid: int) -> float:
    """Current RSS of ``pid`` alone (not its children)."""
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """Peak RSS (VmHWM) summed over the live process tree."""
    return sum(_status_kb(p, "VmHWM") for p in process_tree(pid)) / 1024


# ------------------------------------------------------------------------------------------ stats


def pct(values: Sequence[float], q: float) -> float:
    """Percentile with linear interpolation; NaN for no data."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def fmt(v: float, digits: int = 1) -> str:
    if v != v:  # NaN
        return "n/a"
    return f"{v:.{digits}f}"


# ------------------------------------------------------------------------------------------ load


async def closed_loop(host: str, port: int, path: str, headers: dict[str, str], n: int, stagger: float,
                      hold: float, next_body: Any) -> tuple[list[StreamResult], float, float]:
    """``n`` keep-alive clients, each sending one streaming request after another; client ``i`` starts
    at ``stagger * i / n``. At the end of ``hold`` (after the stagger) every open stream is cancelled.
    Returns (results incl. cancelled partial ones, measure-window start, end) in ``perf_counter`` time."""
    results: list[StreamResult] = []
    t0 = time.perf_counter()
    t_measure, t_end = t0 + stagger, t0 + stagger + hold

    async def worker(i: int) -> None:
        client = RawClient(host, port, headers)
        try:
            await asyncio.sleep(stagger * i / n)
            while time.perf_counter() < t_end:
                res = StreamResult(start=time.perf_counter())
                results.append(res)
                await client.stream(path, next_body(), res=res)
                if res.error is not None:
                    await asyncio.sleep(0.05)
        finally:
            await client.close()

    tasks = [asyncio.create_task(worker(i)) for i in range(n)]
    await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return results, t_measure, t_end


def chat_body(text: str, *, stream: bool = True, model: str = MODEL, max_tokens: int | None = None) -> bytes:
    body: dict[str, Any] = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return msgspec.json.encode(body)


# ------------------------------------------------------------------------------------------ servers


# Passed from the bench's environment to memchat's (which otherwise starts clean of MEMCHAT_* variables).
AB_VARIABLES = ("MEMCHAT_UPSTREAM_HTTP_CLIENT", "MEMCHAT_EMBEDDER_RUNTIME", "MEMCHAT_MAINTENANCE_INTERVAL",
                "MEMCHAT_MALLOC_MMAP_THRESHOLD_KB", "MEMCHAT_EMBEDDER_QUERY_PRECISION")


def memchat_env(upstream_base: str, embedder: str = "local", **extra: str) -> dict[str, str]:
    env = {
        "MEMCHAT_UPSTREAM_BASE_URL": upstream_base,
        "MEMCHAT_UPSTREAM_API_KEY": "x",
        "MEMCHAT_API_KEYS": f"{API_KEY}={ORG}",
        "MEMCHAT_EMBEDDER": embedder,
        # Benchmarks measure the request path: no idle commit (and so no extraction calls to the fake)
        # may fire during a run.
        "MEMCHAT_COMMIT_AFTER": "86400",
        "MEMCHAT_EXTRACTOR": "heuristic",
    }
    for name in AB_VARIABLES:  # A/B runs: set one of these for the bench to compare the alternatives
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.update(extra)
    return env


def use_app_ref(ref: str | None) -> str:
    """Benchmark memchat as committed at ``ref``, or the work tree when ``ref`` is None. Returns a
    description of the source for the report.

    With a ref, ``app/`` at that commit is exported with ``git archive`` into a temp dir (edits in progress
    in the work tree do not leak into the run), this tree's ``app/testkit`` is added to it (the harness stays
    the current one), and the same command runs again in a new process (``exec``) with ``PYTHONPATH`` at the
    export: the servers and the in-process code (store building, baselines) then import that ``app``. Call it
    before the run starts anything."""
    again = os.environ.get(SOURCE_ENV)
    if again:
        return again.split("\t", 1)[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    if ref is None:
        try:
            head = git("rev-parse", "--short", "HEAD")
            dirty = git("status", "--porcelain", "--", "app")
        except (subprocess.CalledProcessError, OSError):
            return "work tree"
        return f"work tree at {head}" + (" with uncommitted changes in app/" if dirty else "")
    commit = git("rev-parse", "--short", ref)
    dest = Path(tempfile.mkdtemp(prefix="memchat-bench-src-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "app"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    shutil.copytree(REPO_ROOT / "app" / "testkit", dest / "app" / "testkit", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    description = f"commit {commit} (`git archive`, work tree edits excluded)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(dest), os.environ.get("PYTHONPATH")])))
    env[SOURCE_ENV] = f"{dest}\t{description}"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def cleanup_app_exports() -> None:
    """Remove the export ``use_app_ref`` made for this run, if any."""
    again = os.environ.get(SOURCE_ENV)
    if again:
        shutil.rmtree(again.split("\t", 1)[0], ignore_errors=True)


class Memchat(MemchatServer):
    """``MemchatServer`` whose log file is removed when it stops."""

    def __init__(self, data_dir: Path, **kw: Any) -> None:
        kw.setdefault("keep_log", False)
        super().__init__(data_dir, **kw)


class ProxyProcess:
    """A proxy under test, run as a ``ManagedProcess`` on a free loopback port."""

    process: ManagedProcess | None = None
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.process = None


class FloorProxy(ProxyProcess):
    """``scripts/passthrough_floor.py`` (bare Litestar + httpx2 byte passthrough) in front of the fake."""

    def __init__(self, upstream_base: str, startup_timeout: float = 30.0) -> None:
        self.upstream_base = upstream_base
        self.startup_timeout = startup_timeout
        self.port = free_port()

    def start(self) -> FloorProxy:
        cmd = [sys.executable, str(ROOT / "scripts" / "passthrough_floor.py"), "--port", str(self.port),
               "--upstream", self.upstream_base]
        self.process = ManagedProcess(cmd, name="passthrough-floor", keep_log=False,
                                      startup_timeout=self.startup_timeout)
        # Any HTTP answer (405 for GET) means it is serving.
        self.process.start(http_ready(f"{self.url}/v1/chat/completions", any_status=True))
        return self


LITELLM_VERSION = "1.80.0"


def find_litellm(explicit: str | None) -> Path | None:
    cands = [explicit] if explicit else []
    cands += [os.environ.get("LITELLM_BIN"), "/tmp/memchat-bench-litellm/bin/litellm", shutil.which("litellm")]
    for c in cands:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    return None


def install_litellm(venv: Path = Path("/tmp/memchat-bench-litellm")) -> tuple[Path | None, str]:
    """Create a throw-away venv with ``litellm[proxy]`` and py-spy (never the project's own venv:
    ``litellm[proxy]==1.80.0`` pins ``uvicorn<0.30``, which conflicts with memchat's ``uvicorn>=0.54``)."""
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                               f"litellm[proxy]=={LITELLM_VERSION}", "py-spy"],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return None, proc.stderr.strip()[-500:]
    except (subprocess.SubprocessError, OSError) as exc:
        return None, str(exc)
    return find_litellm(str(venv / "bin" / "litellm")), ""


class LiteLLM(ProxyProcess):
    """A LiteLLM proxy in front of the fake upstream, fully offline."""

    def __init__(self, binary: Path, upstream_base: str, startup_timeout: float = 120.0) -> None:
        self.binary = binary
        self.upstream_base = upstream_base
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="memchat-bench-litellm-"))

    def version(self) -> str:
        py = self.binary.parent / "python"
        try:
            out = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                                 capture_output=True, text=True, timeout=60)
            return out.stdout.strip() or "?"
        except (subprocess.SubprocessError, OSError):
            return "?"

    def start(self) -> LiteLLM:
        cfg = self.dir / "config.yaml"
        cfg.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            f"      model: openai/{MODEL}\n"
            f"      api_base: {self.upstream_base}\n"
            "      api_key: x\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LITELLM_", "MEMCHAT_"))}
        env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "PYTHONUNBUFFERED": "1",
                    "NO_DOCS": "True", "DISABLE_ADMIN_UI": "True"})
        # The console script's shebang is the LiteLLM venv's python.
        self.process = ManagedProcess([str(self.binary), "--config", str(cfg), "--host", "127.0.0.1", "--port",
                                       str(self.port), "--num_workers", "1"], name="litellm", env=env, cwd=self.dir,
                                      log_path=self.dir / "litellm.log", startup_timeout=self.startup_timeout,
                                      poll_interval=0.5)
        self.process.start(http_ready(f"{self.url}/health/liveliness"))
        return self

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ reporting


def versions(litellm: str | None = None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("litestar", "uvicorn", "openai", "lancedb"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "?"
    out["litellm"] = litellm or "not run"
    return out


def machine_line() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}; "
            f"load average at start {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")


def load_now() -> str:
    load = os.getloadavg()
    return f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"


def stop_all(*servers: Any) -> None:
    """Stop every server that was started (None = never started); a failing stop does not hide the rest."""
    for srv in servers:
        if srv is not None:
            try:
                srv.stop()
            except Exception as exc:  # noqa: BLE001 -- cleanup: report and go on
                print(f"stopping {type(srv).__name__} failed: {exc}", file=sys.stderr)


def start_run(script: str, argv: Sequence[str] | None) -> str:
    """Common start of a benchmark: raise the open-files limit (hundreds of sockets) and return the exact
    command line, for the report."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    return (f".venv/bin/python scripts/{script} " + " ".join(sys.argv[1:] if argv is None else argv)).strip()


def write_section(title: str, body: str, path: Path = DOCS) -> None:
    """Replace (or append) the ``## title`` section of ``path``; every other section stays as it is."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    heading = f"## {title}"
    pattern = re.compile(rf"^## {re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    block = f"{heading}\n\n{body.strip()}\n\n"
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


__all__ = [
    "API_KEY", "CpuMeter", "DOCS", "LITELLM_VERSION", "MODEL", "ORG", "REALISTIC", "ROOT", "ZERO",
    "FakeUpstream", "LiteLLM", "Memchat", "RawClient", "StreamResult",
    "chat_body", "cleanup_app_exports", "closed_loop", "cpu_seconds", "find_litellm", "fmt", "install_litellm", "load_now", "machine_line", "md_table",
    "mean", "memchat_env", "own_rss_mib", "pct", "peak_rss_mib", "process_tree", "rss_mib", "thread_cpu", "thread_cpu_delta",
    "use_app_ref", "versions", "write_section",
]
