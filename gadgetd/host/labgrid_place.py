"""A labgrid place as the HIL suite's board: the gadget's USB device is the place's USB resource
(exported by a labgrid exporter on the host the board hangs off), the board is reached through
the place's CommandProtocol driver (SSHDriver, or ShellDriver on a serial console).

GadgetdStrategy brings the place from "off" (no gadgetd on the board, nothing in configfs, no
USB device on the exporter) to "served" (gadgetd serving the template, the device enumerated and
seen by the exporter) and back. In an environment file:

    targets:
      main:
        resources:
          RemotePlace: {name: gadget}
        drivers:
          SSHDriver: {keyfile: client_key}
          GadgetdStrategy: {gadget: gadgetd-loopback, start_cmd: "gadgetd run loopback"}
    imports: [gadgetd.host.labgrid_place]

Needs the optional extra gadgetd[labgrid] (labgrid 26: gRPC coordinator).
"""

from __future__ import annotations

import enum
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import attr
from labgrid.driver.exception import ExecutionError
from labgrid.exceptions import (
    InvalidConfigError,
    NoConfigFoundError,
    NoResourceFoundError,
    NoSupplierFoundError,
)
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy import Strategy, StrategyError, never_retry

from gadgetd import template, templates
from gadgetd.configfs import GADGETS
from gadgetd.errors import GadgetdError
from gadgetd.host.board import Board, BoardError

USB_RESOURCES = ("USBFlashableDevice", "NetworkUSBFlashableDevice")
LOG = "/run/gadgetd-labgrid.log"  # gadgetd's output on the board


class Status(enum.Enum):
    unknown = 0
    off = 1  # no gadgetd on the board, nothing of the gadget in configfs, no USB device
    served = 2  # gadgetd serving, the device enumerated where the exporter sees it


def _gadget_gone(gadget: str) -> str:
    return f"! test -e {shlex.quote(str(GADGETS / gadget))}"


@target_factory.reg_driver
@attr.s(eq=False)
class GadgetdStrategy(Strategy):
    """`gadget`: the template's gadget name (configfs directory); `start_cmd` runs gadgetd on the
    board in the background (its output kept in LOG); `stop_cmd` ends it (SIGTERM: it tears
    the gadget down)."""

    bindings = {"shell": "CommandProtocol", "usb": {*USB_RESOURCES, None}}
    status = attr.ib(default=Status.unknown)
    gadget = attr.ib(default="gadgetd-loopback", validator=attr.validators.instance_of(str))
    start_cmd = attr.ib(default="gadgetd run loopback", validator=attr.validators.instance_of(str))
    stop_cmd = attr.ib(default="pkill -TERM -f '^[^ ]*python[^ ]* [^ ]*gadgetd run'",
                       validator=attr.validators.instance_of(str))
    timeout = attr.ib(default=60.0, converter=float)

    @never_retry
    @step(args=["status"])
    def transition(self, status, *, step):
        status = status if isinstance(status, Status) else Status[status]
        if status is Status.unknown:
            raise StrategyError(f"can not transition to {status}")
        if status is self.status:
            step.skip("nothing to do")
            return
        self.target.activate(self.shell)
        if status is Status.off:
            self._off()
        else:
            self.transition(Status.off)  # from a clean board, whatever came before
            self.shell.run_check(f"setsid sh -c {shlex.quote(self.start_cmd)} "
                                 f"> {LOG} 2>&1 < /dev/null &")
            if self.usb is not None:
                try:
                    self.target.await_resources([self.usb], timeout=self.timeout)
                except NoResourceFoundError:
                    out, _, _ = self.shell.run(f"tail -n 3 {LOG}")
                    raise StrategyError(f"{self.usb.name}: the gadget did not appear within "
                                        f"{self.timeout:g} s; gadgetd on the board: "
                                        + " | ".join(out)) from None
        self.status = status

    def _off(self) -> None:
        self.shell.run(self.stop_cmd)  # exit 1: nothing was running
        gone = _gadget_gone(self.gadget)
        self.shell.run_check(f"for i in $(seq {int(self.timeout * 5)}); do {gone} && exit 0; "
                             f"sleep 0.2; done; {gone}")
        if self.usb is not None:
            self.target.await_resources([self.usb], timeout=self.timeout, avail=False)

    @never_retry
    @step(args=["status"])
    def force(self, status, *, step):
        """Bookkeeping only (--lg-initial-state, labgrid-client -i)."""
        self.status = status if isinstance(status, Status) else Status[status]


class PlaceBoard(Board):
    """The HIL suite's device-side control through the place's command driver."""

    def __init__(self, gadget: str, shell):
        super().__init__(gadget)
        self.shell = shell

    def sh(self, command: str) -> str:
        out, err, code = self.shell.run(f"sh -c {shlex.quote(command)}")
        if code != 0:
            raise BoardError(f"{command}: {' '.join(err or out).strip()}")
        return "".join(f"{line}\n" for line in out)


def usb_identity(resource) -> tuple[int, int]:
    """(vendor, product) of the place's USB resource, as the exporter read them from udev."""
    if resource is None:
        raise LookupError("the place has no USB resource (USBFlashableDevice) for the gadget")
    if resource.vendor_id is None:
        raise LookupError(f"{resource.name or resource.cls}: the place's USB device is absent")
    return resource.vendor_id, resource.model_id


class PlaceError(GadgetdError):
    """The place cannot be used: its environment, drivers, strategy or board."""


LABGRID_ERRORS = (NoConfigFoundError, NoSupplierFoundError, InvalidConfigError, StrategyError,
                  ExecutionError)


def repro(env_file: str, template_name: str, repro_args: list[str], out: Path | None,
          log=sys.stderr) -> int:
    spec = template.load(templates.resolve(template_name))
    device = f"{spec.id_vendor:04x}:{spec.id_product:04x}"
    try:
        return _repro(env_file, [*repro_args, "--template", template_name], device, out, log)
    except LABGRID_ERRORS as exc:
        raise PlaceError(f"{env_file}: {type(exc).__name__}: {getattr(exc, 'msg', exc)}") from exc


def _repro(env_file: str, repro_args: list[str], device: str, out: Path | None, log) -> int:
    """`gadgetd repro --host remote` on the place's board, with the host's traffic from here,
    where the place's USB device is: the board's working directory is mounted here through the
    SSHDriver's sshfs, so `gadgetd-hil drive` writes its counts where repro reads them and sees
    repro's request for quiet. Prints the board's report; returns repro's exit status."""
    from labgrid import Environment

    target = Environment(config_file=env_file).get_target("main")
    try:  # getting a driver activates it: the SSHDriver connects
        strategy, ssh = target.get_driver("GadgetdStrategy"), target.get_driver("SSHDriver")
    except Exception as exc:  # labgrid's SSHDriver raises Exception on a connect timeout
        raise PlaceError(f"{env_file}: the place's board over SSH: {exc}") from exc
    strategy.transition(Status.off)  # repro builds its own gadget on a clean board
    board_dir = ssh.run_check("mktemp -d /run/gadgetd-repro.XXXXXX")[0].strip()
    with tempfile.TemporaryDirectory(prefix="gadgetd-place-") as local:
        failed: list[str] = []

        def sshfs():  # returns once unmounted; raises if sshfs ends within a second
            try:
                ssh.sshfs(path=board_dir, mountpoint=local)
            except ExecutionError as exc:
                failed.append(str(exc))

        mount = threading.Thread(target=sshfs, daemon=True)
        mount.start()
        _until(lambda: os.path.ismount(local) or not mount.is_alive(), 30)
        if not os.path.ismount(local):
            ssh.run(f"rm -rf {shlex.quote(board_dir)}")
            raise PlaceError(f"sshfs of the board's {board_dir} did not mount on {local} "
                             "(the board's sshd needs an sftp subsystem) " + " ".join(failed))
        drive = subprocess.Popen(
            [str(Path(sys.executable).parent / "gadgetd-hil"), "drive", "--device", device,
             "--report", f"{local}/drive.jsonl", "--until", f"{local}/exit-status"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            command = shlex.join(["gadgetd", "repro", "--host", "remote", "--host-report",
                                  f"{board_dir}/drive.jsonl", "--record",
                                  f"{board_dir}/repro.jsonl", *repro_args])
            # Output to files, not the session: a task repro leaves stuck in the kernel keeps
            # its descriptors, and ssh waits for every holder of the session's pipes.
            ssh.run(f"{command} > {board_dir}/report.txt 2> {board_dir}/repro.log < /dev/null; "
                    f"echo $? > {board_dir}/exit-status")
            print(Path(local, "report.txt").read_text(), end="", flush=True)
            drive.wait(timeout=60)
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
                for name in ("repro.jsonl", "drive.jsonl", "repro.log"):
                    shutil.copy(Path(local, name), out / name)
            return int(Path(local, "exit-status").read_text())
        finally:
            if drive.poll() is None:
                drive.terminate()
                drive.wait(timeout=30)
            subprocess.run(["fusermount3", "-u", local], check=False)
            mount.join(timeout=30)
            ssh.run(f"rm -rf {shlex.quote(board_dir)}")


def _until(done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)
