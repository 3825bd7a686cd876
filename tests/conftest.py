from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "configfs_templates"


@pytest.fixture
def loopback_text() -> str:
    return (TEMPLATES / "loopback.toml").read_text()


@pytest.fixture
def templates_dir() -> Path:
    return TEMPLATES
