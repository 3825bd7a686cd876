"""The systemd files gadgetd ships: the unit (gadgetd/systemd/gadgetd@.service), rendered for this
install, and the sysusers.d file of the workers' default user (gadgetd/systemd/gadgetd.sysusers)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

UNIT_TEMPLATE = Path(__file__).resolve().parent / "systemd" / "gadgetd@.service"
SYSUSERS_FILE = Path(__file__).resolve().parent / "systemd" / "gadgetd.sysusers"


def gadgetd_path() -> str:
    here = Path(sys.executable).parent / "gadgetd"
    return str(here) if here.exists() else (shutil.which("gadgetd") or "/usr/local/bin/gadgetd")


def render_unit(executable: str | None = None) -> str:
    return UNIT_TEMPLATE.read_text().replace("@GADGETD@", executable or gadgetd_path())
