"""Typed reading of one TOML table: every lookup checks the type, range and choices, and a
table's unread keys are reported, so a typo in a template is an error naming file, key and value."""

from __future__ import annotations

from gadgetd.errors import NO_VALUE, TemplateError


class Table:
    """One TOML table being read: typed lookups, then a check that nothing was left unread."""

    def __init__(self, source: str, path: str, data):
        if not isinstance(data, dict):
            raise TemplateError(source, path, "must be a table", data)
        self.source, self.path, self.data, self.seen = source, path, data, set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str, value=NO_VALUE):
        return TemplateError(self.source, self.key(name), problem, value)

    def has(self, name: str) -> bool:
        return name in self.data

    def get(self, name, kind, default=NO_VALUE, lo=None, hi=None, choices=None):
        self.seen.add(name)
        if name not in self.data:
            if default is NO_VALUE:
                raise self.error(name, "missing")
            return default
        value = self.data[name]
        # bool is an int in Python; TOML keeps them apart, so do we.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(name, f"must be {KIND_NAMES.get(kind, kind.__name__)}", value)
        if lo is not None and value < lo or hi is not None and value > hi:
            raise self.error(name, f"out of range {_fmt(lo)}..{_fmt(hi)}", value)
        if choices is not None and value not in choices:
            raise self.error(name, f"must be one of {', '.join(map(str, choices))}", value)
        return value

    def table(self, name: str, required=True) -> Table | None:
        self.seen.add(name)
        if name not in self.data:
            if required:
                raise TemplateError(self.source, f"[{self.key(name)}]", "missing section")
            return None
        return Table(self.source, self.key(name), self.data[name])

    def tables(self, name: str) -> list[Table]:
        """An array of tables ([[name]]); missing means none."""
        self.seen.add(name)
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.error(name, "must be an array of tables ([[...]])", value)
        return [Table(self.source, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)]

    def done(self):
        for name in self.data:
            if name not in self.seen:
                raise self.error(name, "unknown key", self.data[name])


KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false", list: "an array"}


def _fmt(n):
    return hex(n) if isinstance(n, int) and n > 0xFF else str(n)
