"""`gadgetd install-service` / `uninstall-service`: a gadget as a systemd service on the board.

The template is copied to /etc/gadgetd/NAME.toml (root-owned, mode 0644: gadgetd refuses a
template others can write), the unit to /etc/systemd/system/gadgetd@.service with this install's
gadgetd path, and gadgetd@NAME is enabled. `root` stages everything under another directory
(an image being built) and then skips systemctl. The unit runs this install's gadgetd as root, so
it is refused when a user other than root could change that gadgetd, its interpreter or its venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from gadgetd import template, trusted
from gadgetd.errors import GadgetdError, SetupError
from gadgetd.service import gadgetd_path, render_unit

CONFIG_DIR = Path("etc/gadgetd")
UNIT_DIR = Path("etc/systemd/system")
UNIT_NAME = "gadgetd@.service"


def _systemctl(*args: str) -> None:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SetupError(f"systemctl {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")


def check_name(name: str) -> None:
    if not template.is_name(name):
        raise GadgetdError(f"name {name!r}: must be 1-40 characters of A-Z a-z 0-9 _ . - "
                           "(as a gadget name)")


def check_runs_as_root(paths: Iterable[Path]) -> None:
    """Refuse paths the unit would run as root that another user could change: owned by one,
    writable by group or others, or under a directory that is (gadgetd.trusted, root only)."""
    for path in paths:
        problem = trusted.path_problem(path, owners=(0,))
        if problem:
            raise GadgetdError(f"refusing a unit that runs {path} as root: {problem}")


def install(template_path: Path, name: str | None = None, root: Path = Path("/"),
            start: bool = False) -> list[str]:
    spec = template.load(template_path)  # refuse an invalid template before copying it
    name = spec.name if name is None else name
    check_name(name)
    executable = gadgetd_path()
    check_runs_as_root([Path(executable), Path(sys.executable), Path(sys.prefix)])
    done = []
    config = root / CONFIG_DIR / f"{name}.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_path, config)
    os.chmod(config, 0o644)
    done.append(f"installed {config}")
    unit = root / UNIT_DIR / UNIT_NAME
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(render_unit(executable))
    done.append(f"installed {unit}")
    if root == Path("/"):
        _systemctl("daemon-reload")
        _systemctl("enable", *(["--now"] if start else []), f"gadgetd@{name}.service")
        done.append(f"enabled gadgetd@{name}" + (" and started it" if start else ""))
    return done


def uninstall(name: str, root: Path = Path("/")) -> list[str]:
    check_name(name)
    done = []
    if root == Path("/"):
        _systemctl("disable", "--now", f"gadgetd@{name}.service")
        done.append(f"stopped and disabled gadgetd@{name}")
    config = root / CONFIG_DIR / f"{name}.toml"
    if config.exists():
        config.unlink()
        done.append(f"removed {config}")
    if not any((root / CONFIG_DIR).glob("*.toml")):
        unit = root / UNIT_DIR / UNIT_NAME
        if unit.exists():
            unit.unlink()
            done.append(f"removed {unit} (no gadget left)")
        if root == Path("/"):
            _systemctl("daemon-reload")
    return done
