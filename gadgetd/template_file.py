"""Reading the template the root daemon serves (`gadgetd run` and its SIGHUP reload): only from
a regular file nobody else can have written (gadgetd.trusted), and through the very descriptor
whose owner and mode were checked, so nothing can be put in its place between check and read."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from gadgetd import template, trusted
from gadgetd.errors import TemplateError
from gadgetd.model import GadgetSpec

_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a FIFO does not block


def read(path: Path) -> str:
    source = str(path)
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TemplateError(source, "(file)", f"refused: {path} is a symlink") from None
        raise TemplateError(source, "(file)", f"cannot read: {exc}") from None
    with open(fd, "rb", closefd=True) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TemplateError(source, "(file)", f"refused: {path} is not a regular file")
        try:
            opened = Path(os.readlink(f"/proc/self/fd/{fd}"))  # where it is, symlinks resolved
        except OSError as exc:
            raise TemplateError(source, "(file)", f"cannot check where it is: {exc}") from None
        problem = trusted.problem(opened, st, (0, os.geteuid()))
        if problem:
            raise TemplateError(source, "(file)", f"refused: {problem}")
        try:
            return f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(source, "(file)", f"cannot read: {exc}") from None


def load(path: Path) -> GadgetSpec:
    return template.parse(read(path), str(path))
