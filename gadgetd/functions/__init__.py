"""Function types a template can name, and the endpoint layout each one needs."""

from __future__ import annotations

from gadgetd.template import FunctionSpec


def _bulk_pair(spec: FunctionSpec) -> str | None:
    layout = sorted((e.transfer, e.direction) for e in spec.endpoints)
    if layout != [("bulk", "in"), ("bulk", "out")]:
        return f"type {spec.type!r} needs exactly one bulk IN and one bulk OUT endpoint"
    return None


_LAYOUTS = {"loopback": _bulk_pair, "sourcesink": _bulk_pair}


def check_layout(spec: FunctionSpec) -> str | None:
    """A problem with the endpoint layout for the function's type, or None."""
    return _LAYOUTS[spec.type](spec)


def server_class(type_name: str):
    if type_name == "loopback":
        from gadgetd.functions.loopback import Loopback

        return Loopback
    if type_name == "sourcesink":
        from gadgetd.functions.sourcesink import SourceSink

        return SourceSink
    raise KeyError(type_name)
