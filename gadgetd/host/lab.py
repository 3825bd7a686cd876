"""`gadgetd-hil lab`: a board VM and a host VM, on two kernels, joined by a private link.

The link is a pair of QEMU datagram sockets (Unix sockets in a private directory): each VM's
virtio NIC sends to the other's, so nothing leaves this machine and no host network is touched.
The board (BOARD_ADDRESS) loads usbip-vudc and exports its gadget with usbipd; the host
(HOST_ADDRESS) loads vhci-hcd and keeps the board's device attached (usbip.Attacher).

Both VMs see OUT read-write as $GADGETD_LAB; each writes its logs and results under OUT/board or
OUT/host ($GADGETD_RESULTS). The board runs sshd on the link with a key made for this lab, so
the host can control it as it would a real board: `--board ssh://root@BOARD_ADDRESS
--board-ssh-config $GADGETD_LAB/ssh/ssh_config`. When the board's command ends,
OUT/board/exit-status appears, so a host command can stop then (`gadgetd-hil drive --until`).
The lab ends with the host's command; the board VM is then stopped.

Exit status: the host command's; 1 if the board command failed; 124 when either did not finish
in time; 125 when a VM did not boot or could not set up its USB stack.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from gadgetd.host import vm
from gadgetd.host.kernels import Kernel

BOARD_ADDRESS, HOST_ADDRESS = "10.10.0.1", "10.10.0.2"
MACS = {"board": "52:54:00:67:64:01", "host": "52:54:00:67:64:02"}


@dataclass
class LabResult:
    status: int
    board: vm.VmResult
    host: vm.VmResult
    note: str


def _link(sockets: Path, side: str) -> tuple[str, ...]:
    other = "host" if side == "board" else "board"
    return ("-netdev", f"dgram,id=lab,local.type=unix,local.path={sockets / side},"
                       f"remote.type=unix,remote.path={sockets / other}",
            "-device", f"virtio-net-pci,netdev=lab,mac={MACS[side]}")


def ssh_configs(ssh: Path, address: str, port: int = 22) -> Path:
    """Keys (kept where they exist) and configurations for an sshd on `address`:`port` that lets
    root in with the one client key, in directory `ssh`; returns the client's ssh_config."""
    ssh.mkdir(exist_ok=True)
    for name in ("host_key", "client_key"):
        if not (ssh / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ssh / name],
                           check=True)
    (ssh / "authorized_keys").write_text((ssh / "client_key.pub").read_text())
    # PAM: root's account is locked (no password), and sshd without PAM refuses it any key.
    (ssh / "sshd_config").write_text(f"""ListenAddress {address}
Port {port}
HostKey {ssh / 'host_key'}
AuthorizedKeysFile {ssh / 'authorized_keys'}
PidFile {ssh / 'sshd.pid'}
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM yes
KbdInteractiveAuthentication no
StrictModes no
SetEnv PATH={Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin
Subsystem sftp internal-sftp
""")
    # One connection for every command (the HIL suite's board control): a new ssh handshake
    # costs seconds under emulation. Its socket is in /tmp, not in `ssh` (9p in the lab).
    (ssh / "ssh_config").write_text(f"""Host {address}
  IdentityFile {ssh / 'client_key'}
  UserKnownHostsFile {ssh / 'known_hosts'}
  StrictHostKeyChecking accept-new
  ControlMaster auto
  ControlPath /tmp/gadgetd-ssh-%C
  ControlPersist 60
""")
    (ssh / "known_hosts").unlink(missing_ok=True)  # a new sshd may have a new host key
    return ssh / "ssh_config"


def exit_status(board: vm.VmResult, host: vm.VmResult) -> tuple[int, str]:
    """The lab's exit status and why, from both VMs' results (see the module's docstring)."""
    for side, result in (("board", board), ("host", host)):
        if result.boot_seconds is None or result.status == vm.NOT_BOOTED and not result.stopped:
            return vm.NOT_BOOTED, f"the {side} VM: {result.note or 'did not boot'}"
    for side, result in (("board", board), ("host", host)):
        if result.status == vm.TIMEOUT and not result.stopped:
            return vm.TIMEOUT, f"the {side} command: {result.note}"
    if not board.stopped and board.status != 0:
        return 1, f"the board command exited {board.status}"
    return host.status, ""


def run(board_kernel: Kernel, host_kernel: Kernel, board_command: list[str],
        host_command: list[str], out: Path, timeout: float = 1800, log=sys.stderr) -> LabResult:
    out = out.resolve()
    for side in ("board", "host"):
        (out / side).mkdir(parents=True, exist_ok=True)
        (out / side / "exit-status").unlink(missing_ok=True)
    ssh_configs(out / "ssh", BOARD_ADDRESS)
    sockets = Path(tempfile.mkdtemp(prefix="gadgetd-lab-"))
    stop_board = threading.Event()
    results: dict[str, vm.VmResult] = {}

    def board():
        results["board"] = vm.run(
            board_kernel, board_command, timeout=timeout, results=out / "board", usb="usbip-board",
            guest_options=("--address", f"{BOARD_ADDRESS}/24", "--lab", str(out)), shared=(out,),
            qemu_options=_link(sockets, "board"), stop=stop_board, log=log)
        if not results["board"].stopped:
            (out / "board" / "exit-status").write_text(f"{results['board'].status}\n")

    thread = threading.Thread(target=board, name="lab-board")
    thread.start()
    try:
        results["host"] = vm.run(
            host_kernel, host_command, timeout=timeout, results=out / "host", usb="usbip-host",
            guest_options=("--address", f"{HOST_ADDRESS}/24", "--attach", BOARD_ADDRESS,
                           "--lab", str(out)),
            shared=(out,), qemu_options=_link(sockets, "host"), log=log)
    finally:
        stop_board.set()
        thread.join()
        for side in ("board", "host"):
            (sockets / side).unlink(missing_ok=True)
        sockets.rmdir()
    status, note = exit_status(results["board"], results["host"])
    return LabResult(status, results["board"], results["host"], note)
