"""The wheel a board installs: only the declared dependencies, the templates as package data
(found by name), the version from one place, the function types through their entry points,
the HIL suite as a pytest plugin. Builds and installs into a fresh venv and runs everything
from outside the checkout (slow: marked `wheel`)."""

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
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    listed = dict(line.split("\t") for line in
                  run(env_dir / "bin" / "gadgetd", "templates", cwd=outside).splitlines())
    assert sorted(listed) == ["loopback", "mtp", "pizero", "pizero-composite", "sourcesink"]
    assert (Path(listed["mtp"]).parent / "umtprd.conf").is_file()  # umtprd's, beside its template
    for name, path in listed.items():
        assert Path(path).is_file() and "site-packages/gadgetd/configfs_templates" in path
        out = run(env_dir / "bin" / "gadgetd", "check", name, cwd=outside)
        assert ": ok: gadget" in out and path in out
    unit = run(py, "-c", "from gadgetd.service import render_unit; print(render_unit())")
    assert f"ExecStart={env_dir}/bin/gadgetd run --wait-for-udc" in unit
    sysusers = run(py, "-c", "from gadgetd.service import SYSUSERS_FILE; print(SYSUSERS_FILE.read_text())",
                   cwd=outside)
    assert 'u gadgetd - "gadgetd function workers"' in sysusers  # install-service needs it
    # Every board-side module imports with the declared dependencies alone (libaio included).
    run(py, "-c", "import gadgetd.cli, gadgetd.supervisor, gadgetd.worker, gadgetd.strategy, "
        "gadgetd.functions.loopback, gadgetd.functions.sourcesink, gadgetd.repro.runner, "
        "gadgetd.repro.scenarios, gadgetd.repro.local_host", cwd=outside)
    # The HIL suite: a pytest plugin found through its entry point, from any directory.
    run(py, "-m", "pip", "install", "-q", "pytest")
    collected = run(py, "-m", "pytest", "--pyargs", "gadgetd.hil", "--collect-only", "-q",
                    "--template", "loopback", cwd=outside)
    assert "test_enumeration.py::test_device_appears_within_timeout" in collected
    assert "tests collected" in collected
    options = run(py, "-m", "pytest", "--help", cwd=outside)
    assert "--device" in options and "--board-ssh-config" in options
