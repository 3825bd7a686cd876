"""The shipped systemd unit: what it promises, and systemd's own verdict on it."""

import subprocess

from gadgetd.service import render_unit


def test_unit_is_a_watchdogged_notify_service():
    unit = render_unit("/usr/local/bin/gadgetd")
    for line in ("Type=notify", "WatchdogSec=10", "Restart=on-failure", "TimeoutStartSec=300",
                 "ExecStart=/usr/local/bin/gadgetd run --wait-for-udc /etc/gadgetd/%i.toml",
                 "ExecReload=/bin/kill -HUP $MAINPID", "KillMode=mixed"):
        assert line in unit.splitlines()
    assert "@GADGETD@" not in unit


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    (tmp_path / "gadgetd@.service").write_text(render_unit())
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "./gadgetd@loopback.service"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_the_unit_is_hardened(tmp_path):
    """systemd-analyze security: 9.6 (UNSAFE) before the hardening, 2.7 now."""
    (tmp_path / "gadgetd@.service").write_text(render_unit())
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=30",
                           "--no-pager", "./gadgetd@loopback.service"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-600:] + proc.stderr
    exposure = float(proc.stdout.rsplit("exposure level for", 1)[1].split(":")[1].split()[0])
    assert exposure <= 2.7
