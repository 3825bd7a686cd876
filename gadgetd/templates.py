"""The gadget templates shipped inside the package (gadgetd/configfs_templates/), found beside
this module, so `gadgetd run loopback` works from an installed wheel as from a checkout (pip
installs packages as files; importlib.resources was 0.85 s of the bring-up in the bench's VM)."""

from __future__ import annotations

from pathlib import Path

SUFFIX = ".toml"


def directory() -> Path:
    return Path(__file__).resolve().parent / "configfs_templates"


def packaged() -> dict[str, Path]:
    """Name -> path of every packaged template."""
    return {p.stem: p for p in sorted(directory().glob(f"*{SUFFIX}"))}


def path(name: str) -> Path:
    found = packaged().get(name)
    if found is None:
        raise KeyError(f"no packaged template {name!r} (known: {', '.join(packaged())})")
    return found


def resolve(argument: str) -> str:
    """A template argument: an existing file as given, else a packaged template's name."""
    if Path(argument).exists() or argument not in packaged():
        return argument
    return str(packaged()[argument])
