"""Every third-party module the package imports is a declared dependency: board-side modules in
`dependencies`, the host kit (gadgetd.host, gadgetd.hil) in the `hil` extra, a module of an
extra of its own (EXTRAS) in that one."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
HOST_SIDE = ("host", "hil")
EXTRAS = {"host/labgrid_place.py": "labgrid"}
DISTRIBUTIONS = {"attr": "attrs"}  # module -> distribution where the extra is not installed


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"gadgetd", "__future__"}


def _names(requirements) -> set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def test_every_imported_module_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    board = _names(project["dependencies"])
    host = board | _names(project["optional-dependencies"]["hil"])
    distributions = packages_distributions()
    missing = []
    for path in sorted((ROOT / "gadgetd").rglob("*.py")):
        relative = path.relative_to(ROOT / "gadgetd")
        side = host if relative.parts[0] in HOST_SIDE else board
        if extra := EXTRAS.get(relative.as_posix()):
            side = side | _names(project["optional-dependencies"][extra])
        for module in sorted(_imports(path)):
            dists = {d.lower().replace("_", "-") for d in
                     distributions.get(module, [DISTRIBUTIONS.get(module, module)])}
            if not dists & side:
                missing.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(dists))})")
    assert missing == []
