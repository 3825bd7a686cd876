"""gadgetd: a USB gadget daemon built on configfs and FunctionFS."""

__version__ = "0.1.0"
