"""gadgetd's own function types, registered through the `gadgetd.functions` entry points.

Descriptions only: the servers (loopback.py, sourcesink.py) are imported by the worker.
"""

from __future__ import annotations

from gadgetd.model import FunctionSpec, FunctionType, Option


def bulk_pair(spec: FunctionSpec) -> str | None:
    layout = sorted((e.transfer, e.direction) for e in spec.endpoints)
    if layout != [("bulk", "in"), ("bulk", "out")]:
        return f"type {spec.type!r} needs exactly one bulk IN and one bulk OUT endpoint"
    return None


LOOPBACK = FunctionType(
    name="loopback", kind="ffs", server="gadgetd.functions.loopback:Loopback",
    check_layout=bulk_pair,
    doc="bulk OUT echoed on bulk IN, transfer boundaries kept; vendor echo and status requests")

SOURCESINK = FunctionType(
    name="sourcesink", kind="ffs", server="gadgetd.functions.sourcesink:SourceSink",
    check_layout=bulk_pair,
    options=(Option("pattern", int, 0, choices=(0, 1),
                    doc="0 all zeros, 1 (i % 63) per packet (Gadget Zero's patterns)"),),
    doc="Gadget Zero compatible source/sink (usbtest and testusb run against it)")
