"""Function servers and the descriptions of gadgetd's own types (builtin.py)."""
