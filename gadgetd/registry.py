"""The function registry: function types are entry points in the `gadgetd.functions` group.

gadgetd's own types register there exactly as a third-party package's do (see pyproject.toml and
examples/). Only the types a template names are loaded; a type's server code is imported later,
by the worker that serves it (FunctionType.server).

A template that names only gadgetd's own types is served without reading any distribution's
metadata: importing importlib.metadata (email, zipfile, csv, ...) was 4.5 s of a 17 s bring-up
in the bench's VM. OWN mirrors pyproject.toml's entry points (a unit test keeps them equal); a
plugin cannot take one of these names (`gadgetd check` warns of one that tries).
"""

from __future__ import annotations

import functools
import importlib

from gadgetd.model import FUNCTION_KINDS, FunctionType

GROUP = "gadgetd.functions"
OWN = {
    "loopback": "gadgetd.functions.builtin:LOOPBACK",
    "sourcesink": "gadgetd.functions.builtin:SOURCESINK",
    "acm": "gadgetd.functions.kernel:ACM",
    "ecm": "gadgetd.functions.kernel:ECM",
    "ncm": "gadgetd.functions.kernel:NCM",
    "rndis": "gadgetd.functions.kernel:RNDIS",
    "mass_storage": "gadgetd.functions.kernel:MASS_STORAGE",
    "hid": "gadgetd.functions.kernel:HID",
    "exec": "gadgetd.functions.exec:EXEC",
}


class RegistryError(LookupError):
    """A type that is not registered, or whose entry point does not describe a FunctionType."""


@functools.cache
def _entry_points() -> tuple[tuple[str, str], ...]:
    """(name, value) of every installed entry point in GROUP, gadgetd's own included; a name
    two distributions register appears twice."""
    from importlib.metadata import entry_points

    return tuple((ep.name, ep.value) for ep in entry_points(group=GROUP))


def names() -> list[str]:
    """Every registered type's name, without loading any of them."""
    return sorted({name for name, _ in _entry_points()} | OWN.keys())


def shadowed(type_names) -> list[str]:
    """Plugin entry points that name one of gadgetd's own types among TYPE_NAMES: never loaded
    (OWN wins), so `gadgetd check` says so rather than serve gadgetd's type in silence."""
    wanted = set(type_names) & OWN.keys()
    return [f"function type {name!r} is gadgetd's own; the plugin entry point {name} = {value} "
            "is ignored" for name, value in sorted(set(_entry_points()))
            if name in wanted and value != OWN[name]]


def _plugin(name: str) -> str | None:
    values = sorted({value for ep_name, value in _entry_points() if ep_name == name})
    if len(values) > 1:
        raise RegistryError(f"function type {name!r} is registered by more than one plugin: "
                            f"{', '.join(values)} (uninstall all but one)")
    return values[0] if values else None


def _load(value: str):
    """An entry point's object ("module:attribute"), as EntryPoint.load finds it."""
    module, _, attribute = value.partition(":")
    return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))


@functools.cache
def get(name: str) -> FunctionType:
    value = OWN.get(name) or _plugin(name)
    if value is None:
        raise RegistryError(f"no function type {name!r} is registered (known: "
                            f"{', '.join(names()) or 'none'})")
    try:
        ftype = _load(value)
    except Exception as exc:  # a broken plugin must not take the daemon's error handling with it
        raise RegistryError(f"function type {name!r} ({value}) failed to load: {exc}") from exc
    if (not isinstance(ftype, FunctionType) or ftype.name != name or ftype.kind not in FUNCTION_KINDS
            or (ftype.kind == "kernel") != (ftype.parse is not None)
            or (ftype.kind == "exec") != (ftype.parse_options is not None)):
        raise RegistryError(f"entry point {name} = {value} is not a FunctionType named {name!r} "
                            f"of kind {' or '.join(FUNCTION_KINDS)} (parse for kind kernel only, "
                            "parse_options for kind exec only)")
    return ftype


def server_class(ftype: FunctionType):
    """Import the type's server ("module:attribute")."""
    module, _, attribute = (ftype.server or "").partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RegistryError(f"function type {ftype.name!r}: server {ftype.server!r} cannot be "
                            f"imported: {exc}") from exc
