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
