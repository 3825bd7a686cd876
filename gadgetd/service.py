"""The systemd unit gadgetd ships (gadgetd/systemd/gadgetd@.service), rendered for this install."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

UNIT_TEMPLATE = Path(__file__).resolve().parent / "systemd" / "gadgetd@.service"


def gadgetd_path() -> str:
    here = Path(sys.executable).parent / "gadgetd"
    return str(here) if here.exists() else (shutil.which("gadgetd") or "/usr/local/bin/gadgetd")


def render_unit(executable: str | None = None) -> str:
    return UNIT_TEMPLATE.read_text().replace("@GADGETD@", executable or gadgetd_path())
