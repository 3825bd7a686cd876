"""FunctionFS mount points are reached without following symlinks (gadgetd.safepath): with openat2
and with the open(2) walk used where openat2 is missing; only the directories made are removed."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gadgetd import ffs, safepath
from gadgetd.model import FunctionSpec, Interface
from gadgetd.undo import UndoLog


def _has_openat2() -> bool:
    root = os.open("/", os.O_PATH)
    try:
        os.close(safepath.openat2_nofollow(root, "tmp"))
    except OSError as exc:
        return exc.errno != errno.ENOSYS
    finally:
        os.close(root)
    return True


# Both ways where the kernel has openat2; the O_PATH walk alone where it answers ENOSYS (qemu-user
# for armel), which is exactly where gadgetd uses the walk.
OPENERS = [safepath.openat2_nofollow, safepath.open_nofollow] if _has_openat2() else [
    safepath.open_nofollow]


@pytest.fixture
def tree(tmp_path):
    """real/ a directory, link -> real, file a regular file."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "file").write_text("")
    return tmp_path


def _target(fd: int) -> str:
    try:
        return os.readlink(safepath.fd_path(fd))
    finally:
        os.close(fd)


@pytest.mark.parametrize("opener", OPENERS)
def test_walk_opens_the_directory(tree, opener):
    assert _target(safepath.walk(tree / "real", opener)) == str(tree / "real")


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("below", ["", "x", "x/y"])
def test_a_symlink_on_the_path_is_refused(tree, opener, below):
    created = []
    with pytest.raises(OSError, match="symlink refused") as exc:
        safepath.walk(tree / "link" / below, opener, created)
    assert exc.value.errno == errno.ELOOP and exc.value.filename == str(tree / "link")
    assert created == [] and os.listdir(tree / "real") == []


@pytest.mark.parametrize("opener", OPENERS)
def test_missing_directories_are_made_and_recorded(tree, opener):
    created = []
    fd = safepath.walk(tree / "real" / "a" / "b", opener, created)
    assert _target(fd) == str(tree / "real" / "a" / "b")
    assert created == [tree / "real" / "a", tree / "real" / "a" / "b"]
    assert _target(safepath.walk(tree / "real" / "a" / "b", opener, created)) and len(created) == 2


def test_missing_directory_without_creating(tree):
    with pytest.raises(FileNotFoundError) as exc:
        safepath.open_dir(tree / "real" / "a" / "b")
    assert exc.value.filename == str(tree / "real" / "a") and os.listdir(tree / "real") == []


def test_a_file_on_the_path_is_not_a_directory(tree):
    with pytest.raises(NotADirectoryError) as exc:
        safepath.open_dir(tree / "file" / "x", [])
    assert exc.value.filename == str(tree / "file")


@pytest.mark.parametrize("path", ["relative/dir", "/tmp/../tmp"])
def test_relative_or_dotdot_paths_refused(path):
    with pytest.raises(OSError, match="absolute path without '..'"):
        safepath.open_dir(Path(path), [])


def test_rmdir_through_a_symlinked_parent_refused(tree):
    (tree / "real" / "d").mkdir()
    with pytest.raises(OSError, match="symlink refused"):
        safepath.rmdir(tree / "link" / "d")
    assert (tree / "real" / "d").is_dir()


def test_rmdir_of_a_shared_directory_keeps_it_when_used(tree):
    (tree / "real" / "other").mkdir()
    safepath.rmdir(tree / "real", shared=True)
    assert (tree / "real" / "other").is_dir()
    with pytest.raises(OSError) as exc:
        safepath.rmdir(tree / "real")
    assert exc.value.errno == errno.ENOTEMPTY and exc.value.filename == str(tree / "real")
    safepath.rmdir(tree / "real" / "other")
    safepath.rmdir(tree / "real", shared=True)
    assert not (tree / "real").exists()


def _fn(mountpoint: Path) -> FunctionSpec:
    # No FunctionFS instance has this name, so mount(2) fails (also where f_fs is loaded).
    return FunctionSpec(name="gadgetd-test-none", type="loopback", mountpoint=mountpoint,
                        interface=Interface(), endpoints=())


def test_ffs_mount_does_not_follow_a_symlink(tree):
    undo = UndoLog()
    with pytest.raises(OSError, match="symlink refused") as exc:
        ffs.mount(_fn(tree / "link" / "ffs" / "loop0"), undo)
    assert exc.value.filename == str(tree / "link")
    assert os.listdir(tree / "real") == [] and len(undo) == 0


def test_ffs_mount_undoes_exactly_the_directories_it_made(tree):
    undo = UndoLog()
    mountpoint = tree / "real" / "ffs" / "loop0"
    with pytest.raises(OSError, match=f"mount -t functionfs gadgetd-test-none {mountpoint} "):
        ffs.mount(_fn(mountpoint), undo)
    assert mountpoint.is_dir() and len(undo) == 2
    assert undo.unwind() == [] and os.listdir(tree / "real") == []


MECHANISM = """
import os, sys
from pathlib import Path
from gadgetd import safepath, syscalls
mountpoint = Path(sys.argv[1]) / "real" / "mnt"
with safepath.directory(mountpoint, []) as fd:
    syscalls.mount("none", safepath.fd_path(fd), "tmpfs", shown=mountpoint)
assert os.path.ismount(mountpoint)
try:
    safepath.umount(Path(sys.argv[1]) / "link" / "mnt")
except OSError as exc:
    print("through the link:", exc.strerror)
assert os.path.ismount(mountpoint)
os.symlink("mnt", mountpoint.parent / "alias")
try:
    safepath.umount(mountpoint.parent / "alias")
except OSError as exc:
    print("the name a link:", exc.strerror)
assert os.path.ismount(mountpoint)
safepath.umount(mountpoint)
print("unmounted:", not os.path.ismount(mountpoint))
"""


def _can_unshare() -> bool:
    return (os.geteuid() == 0 and shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0)


@pytest.mark.skipif(not _can_unshare(), reason="needs root and a mount namespace (unshare -m)")
def test_mount_and_umount_through_descriptors_in_a_mount_namespace(tree):
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                           MECHANISM, str(tree)], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "through the link: symlink refused: mount points are reached without following symlinks",
        f"the name a link: umount {tree / 'real' / 'alias'}: Invalid argument",
        "unmounted: True"]
