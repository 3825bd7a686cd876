"""Whether the root daemon may trust a file: nobody but its trusted owners can have written it,
nor put another file in its place.

The rule, for templates and for the interpreter a unit runs: the file and every directory above
it up to / belong to a trusted owner (root, or the user gadgetd runs as) and are writable by no
group and no others. A group- or other-writable directory passes only with the sticky bit (as
/tmp) and when the next component below it is not group- or other-writable itself: others may
add entries beside it, but the sticky bit keeps them from renaming or replacing it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path


def _node_problem(node: Path, st: os.stat_result, below: tuple[Path, os.stat_result] | None,
                  owners: Collection[int]) -> str | None:
    """The rule for one component; `below` is the next one down (None for the file itself)."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return f"{node} is a symlink"
    if st.st_uid not in owners:
        return f"{node} belongs to uid {st.st_uid}, not to " + " or ".join(
            f"uid {uid}" for uid in sorted(set(owners)))
    if not mode & 0o022:
        return None
    if below is None or not mode & stat.S_ISVTX:
        return f"{node} is writable by group or others (mode {mode:o})"
    if below[1].st_mode & 0o022:
        return f"{node} is writable by group or others (mode {mode:o}) and so is {below[0]} in it"
    return None


def problem(path: Path, st: os.stat_result, owners: Collection[int]) -> str | None:
    """The first reason `path` (absolute, symlinks resolved; `st` its stat) is not to be
    trusted, walking up from it to /; None when it is."""
    below = None
    for node in (path, *path.parents):
        if below is not None:
            try:
                st = os.stat(node, follow_symlinks=False)
            except OSError as exc:
                return f"cannot check {node}: {exc.strerror}"
        found = _node_problem(node, st, below, owners)
        if found:
            return found
        below = (node, st)
    return None


def path_problem(path: Path, owners: Collection[int]) -> str | None:
    """problem() of the file or directory `path` is, symlinks resolved."""
    real = path.resolve()
    try:
        st = os.stat(real)
    except OSError as exc:
        return f"cannot check {path}: {exc.strerror}"
    return problem(real, st, owners)
