"""The host-side HIL suite, installed: `pytest --pyargs gadgetd.hil --device VID:PID`.

Its options and fixtures are the pytest plugin gadgetd.hil.plugin (entry point `gadgetd.hil` in
the pytest11 group), loaded from any directory.
"""
