"""Board control over SSH (`pytest --pyargs gadgetd.hil --board ssh://...`), the path a separate
host uses to reach a board, against Debian's sshd listening on the VM's loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gadgetd.host.guest import start_sshd
from gadgetd.host.lab import ssh_configs

PORT = 2222


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sshd exited {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"sshd not listening on {port}")


@pytest.fixture
def ssh_config(tmp_path) -> Path:
    """sshd on 127.0.0.1:PORT accepting one fresh key for root; returns the client's ssh_config."""
    client = ssh_configs(tmp_path, "127.0.0.1", PORT)
    sshd = start_sshd(tmp_path / "sshd_config", open(tmp_path / "sshd.log", "w"))
    try:
        _wait_listening(PORT, sshd)
        yield client
    finally:
        sshd.terminate()
        sshd.wait(10)


def test_hil_board_control_over_ssh(daemon, ssh_config):
    sshd_log = ssh_config.parent / "sshd.log"
    d = daemon()
    d.wait_bound()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "gadgetd.hil", "-v", "-rs",
         "-p", "no:cacheprovider",
         "-k", "test_udc_unbind_bind or test_daemon_reenumerates_on_reload",
         "--board", f"ssh://root@127.0.0.1:{PORT}", "--board-ssh-config", str(ssh_config)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + sshd_log.read_text()
    assert "2 passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout
    assert "SIGHUP: re-enumerating" in d.stop_and_log()  # the reload reached the daemon through ssh
