"""The command line's own behaviour (no server): progress bars, --data-dir everywhere, help texts."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from app.cli import _progress, build_parser


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_rate_and_eta_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", Terminal())
    monkeypatch.setenv("LINES", "40")
    monkeypatch.setenv("COLUMNS", "100")
    with _progress("import", 10, " records") as bar:
        bar.update(10)
    import sys

    text = sys.stderr.getvalue()
    assert "import" in text and "10/10" in text and "records/s" in text and "<" in text  # rate, ETA


def test_progress_is_quiet_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    with _progress("import", 10, " records") as bar:
        bar.update(10)
    assert pipe.getvalue() == ""


@pytest.mark.parametrize("argv", [["keys", "--data-dir", "X", "create", "--org", "a"],
                                  ["keys", "create", "--org", "a", "--data-dir", "X"],
                                  ["keys", "list", "--data-dir", "X"],
                                  ["keys", "--data-dir", "X", "revoke", "k1"]])
def test_keys_take_data_dir_before_or_after_the_subcommand(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).data_dir == Path("X")


def test_keys_and_serve_share_the_default_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMCHAT_DATA_DIR", "/srv/memchat")
    parser = build_parser()
    assert parser.parse_args(["keys", "list"]).data_dir == parser.parse_args(["serve"]).data_dir == Path("/srv/memchat")
