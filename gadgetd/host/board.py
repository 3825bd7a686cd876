"""Device-side control for HIL tests that change the gadget's state: unbind/bind the UDC,
make the daemon re-enumerate. The same operations either on this machine (the VM, or a board
testing itself) or on a board over SSH (`--board ssh://USER@HOST[:PORT]`)."""

from __future__ import annotations

import shlex
import subprocess
from urllib.parse import urlparse

from gadgetd.configfs import GADGETS


class BoardError(Exception):
    pass


class Board:
    """Runs shell commands on the board; subclasses say where."""

    def __init__(self, gadget: str):
        self.gadget = gadget
        self.udc_file = GADGETS / gadget / "UDC"

    def sh(self, command: str) -> str:
        raise NotImplementedError

    def bound_udc(self) -> str:
        return self.sh(f"cat {shlex.quote(str(self.udc_file))}").strip()

    def unbind(self) -> str:
        """Unbind the gadget (the host sees a disconnect); returns the UDC it was bound to."""
        udc = self.bound_udc()
        self.sh(f"echo > {shlex.quote(str(self.udc_file))}")
        return udc

    def bind(self, udc: str) -> None:
        self.sh(f"echo {shlex.quote(udc)} > {shlex.quote(str(self.udc_file))}")

    def reload_daemon(self) -> None:
        """The serving gadgetd re-reads its template and re-enumerates (SIGHUP)."""
        self.sh(f"gadgetd reload {shlex.quote(self.gadget)}")


class LocalBoard(Board):
    def __init__(self, gadget: str, gadgetd: str = "gadgetd"):
        super().__init__(gadget)
        self.gadgetd = gadgetd

    def sh(self, command: str) -> str:
        command = command.replace("gadgetd reload", f"{shlex.quote(self.gadgetd)} reload", 1)
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BoardError(f"{command}: {proc.stderr.strip()}")
        return proc.stdout


class SshBoard(Board):
    def __init__(self, gadget: str, url: str, identity: str | None = None,
                 ssh_config: str | None = None):
        super().__init__(gadget)
        parsed = urlparse(url)
        if parsed.scheme != "ssh" or not parsed.hostname:
            raise BoardError(f"--board {url}: expected ssh://USER@HOST[:PORT]")
        self.target = f"{parsed.username}@{parsed.hostname}" if parsed.username else parsed.hostname
        self.options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if parsed.port:
            self.options += ["-p", str(parsed.port)]
        if identity:
            self.options += ["-i", identity]
        if ssh_config:
            self.options = ["-F", ssh_config, *self.options]
        self.sudo = "" if parsed.username == "root" else "sudo -n "

    def sh(self, command: str) -> str:
        remote = f"{self.sudo}sh -c {shlex.quote(command)}"
        # `--`: a target beginning with `-` (ssh://-oProxyCommand=...) is a host, not an option.
        proc = subprocess.run(["ssh", *self.options, "--", self.target, remote],
                              capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise BoardError(f"ssh {self.target} {command}: {proc.stderr.strip()}")
        return proc.stdout
