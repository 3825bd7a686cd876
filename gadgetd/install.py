"""`gadgetd install-service` / `uninstall-service`: a gadget as a systemd service on the board.

The template is copied to /etc/gadgetd/NAME.toml (root-owned, mode 0644: gadgetd refuses a
template others can write), the unit to /etc/systemd/system/gadgetd@.service with this install's
gadgetd path, and gadgetd@NAME is enabled. The workers' default user, gadgetd, comes from
/etc/sysusers.d/gadgetd.conf (gadgetd/systemd/gadgetd.sysusers), applied with systemd-sysusers
(a no-op when the user exists). `root` stages everything under another directory (an image being
built) and then skips systemctl and systemd-sysusers. The unit runs this install's gadgetd as
root, so it is refused when a user other than root could change that gadgetd, its interpreter or
its venv.
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
from gadgetd.service import SYSUSERS_FILE, gadgetd_path, render_unit

CONFIG_DIR = Path("etc/gadgetd")
UNIT_DIR = Path("etc/systemd/system")
UNIT_NAME = "gadgetd@.service"
# /etc, like the unit: install-service is the administrator's act, not a distribution package's.
SYSUSERS_CONF = Path("etc/sysusers.d/gadgetd.conf")


def _run(*argv: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise SetupError(f"{' '.join(argv)}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        raise SetupError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")


def _systemctl(*args: str) -> None:
    _run("systemctl", *args)


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
    text = template.read(template_path)  # read once: what is checked is what is installed
    spec = template.parse(text, str(template_path))
    name = spec.name if name is None else name
    check_name(name)
    executable = gadgetd_path()
    check_runs_as_root([Path(executable), Path(sys.executable), Path(sys.prefix)])
    done = []
    config = root / CONFIG_DIR / f"{name}.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")
    os.chmod(config, 0o644)
    done.append(f"installed {config}")
    unit = root / UNIT_DIR / UNIT_NAME
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(render_unit(executable))
    done.append(f"installed {unit}")
    sysusers = root / SYSUSERS_CONF
    sysusers.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SYSUSERS_FILE, sysusers)
    os.chmod(sysusers, 0o644)
    done.append(f"installed {sysusers}")
    if root == Path("/"):
        _run("systemd-sysusers", str(sysusers))
        done.append("the gadgetd user exists (systemd-sysusers)")
        _systemctl("daemon-reload")
        _systemctl("enable", *(["--now"] if start else []), f"gadgetd@{name}.service")
        done.append(f"enabled gadgetd@{name}" + (" and started it" if start else ""))
    else:
        done.append(f"the image needs the gadgetd user: systemd-sysusers --root={root} creates it")
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
        sysusers = root / SYSUSERS_CONF
        if sysusers.exists():
            sysusers.unlink()  # the user itself stays: files may still belong to it
            done.append(f"removed {sysusers} (the gadgetd user stays)")
        if root == Path("/"):
            _systemctl("daemon-reload")
    return done
