"""What an earlier gadgetd left behind: remove a crashed daemon's gadget (its ownership record
is still there), refuse one nobody recorded unless --replace, and never reopen a deactivated
instance that is still bound. The caller holds the gadget's claim (gadgetd.ownership), so no
live daemon is building or serving it."""

from __future__ import annotations

import logging
import time

from gadgetd import configfs, ffs, runstate, udc
from gadgetd.errors import SetupError
from gadgetd.model import GadgetSpec
from gadgetd.ownership import Owner

log = logging.getLogger(__name__)


def clean(spec: GadgetSpec, replace: bool, previous: Owner | None) -> None:
    """`previous`: the record of a daemon that owned this gadget and did not exit cleanly."""
    runstate.remove(spec.name)  # a dead daemon's status
    gadget_dir = configfs.gadget_dir(spec.name)
    if not gadget_dir.exists():
        if previous is not None:  # its teardown removed the tree but not every mount
            _unmount_stale(spec, previous)
        return
    if previous is None and not replace:
        raise SetupError(f"gadget {spec.name!r} already exists in configfs: "
                         f"'gadgetd down {spec.name}' or run with --replace")
    bound = udc.bound(gadget_dir)
    for fn in spec.ffs_functions.values():
        mounts = ffs.mountpoints(fn.name)
        if mounts and bound and (mounts[0] / "ep0").exists() and not (mounts[0] / "ep1").exists():
            # A crashed daemon's no_disconnect instance: DEACTIVATED with the gadget bound.
            log.warning("FunctionFS %s is deactivated (its daemon died) while %s stays bound "
                        "to %s: unbinding before anything reopens ep0, since kernels whose "
                        "open() takes ffs->mutex (e5bf5ee26663 without 2005aabe94ea) "
                        "deadlock reopening it bound", fn.name, spec.name, bound)
    who = f"gadgetd pid {previous.pid}" if previous else "an earlier run"
    log.warning("removing gadget %s left by %s", spec.name, who)
    start = time.monotonic()
    failures = configfs.remove_gadget(spec.name)
    if failures:
        raise SetupError(f"could not remove the leftover gadget: {failures[0]}")
    log.info("leftovers removed in %.0f ms (the reset ran in umount, not in open)",
             (time.monotonic() - start) * 1e3)


def _unmount_stale(spec: GadgetSpec, previous: Owner) -> None:
    """Mounts of our instances on our mount points that a dead daemon could not unmount (a
    worker was stuck in the kernel when it stopped): unmounted, once nobody holds them."""
    for fn in spec.ffs_functions.values():
        if fn.mountpoint in ffs.mountpoints(fn.name):
            log.warning("unmounting %s left mounted by gadgetd pid %d", fn.mountpoint,
                        previous.pid)
            ffs.unmount(fn.mountpoint)
