"""Vendor requests of gadgetd's own functions: the one definition both sides import
(the device's function servers and the host's drivers and HIL tests)."""

# loopback (recipient interface): ECHO_OUT stores up to ECHO_MAX bytes, ECHO_IN returns them,
# STATUS returns the function's counters as JSON.
LOOPBACK_ECHO_OUT, LOOPBACK_ECHO_IN, LOOPBACK_STATUS = 0x01, 0x02, 0x03
LOOPBACK_ECHO_MAX = 4096

# sourcesink: Gadget Zero's control requests (f_sourcesink.c), device recipient.
GADGET_ZERO_WRITE, GADGET_ZERO_READ = 0x5B, 0x5C
GADGET_ZERO_CONTROL_MAX = 4096  # USB_COMP_EP0_BUFSIZ
