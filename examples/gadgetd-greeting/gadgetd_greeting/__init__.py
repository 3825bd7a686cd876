"""The `greeting` function type, registered in the `gadgetd.functions` entry-point group."""

from gadgetd.model import FunctionType, Option

GREET = 0x01  # vendor IN request, recipient interface: returns the greeting


def no_endpoints(spec) -> str | None:
    return "type 'greeting' has no endpoints" if spec.endpoints else None


GREETING = FunctionType(
    name="greeting", kind="ffs", server="gadgetd_greeting.server:Greeting",
    check_layout=no_endpoints,
    options=(Option("greeting", str, "hello from a gadgetd plugin",
                    doc="the text the vendor request 0x01 returns"),),
    doc="control-only: a vendor request answered with the template's greeting")
