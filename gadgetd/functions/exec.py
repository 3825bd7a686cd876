"""FunctionFS programs written by others (kind "exec"): MTP responders, adbd, a vendor's daemon.

gadgetd creates and mounts the instance (owned by the function's user), starts `command` as that
user, binds the UDC once the program's ep files exist, restarts it with backoff when it exits
(unbinding first) and logs its output under the function's name. With `open = "gadgetd"`,
gadgetd opens ep0 itself under its open policy, writes the descriptors and strings (the
template's interface and endpoints, or the blob files systemd's USBFunctionDescriptors= and
USBFunctionStrings= take) and hands ep0, ep1, ... to the program as systemd's socket activation
does (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES; the first at fd 3).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from gadgetd import trusted
from gadgetd.model import FunctionType
from gadgetd.toml_table import Table

OPEN_MODES = ("program", "gadgetd")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# what gadgetd sets itself
_RESERVED = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def _plain_path(table: Table, key: str, value: str) -> str:
    if not value.startswith("/") or os.path.normpath(value) != value or "\0" in value:
        raise table.error(key, "must be an absolute path without '.', '..' or '//'", value)
    return value


def _program(table: Table, command: list) -> None:
    """The program runs with the function user's rights but is chosen by the template: root's
    daemon must not run a file someone else could have replaced (templates' own rule)."""
    program = _plain_path(table, "command", command[0])
    try:
        st = os.stat(program)
    except OSError as exc:
        raise table.error("command", f"cannot be run: {exc.strerror}", program) from None
    if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
        raise table.error("command", "must be an executable file", program)
    problem = trusted.path_problem(Path(program), owners=(0,))
    if problem:
        raise table.error("command", f"not trusted: {problem}", program)


def _blob(table: Table, key: str) -> str | None:
    value = table.get(key, str, None)
    if value is None:
        return None
    _plain_path(table, key, value)
    if not os.path.isfile(value):
        raise table.error(key, "must be a readable file", value)
    return value


def parse_options(table: Table) -> dict[str, object]:
    command = table.get("command", list)
    if not command or not all(isinstance(a, str) and "\0" not in a for a in command):
        raise table.error("command", "must be a non-empty array of strings", command)
    _program(table, command)
    environment = table.get("environment", dict, {})
    for name, value in environment.items():
        if not _ENV_NAME.match(name) or name in _RESERVED or not isinstance(value, str):
            raise table.error("environment", f"{name!r}: names are [A-Za-z_][A-Za-z0-9_]*, "
                              f"values strings; {', '.join(_RESERVED)} are gadgetd's", value)
    directory = _plain_path(table, "working_directory",
                            table.get("working_directory", str, "/"))
    if not os.path.isdir(directory):
        raise table.error("working_directory", "must be a directory", directory)
    opener = table.get("open", str, "program", choices=OPEN_MODES)
    blobs = {key: _blob(table, key) for key in ("descriptors", "strings")}
    if opener == "program" and any(blobs.values()):
        raise table.error("descriptors", 'blob files need open = "gadgetd"',
                          blobs["descriptors"] or blobs["strings"])
    if (blobs["descriptors"] is None) != (blobs["strings"] is None):
        raise table.error("descriptors", "give both descriptors and strings, or neither")
    return {"command": tuple(command), "environment": dict(environment),
            "working_directory": directory, "open": opener, **blobs,
            "ready_timeout": table.get("ready_timeout", int, 30, lo=1, hi=600)}


def listen_environment(names: list[str], pid: int) -> dict[str, str]:
    """sd_listen_fds(3)'s variables for fds 3, 4, ... named `names`, for process `pid`."""
    return {"LISTEN_FDS": str(len(names)), "LISTEN_PID": str(pid),
            "LISTEN_FDNAMES": ":".join(names)}


EXEC = FunctionType(
    name="exec", kind="exec", parse_options=parse_options,
    doc="a FunctionFS program run by gadgetd: command, environment, working_directory, open "
        "(program | gadgetd: ep0..epN handed over as LISTEN_FDS), descriptors, strings, "
        "ready_timeout")
