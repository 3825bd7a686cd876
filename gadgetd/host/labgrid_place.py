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
import shlex

import attr
from labgrid.exceptions import NoResourceFoundError
from labgrid.factory import target_factory
from labgrid.step import step
from labgrid.strategy import Strategy, StrategyError, never_retry

from gadgetd.configfs import GADGETS
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
