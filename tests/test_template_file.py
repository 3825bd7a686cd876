"""The template `gadgetd run` serves (and re-reads on SIGHUP) is refused unless only root or
gadgetd's own user can have written it or put it there, and is read through the checked descriptor."""

import os
import subprocess
import sys

import pytest

from gadgetd import template_file
from gadgetd.errors import TemplateError

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture
def safe_dir(tmp_path):
    d = tmp_path / "etc"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d


@pytest.fixture
def written(safe_dir, loopback_text):
    path = safe_dir / "t.toml"
    path.write_text(loopback_text)
    path.chmod(0o644)
    return path


def refused(path) -> str:
    with pytest.raises(TemplateError) as exc:
        template_file.load(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"{path}: (file): ")
    return message.removeprefix(f"{path}: (file): ")


def test_a_safe_template_is_read_and_parsed(written, loopback_text):
    assert template_file.read(written) == loopback_text
    assert template_file.load(written).name == "gadgetd-loopback"


def test_packaged_templates_load(templates_dir):
    for path in sorted(templates_dir.glob("*.toml")):
        template_file.load(path)


@pytest.mark.parametrize("mode, who", [(0o646, "others"), (0o664, "group"), (0o666, "both")])
def test_writable_template_refused(written, mode, who):
    written.chmod(mode)
    assert refused(written) == f"refused: {written} is writable by group or others (mode {mode:o})"


@as_root
def test_foreign_owned_template_refused(written):
    os.chown(written, 65534, 65534)
    assert refused(written) == f"refused: {written} belongs to uid 65534, not to uid 0"


@as_root
def test_template_in_a_foreign_owned_directory_refused(written, safe_dir):
    os.chown(safe_dir, 65534, 65534)
    assert refused(written) == f"refused: {safe_dir} belongs to uid 65534, not to uid 0"


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_template_in_a_writable_directory_refused(written, safe_dir, mode):
    safe_dir.chmod(mode)
    assert refused(written) == f"refused: {safe_dir} is writable by group or others (mode {mode:o})"


def test_writable_ancestor_refused(safe_dir, loopback_text):
    """Whoever can write an ancestor can put another directory tree in place."""
    inner = safe_dir / "a" / "b"
    inner.mkdir(parents=True)
    path = inner / "t.toml"
    path.write_text(loopback_text)
    path.chmod(0o644)
    inner.chmod(0o755)
    (safe_dir / "a").chmod(0o775)
    assert refused(path) == f"refused: {safe_dir / 'a'} is writable by group or others (mode 775)"


def test_sticky_directory_passes_only_above_a_safe_entry(safe_dir, loopback_text):
    """A /tmp-like directory (mode 1777): others cannot rename or replace what is not theirs."""
    sticky = safe_dir / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    path = sticky / "t.toml"
    path.write_text(loopback_text)
    path.chmod(0o644)
    assert template_file.load(path).name == "gadgetd-loopback"
    inner = sticky / "inner"
    inner.mkdir()
    (inner / "t.toml").write_text(loopback_text)
    (inner / "t.toml").chmod(0o644)
    inner.chmod(0o1777)
    assert refused(inner / "t.toml") == (f"refused: {sticky} is writable by group or others "
                                         f"(mode 1777) and so is {inner} in it")


def test_symlink_refused(written, safe_dir):
    link = safe_dir / "link.toml"
    link.symlink_to(written)
    assert refused(link) == f"refused: {link} is a symlink"


def test_fifo_refused_without_blocking(safe_dir):
    fifo = safe_dir / "t.toml"
    os.mkfifo(fifo, 0o644)
    assert refused(fifo) == f"refused: {fifo} is not a regular file"


def test_missing_template(safe_dir):
    assert refused(safe_dir / "no.toml").startswith("cannot read: [Errno 2] No such file")


def test_run_refuses_before_touching_anything(written):
    """The loader `gadgetd run` uses (and calls again on SIGHUP): exit 2, one line."""
    written.chmod(0o664)
    proc = subprocess.run([sys.executable, "-m", "gadgetd", "run", str(written)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr == (f"gadgetd: error: {written}: (file): refused: {written} is writable "
                           "by group or others (mode 664)\n")
