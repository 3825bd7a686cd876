"""install-service / uninstall-service into a staging root (the systemd path runs in the VM)."""

import subprocess
import sys


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
    proc = gadgetd("uninstall-service", "gadgetd-loopback", "--root", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not config.exists() and not unit.exists()


def test_invalid_template_is_not_installed(tmp_path, loopback_text):
    bad = tmp_path / "bad.toml"
    bad.write_text(loopback_text.replace("idVendor = 0x1d6b", "idVendor = -1"))
    proc = gadgetd("install-service", bad, "--root", tmp_path / "root")
    assert proc.returncode == 2 and "gadget.idVendor = -1" in proc.stderr
    assert not (tmp_path / "root").exists()
