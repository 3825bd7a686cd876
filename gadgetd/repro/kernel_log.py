"""What the kernel says: new dmesg lines worth reporting, and the state of a possibly stuck task."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

INTERESTING = re.compile(r"WARNING|BUG|blocked for more than|hung_task|Call Trace|Oops|"
                         r"general protection|RIP:")


class KernelLog:
    """Lines the kernel logged since this object was made (dmesg, which root can read)."""

    def __init__(self):
        self.start = len(self._lines())

    @staticmethod
    def _lines() -> list[str]:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        return out.splitlines()

    def new_lines(self) -> list[str]:
        return self._lines()[self.start:]

    def interesting(self) -> list[str]:
        return [line for line in self.new_lines() if INTERESTING.search(line)]


def task_state(pid: int) -> dict:
    """State letter, wchan and kernel stack of a task; D with an f_fs frame means stuck there."""
    proc = Path(f"/proc/{pid}")
    info = {"pid": pid}
    try:
        stat = (proc / "stat").read_text()
        info["state"] = stat[stat.rindex(")") + 2]
    except (OSError, ValueError):
        info["state"] = "gone"
        return info
    for name in ("wchan",):
        try:
            info[name] = (proc / name).read_text().strip()
        except OSError:
            pass
    try:
        info["stack"] = [line.split("] ", 1)[-1] for line in
                         (proc / "stack").read_text().splitlines()]
    except OSError as exc:
        info["stack"] = [f"(unreadable: {exc.strerror})"]
    return info
