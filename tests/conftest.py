from pathlib import Path

import pytest

from gadgetd import templates

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = templates.directory()


@pytest.fixture
def loopback_text() -> str:
    return (TEMPLATES / "loopback.toml").read_text()


@pytest.fixture
def plain_loopback_text(loopback_text) -> str:
    """The loopback template without its MS OS descriptor sections."""
    kept, skip = [], False
    for line in loopback_text.splitlines(keepends=True):
        if line.startswith("["):
            skip = line.strip() in ("[gadget.os_desc]", "[function.loop0.os_desc]")
        if not skip:
            kept.append(line)
    return "".join(kept)


@pytest.fixture
def templates_dir() -> Path:
    return TEMPLATES
