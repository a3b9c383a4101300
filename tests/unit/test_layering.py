"""The layering check: imports in ``app`` run one way (pyproject.toml, ``[tool.importlinter]``).

The contract is checked on the real package, and -- to show it can fail -- on a copy of the package with
one synthetic module that imports upwards (storage importing the API layer)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layers() -> None:
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "source", "broken"), [
    ("app/storage/upward.py", "from app.api import wire\n", "app layers"),
    ("app/memory/sideways.py", "from app.turns import turnlog\n", "app layers"),
    ("app/turns/cycle_a.py", "from app.turns import cycle_b\n", "no import cycles"),
])
def test_an_upward_import_or_a_cycle_breaks_the_check(tmp_path: Path, module: str, source: str, broken: str) -> None:
    shutil.copytree(REPO / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / module).write_text(source)
    if "cycle_a" in module:
        (tmp_path / "app/turns/cycle_b.py").write_text("from app.turns import cycle_a\n")
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout
    assert module.removesuffix(".py").replace("/", ".").split(".")[-1] in result.stdout
