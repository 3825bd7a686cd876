"""gadgetd-hil build without a kernel build: the cache keys, patches on linked copies, the
incremental seeding, the configuration check and the one-line errors (exit 125)."""

import os
import subprocess
import sys
import time

import pytest

from gadgetd.host import build

PATCH = """Header text: patch(1) skips it, as the kernel-patches/ headers.

--- a/drivers/f.c
+++ b/drivers/f.c
@@ -1,2 +1,2 @@
 int a;
-int b;
+int c;
"""


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "linux"
    (root / "drivers").mkdir(parents=True)
    (root / "Makefile").write_text("%:\n\t@echo '*** no target $@ in this tree' >&2; exit 2\n")
    (root / "drivers" / "f.c").write_text("int a;\nint b;\n")
    (root / "drivers" / "g.c").write_text("int g;\n")
    return root


def test_the_key_follows_the_tree_the_patches_in_order_and_the_fragment():
    key = build.variant_key("dir:1", [b"p1", b"p2"], b"frag")
    assert key == build.variant_key("dir:1", [b"p1", b"p2"], b"frag")
    others = {build.variant_key("dir:2", [b"p1", b"p2"], b"frag"),
              build.variant_key("dir:1", [b"p2", b"p1"], b"frag"),
              build.variant_key("dir:1", [b"p1"], b"frag"),
              build.variant_key("dir:1", [b"p1", b"p2"], b"other")}
    assert key not in others and len(others) == 4


def test_a_directory_s_id_changes_with_an_edit_but_not_with_git_metadata(tree):
    first = build.tree_id(tree)
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert build.tree_id(tree) == first
    (tree / "drivers" / "g.c").write_text("int g2;\n")
    assert build.tree_id(tree) != first


def test_a_tarball_s_id_is_its_contents(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert build.tree_id(a) == build.tree_id(b)
    b.write_bytes(b"other")
    assert build.tree_id(a) != build.tree_id(b)


def test_a_patch_applies_to_the_linked_copy_and_never_to_the_tree(tree, tmp_path):
    patch = tmp_path / "x.patch"
    patch.write_text(PATCH)
    src = tmp_path / "variant" / "src"
    src.parent.mkdir()
    build._link_copy(tree, src)
    assert os.stat(src / "drivers/g.c").st_ino == os.stat(tree / "drivers/g.c").st_ino
    build._apply(src, patch, tmp_path / "log")
    assert (src / "drivers/f.c").read_text() == "int a;\nint c;\n"
    assert (tree / "drivers/f.c").read_text() == "int a;\nint b;\n"


def test_a_patch_that_does_not_apply_is_a_one_line_error(tree, tmp_path):
    patch = tmp_path / "stale.patch"
    patch.write_text(PATCH.replace("int b;", "int zz;"))
    src = tmp_path / "variant" / "src"
    src.parent.mkdir()
    build._link_copy(tree, src)
    with pytest.raises(build.BuildError) as err:
        build._apply(src, patch, tmp_path / "log")
    assert err.value.status == 125
    assert "stale.patch does not apply" in str(err.value) and "\n" not in str(err.value)
    assert (tree / "drivers/f.c").read_text() == "int a;\nint b;\n"


def test_files_that_differ_from_the_seed_get_fresh_copies(tree, tmp_path):
    """What make must rebuild after the seed's objects are copied: every file whose inode is
    not the seed's, with an mtime newer than those objects, without touching the tree."""
    seed, new = tmp_path / "seed", tmp_path / "new"
    build._link_copy(tree, seed)
    patch = tmp_path / "x.patch"
    patch.write_text(PATCH)
    build._apply(seed, patch, tmp_path / "log")  # the seed was patched, the new variant is not
    old = time.time() - 3600
    os.utime(tree / "drivers/f.c", (old, old))
    build._link_copy(tree, new)
    objects_built = time.time() - 60
    build._refresh_changed(seed, new)
    assert os.stat(new / "drivers/f.c").st_mtime > objects_built  # pristine again: rebuilt
    assert os.stat(tree / "drivers/f.c").st_mtime == pytest.approx(old)  # the tree untouched
    assert os.stat(new / "drivers/g.c").st_ino == os.stat(tree / "drivers/g.c").st_ino


def test_a_clone_s_unchanged_files_take_the_seed_s_and_its_mtimes(tree, tmp_path):
    seed = tmp_path / "seed"
    build._link_copy(tree, seed)
    clone = tmp_path / "clone"
    subprocess.run(["cp", "-a", tree, clone], check=True)  # other inodes, same contents
    (clone / "drivers/g.c").write_text("int g, h;\n")
    new = tmp_path / "new"
    build._link_copy(clone, new)
    objects_built = time.time()
    build._refresh_changed(seed, new)
    assert os.stat(new / "drivers/f.c").st_ino == os.stat(seed / "drivers/f.c").st_ino
    assert os.stat(new / "drivers/g.c").st_mtime >= objects_built - 1
    assert (clone / "drivers/g.c").read_text() == "int g, h;\n"
    assert os.stat(clone / "drivers/f.c").st_ino != os.stat(seed / "drivers/f.c").st_ino


def test_the_seed_is_the_newest_build_of_the_same_tree(tmp_path):
    builds = tmp_path / "builds"
    fragment = build.hashlib.sha256(build.FRAGMENT.read_bytes()).hexdigest()
    for name, base, built, frag in (("old", "/t", 1, fragment), ("new", "/t", 2, fragment),
                                    ("other", "/u", 3, fragment), ("conf", "/t", 4, "x")):
        (builds / name / "src" / "obj").mkdir(parents=True)
        (builds / name / "build.json").write_text(build.json.dumps(
            {"base": base, "built": built, "fragment_sha256": frag, "release": "r"}))
    assert build._seed(builds, build.Path("/t"), builds / "mine") == builds / "new"
    # another tree's (a clone's) objects serve too: files are compared by contents
    assert build._seed(builds, build.Path("/none"), builds / "mine") == builds / "other"
    assert build._seed(tmp_path / "empty", build.Path("/t"), builds / "mine") is None


def test_symbols_the_tree_cannot_give_are_named():
    fragment = "# comment\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_C=y\n"
    config = "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n"
    assert build.missing_symbols(config, fragment) == ["CONFIG_B=m", "CONFIG_C=y"]
    assert build.missing_symbols(fragment, fragment) == []


def test_the_fragment_has_what_the_vm_loads():
    text = build.FRAGMENT.read_text()
    for symbol in ("USB_DUMMY_HCD=m", "USB_CONFIGFS_F_FS=y", "USBIP_VUDC=m", "KPROBE_EVENTS=y",
                   "USB_LIBCOMPOSITE=m"):
        assert f"CONFIG_{symbol}" in text


def test_a_failing_build_exits_125_with_one_line_and_leaves_the_tree(tree, tmp_path):
    before = build.tree_id(tree)
    proc = subprocess.run([sys.executable, "-m", "gadgetd.host.cli", "build", str(tree)],
                          capture_output=True, text=True, env={**os.environ,
                                                               "GADGETD_CACHE": str(tmp_path)})
    assert proc.returncode == 125, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no target" in errors[0], proc.stderr
    assert proc.stdout == ""
    assert build.tree_id(tree) == before


def test_a_missing_patch_is_a_one_line_error(tree, tmp_path):
    with pytest.raises(build.BuildError, match="patch .*nothing.patch: No such file"):
        build.build(tree, [tmp_path / "nothing.patch"], tmp_path)
