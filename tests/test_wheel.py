"""The wheel a board installs: only the declared dependencies, the templates included, the
version from one place. Builds and installs into a fresh venv (slow: marked `wheel`)."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

import gadgetd

pytestmark = pytest.mark.wheel
ROOT = Path(__file__).resolve().parent.parent


def run(*args, **kw):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False,
                          **kw)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_wheel_installs_and_runs_with_declared_dependencies(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", ROOT)
    (wheel,) = (tmp_path / "dist").glob("gadgetd-*.whl")
    assert wheel.name.startswith(f"gadgetd-{gadgetd.__version__}-py3-none-any")
    env_dir = tmp_path / "board"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    run(py, "-m", "pip", "install", "-q", wheel)
    installed = run(py, "-m", "pip", "list", "--format=freeze").lower()
    for dev_only in ("pytest", "virtme-ng", "matplotlib", "hypothesis"):
        assert dev_only not in installed
    assert run(env_dir / "bin" / "gadgetd", "--version").strip() == (
        f"gadgetd, version {gadgetd.__version__}")
    templates = env_dir / "share" / "gadgetd" / "configfs_templates"
    for name in ("loopback.toml", "sourcesink.toml", "pizero.toml"):
        out = run(env_dir / "bin" / "gadgetd", "check", templates / name)
        assert ": ok: gadget" in out
    unit = run(py, "-c", "from gadgetd.service import render_unit; print(render_unit())")
    assert f"ExecStart={env_dir}/bin/gadgetd run --wait-for-udc" in unit
