"""install-service / uninstall-service into a staging root (the systemd path runs in the VM)."""

import subprocess
import sys

from gadgetd import install
from gadgetd.service import SYSUSERS_FILE


def gadgetd(*args):
    return subprocess.run([sys.executable, "-m", "gadgetd", *map(str, args)],
                          capture_output=True, text=True, check=False)


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
