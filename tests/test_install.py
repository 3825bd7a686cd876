"""install-service / uninstall-service into a staging root (the systemd path runs in the VM)."""

import os
import subprocess
import sys

import pytest

from gadgetd import install
from gadgetd.errors import GadgetdError
from gadgetd.install import check_runs_as_root
from gadgetd.service import SYSUSERS_FILE

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="install-service trusts only root-owned "
                             "files, and only root can make them")


def gadgetd(*args):
    return subprocess.run([sys.executable, "-m", "gadgetd", *map(str, args)],
                          capture_output=True, text=True, check=False)


@as_root
def test_install_and_uninstall_into_a_root(tmp_path, templates_dir):
    proc = gadgetd("install-service", templates_dir / "loopback.toml", "--root", tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = tmp_path / "etc/gadgetd/gadgetd-loopback.toml"
    unit = tmp_path / "etc/systemd/system/gadgetd@.service"
    assert config.read_text() == (templates_dir / "loopback.toml").read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o644"
    assert "ExecStart=" in unit.read_text() and "@GADGETD@" not in unit.read_text()
    sysusers = tmp_path / "etc/sysusers.d/gadgetd.conf"
    assert sysusers.read_text() == SYSUSERS_FILE.read_text()
    assert oct(sysusers.stat().st_mode & 0o777) == "0o644"
    assert f"installed {sysusers}" in proc.stdout
    assert f"systemd-sysusers --root={tmp_path}" in proc.stdout  # staged: not applied here
    proc = gadgetd("uninstall-service", "gadgetd-loopback", "--root", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not config.exists() and not unit.exists() and not sysusers.exists()


def test_install_into_slash_creates_the_user_then_enables(monkeypatch, tmp_path, templates_dir):
    """root = /: systemd-sysusers applies the installed file before the unit is enabled."""
    ran = []
    monkeypatch.setattr(install, "_run", lambda *argv: ran.append(argv))
    # Absolute directories: Path("/") / them is tmp_path, and `root == Path("/")` still holds.
    monkeypatch.setattr(install, "CONFIG_DIR", tmp_path / "etc/gadgetd")
    monkeypatch.setattr(install, "UNIT_DIR", tmp_path / "etc/systemd/system")
    monkeypatch.setattr(install, "SYSUSERS_CONF", tmp_path / "etc/sysusers.d/gadgetd.conf")
    done = install.install(templates_dir / "loopback.toml")
    assert ran == [("systemd-sysusers", str(tmp_path / "etc/sysusers.d/gadgetd.conf")),
                   ("systemctl", "daemon-reload"),
                   ("systemctl", "enable", "gadgetd@gadgetd-loopback.service")]
    assert (tmp_path / "etc/sysusers.d/gadgetd.conf").read_text() == SYSUSERS_FILE.read_text()
    assert "the gadgetd user exists (systemd-sysusers)" in done


def test_invalid_template_is_not_installed(tmp_path, loopback_text):
    bad = tmp_path / "bad.toml"
    bad.write_text(loopback_text.replace("idVendor = 0x1d6b", "idVendor = -1"))
    proc = gadgetd("install-service", bad, "--root", tmp_path / "root")
    assert proc.returncode == 2 and "gadget.idVendor = -1" in proc.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("command", [("install-service", "loopback", "--name"),
                                     ("uninstall-service",)])
@pytest.mark.parametrize("name", ["../../etc/x", "a/b", "", "x\n", ".hidden"])
def test_bad_service_name_refused(tmp_path, command, name):
    proc = gadgetd(*command, name, "--root", tmp_path / "root")
    assert proc.returncode == 1 and not (tmp_path / "root").exists()
    assert proc.stderr == (f"gadgetd: error: name {name!r}: must be 1-40 characters of "
                           "A-Z a-z 0-9 _ . - (as a gadget name)\n")


@pytest.fixture
def venv(tmp_path):
    """venv/bin/python and venv/bin/gadgetd, every directory mode 0755 and the files 0755."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    for name in ("python", "gadgetd"):
        (tmp_path / "venv" / "bin" / name).write_text("")
    for path in (tmp_path, tmp_path / "venv", tmp_path / "venv" / "bin",
                 tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin" / "gadgetd"):
        path.chmod(0o755)
    return tmp_path / "venv"


def _paths(venv):
    return [venv / "bin" / "gadgetd", venv / "bin" / "python", venv]


@as_root
def test_root_owned_venv_accepted(venv):
    check_runs_as_root(_paths(venv))


def test_venv_owned_by_another_user_refused(venv):
    uid = os.geteuid()
    if uid == 0:
        uid = 65534
        os.chown(venv / "bin" / "python", uid, uid)
    with pytest.raises(GadgetdError, match=f"refusing a unit that runs {venv}/bin/python as "
                                           f"root: {venv}/bin/python belongs to uid {uid}, "):
        check_runs_as_root([venv / "bin" / "python", venv])


@as_root
@pytest.mark.parametrize("relative, mode", [("bin/gadgetd", 0o775), ("bin", 0o757), ("", 0o770),
                                            ("..", 0o777)])
def test_writable_venv_or_ancestor_refused(venv, relative, mode):
    (venv / relative).chmod(mode)
    with pytest.raises(GadgetdError, match=f": {(venv / relative).resolve()} is writable by group or others "
                                           f"\\(mode {mode:o}\\)$"):
        check_runs_as_root(_paths(venv))


@as_root
def test_interpreter_checked_where_its_symlink_leads(venv, tmp_path):
    (tmp_path / "python3").write_text("")
    (tmp_path / "python3").chmod(0o777)
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(tmp_path / "python3")
    with pytest.raises(GadgetdError, match=f"{tmp_path}/python3 is writable by group or others"):
        check_runs_as_root(_paths(venv))
