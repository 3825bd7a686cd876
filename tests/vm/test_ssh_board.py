"""Board control over SSH (`pytest --pyargs gadgetd.hil --board ssh://...`), the path a separate
host uses to reach a board, against Debian's sshd listening on the VM's loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / name],
                       check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "client_key.pub").read_text())
    server = tmp_path / "sshd_config"
    server.write_text(f"""ListenAddress 127.0.0.1
Port {PORT}
HostKey {tmp_path / 'host_key'}
AuthorizedKeysFile {tmp_path / 'authorized_keys'}
PidFile {tmp_path / 'sshd.pid'}
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM yes
KbdInteractiveAuthentication no
StrictModes no
SetEnv PATH={Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin
""")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", server],
                            stderr=open(tmp_path / "sshd.log", "w"))
    client = tmp_path / "ssh_config"
    client.write_text(f"""Host 127.0.0.1
  IdentityFile {tmp_path / 'client_key'}
  UserKnownHostsFile {tmp_path / 'known_hosts'}
  StrictHostKeyChecking accept-new
""")
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
