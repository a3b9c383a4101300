"""``MEMCHAT_ALLOCATOR`` (`app.heap`): the environment that preloads jemalloc, finding the library, telling
whether it is the process's malloc, when ``auto`` (the default) restarts with it and when it leaves the
allocator alone, and ``memchat serve``'s clear errors when ``jemalloc`` cannot be had. (The server
started with it: tests/e2e/test_operations.py.)"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from app import cli
from app.config import ConfigError, Settings
from app.heap import (
    JEMALLOC_CONF,
    JEMALLOC_LIBRARY,
    PRELOADED_MARK,
    HeapTrimmer,
    find_jemalloc,
    jemalloc_active,
    operator_preloads_allocator,
    preload_jemalloc,
)

ACTIVE = "from app.heap import jemalloc_active; print(jemalloc_active())"


def active_in_child(**env: str) -> str:
    done = subprocess.run([sys.executable, "-c", ACTIVE], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env}, cwd=Path(cli.__file__).parents[1])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_preloaded_jemalloc_is_seen_and_the_system_malloc_is_not() -> None:
    library = find_jemalloc()
    assert library, f"{JEMALLOC_LIBRARY} is missing: `make test` installs Debian's libjemalloc2"
    assert active_in_child() == "False"
    assert active_in_child(**preload_jemalloc({}, library)) == "True"
    assert not jemalloc_active()  # this test process runs on the system malloc


def test_the_preload_environment_keeps_the_operators_choices() -> None:
    env = preload_jemalloc({"LD_PRELOAD": "/opt/a.so:/opt/b.so", "KEEP": "1"}, "/lib/libjemalloc.so.2")
    assert env["LD_PRELOAD"] == "/lib/libjemalloc.so.2 /opt/a.so /opt/b.so"
    assert env["MALLOC_CONF"] == JEMALLOC_CONF and env[PRELOADED_MARK] == "1" and env["KEEP"] == "1"
    again = preload_jemalloc({**env, "MALLOC_CONF": "narenas:2"}, "/lib/libjemalloc.so.2")
    assert again["LD_PRELOAD"] == env["LD_PRELOAD"]  # not listed twice
    assert again["MALLOC_CONF"] == "narenas:2"


def test_find_jemalloc_looks_in_the_given_folders(tmp_path: Path) -> None:
    assert find_jemalloc((str(tmp_path),)) is None
    (tmp_path / JEMALLOC_LIBRARY).write_bytes(b"")
    assert find_jemalloc(("/nonexistent", str(tmp_path))) == str(tmp_path / JEMALLOC_LIBRARY)


def test_allocator_setting() -> None:
    assert Settings.from_env({}).server.allocator == "auto"
    for choice in ("auto", "system", "jemalloc"):
        assert Settings.from_env({"MEMCHAT_ALLOCATOR": choice}).server.allocator == choice
    with pytest.raises(ConfigError, match="MEMCHAT_ALLOCATOR"):
        Settings.from_env({"MEMCHAT_ALLOCATOR": "tcmalloc"})


def serve_args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(data_dir=tmp_path / "data", log_level="warning", access_log=None, host="127.0.0.1",
                              port=1, workers=1)


def test_serve_without_the_library_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MEMCHAT_ALLOCATOR", "jemalloc")
    monkeypatch.delenv(PRELOADED_MARK, raising=False)
    monkeypatch.setattr("app.heap.find_jemalloc", lambda: None)
    monkeypatch.setattr("os.execve", lambda *a: pytest.fail("must not restart"))
    assert cli.cmd_serve(serve_args(tmp_path)) == 2
    assert "MEMCHAT_ALLOCATOR=jemalloc but libjemalloc.so.2 is in none of" in capsys.readouterr().err


def test_serve_does_not_restart_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Restarted with the preload but malloc still not jemalloc's (a library that did not load): an error, not
    a loop of restarts."""
    monkeypatch.setenv("MEMCHAT_ALLOCATOR", "jemalloc")
    monkeypatch.setenv(PRELOADED_MARK, "1")
    monkeypatch.setattr("os.execve", lambda *a: pytest.fail("must not restart"))
    assert cli.cmd_serve(serve_args(tmp_path)) == 2
    assert "was preloaded but malloc is not jemalloc's" in capsys.readouterr().err


def test_serve_restarts_itself_with_the_preload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    monkeypatch.setenv("MEMCHAT_ALLOCATOR", "jemalloc")
    monkeypatch.delenv(PRELOADED_MARK, raising=False)
    monkeypatch.setattr("app.heap.find_jemalloc", lambda: "/x/libjemalloc.so.2")
    monkeypatch.setattr("os.execve", lambda *a: calls.append(a))
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "app", "serve", "--port", "1"])
    cli.cmd_serve(serve_args(tmp_path))
    (path, argv, env), = calls
    assert path == sys.executable and argv == [sys.executable, "-m", "app", "serve", "--port", "1"]
    assert env["LD_PRELOAD"].split()[0] == "/x/libjemalloc.so.2" and env[PRELOADED_MARK] == "1"


async def test_the_trimmer_stands_down_under_jemalloc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.heap.jemalloc_active", lambda: True)
    trimmer = HeapTrimmer(0.01, lambda: (0, 0))
    with anyio.fail_after(5):
        await trimmer.run()  # returns at once instead of looking every 10 ms forever
    assert trimmer.trims == 0


class _WentOn(Exception):
    """cmd_serve got past the allocator step (its next step, setting up logging, raises this instead)."""


def _went_on(*args, **kwargs) -> None:
    raise _WentOn


def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """cmd_serve writes these to the environment; monkeypatch puts them back."""
    for name in ("MEMCHAT_DATA_DIR", "MEMCHAT_LOG_LEVEL", "MEMCHAT_ALLOCATOR", PRELOADED_MARK, "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMCHAT_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("app.obs.logs.configure_logging", _went_on)


@pytest.mark.parametrize("found", ["/x/libjemalloc.so.2", None])
def test_auto_restarts_with_jemalloc_only_when_the_library_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    found: str | None) -> None:
    calls: list[tuple] = []
    _isolate(monkeypatch, tmp_path)  # MEMCHAT_ALLOCATOR unset: the default, auto
    monkeypatch.setattr("app.heap.find_jemalloc", lambda: found)
    monkeypatch.setattr("os.execve", lambda *a: calls.append(a))
    if found:
        assert cli.cmd_serve(serve_args(tmp_path)) == 2  # execve "returned": the not-reached path
        (_, _, env), = calls
        assert env["LD_PRELOAD"].split()[0] == found
    else:
        with pytest.raises(_WentOn):  # no library: the server starts on the system's malloc
            cli.cmd_serve(serve_args(tmp_path))
        assert calls == []


@pytest.mark.parametrize("env", [{"MEMCHAT_ALLOCATOR": "system"},
                                 {"LD_PRELOAD": "/opt/lib/libtcmalloc_minimal.so.4"},
                                 {PRELOADED_MARK: "1"}])
def test_auto_leaves_the_allocator_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         env: dict[str, str]) -> None:
    """``system`` never restarts; ``auto`` does not when the operator preloads an allocator of their own, nor
    a second time when the preload did not take (it goes on without, no loop of restarts)."""
    _isolate(monkeypatch, tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("app.heap.find_jemalloc", lambda: "/x/libjemalloc.so.2")
    monkeypatch.setattr("os.execve", lambda *a: pytest.fail("must not restart"))
    with pytest.raises(_WentOn):
        cli.cmd_serve(serve_args(tmp_path))


def test_operator_preloads_allocator() -> None:
    assert operator_preloads_allocator({"LD_PRELOAD": "/usr/lib/libmimalloc.so.2"})
    assert operator_preloads_allocator({"LD_PRELOAD": "libfoo.so:/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
    assert not operator_preloads_allocator({"LD_PRELOAD": "/usr/lib/libfaketime.so.1"})
    assert not operator_preloads_allocator({})
