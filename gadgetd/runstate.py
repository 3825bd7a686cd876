"""Runtime state of a running gadgetd: /run/gadgetd/NAME.json, written by the supervisor.

`gadgetd status` reads it; the next start reads it to tell its own crash leftovers (the pid is
dead) from a gadget someone else is serving.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def runtime_dir() -> Path:
    return Path(os.environ.get("RUNTIME_DIRECTORY", "/run/gadgetd").split(":")[0])


def path(name: str) -> Path:
    return runtime_dir() / f"{name}.json"


def write(name: str, state: dict) -> None:
    target = path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(target)


def read(name: str) -> dict | None:
    try:
        return json.loads(path(name).read_text())
    except (OSError, ValueError):
        return None


def read_all() -> list[dict]:
    found = []
    for p in sorted(runtime_dir().glob("*.json")):
        try:
            found.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return found


def remove(name: str) -> None:
    try:
        path(name).unlink()
    except FileNotFoundError:
        pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
