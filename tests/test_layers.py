"""The import contract (pyproject.toml [tool.importlinter]) holds, and it catches an upward import:
a temporary copy of the package with one function-level import from a lower layer into a higher
one must fail it. Marked `lint`: `make lint` runs it (import-linter is a dev dependency)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lint
ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", "pyproject.toml"], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


@pytest.fixture
def copy(tmp_path) -> Path:
    shutil.copytree(ROOT / "gadgetd", tmp_path / "gadgetd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_package_keeps_the_contract(copy):
    result = _lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, statement, broken", [
    # the wire layer reaching up into the syscall layer, inside a function
    ("wire.py", "def _upward():\n    from gadgetd import configfs  # noqa\n", "gadgetd.configfs"),
    # the model importing from gadgetd at all
    ("model.py", "from gadgetd.errors import TemplateError  # noqa\n", "gadgetd.errors"),
    # a cycle inside one layer: udc already imports syscalls
    ("syscalls.py", "def _cycle():\n    from gadgetd import udc  # noqa\n", "udc"),
    # board-side code importing the host kit
    ("supervisor.py", "def _host():\n    import gadgetd.host.device  # noqa\n", "gadgetd.host"),
])
def test_an_upward_import_breaks_it(copy, module, statement, broken):
    path = copy / "gadgetd" / module
    path.write_text(path.read_text() + "\n\n" + statement)
    result = _lint(copy)
    assert result.returncode != 0
    assert "1 broken" in result.stdout or "2 broken" in result.stdout, result.stdout
    assert broken in result.stdout
