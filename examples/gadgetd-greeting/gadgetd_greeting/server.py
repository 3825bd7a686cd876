"""The greeting server: ep0 only, one vendor request."""

from gadgetd.function import FunctionServer, Stall
from gadgetd_greeting import GREET


class Greeting(FunctionServer):
    vendor_requests = {GREET: "greet"}

    def greet(self, setup) -> None:
        if not setup.is_in:
            raise Stall()
        self.counters["greetings"] += 1
        self.ep0.reply(self.spec.options["greeting"].encode()[: setup.length])
