"""Build a kernel tree for the VM: virtme-ng's configuration plus vm.config, ccache, patches.

The given tree (a source directory, a git work tree or a source tarball such as Debian's
linux-source-6.1) is never written to. Each tree + patch set gets a variant under the cache,
keyed by the tree's state and the patches' bytes:

    builds/KEY/src        the sources: hard links to the tree's files, patched files copied
    builds/KEY/src/obj    the build (O=obj: a subdirectory, so every path kbuild records is relative)
    builds/KEY/boot, lib  the image and modules, laid out as virtme-ng expects
    builds/KEY/build.json what was built from what, how long it took

A new variant starts from the objects of the newest variant built (from the same tree if there
is one), and every file whose contents differ between the two gets a fresh copy (and so a fresh
mtime): make then rebuilds only what the patches or the revision changed, and ccache serves what
it has seen.
Builds run one at a time (a lock in the cache).
"""

from __future__ import annotations

import fcntl
import filecmp
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from gadgetd.errors import GadgetdError

FRAGMENT = Path(__file__).with_name("vm.config")
TARGETS = ("bzImage", "modules")
# A kernel's release has at most 64 characters; the key's head is enough to tell variants apart.
LOCALVERSION_CHARS = 8


class BuildError(GadgetdError):
    status = 125  # for `git bisect run`: this revision cannot be tested


@dataclass
class Build:
    root: Path
    release: str
    seconds: float  # 0 when the variant was already built
    seeded_from: str = ""

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def tree_id(tree: Path) -> str:
    """What identifies a tree's state: a tarball's bytes, or a directory's file list with sizes
    and mtimes (a git work tree included: a checkout or an edit changes it)."""
    digest = hashlib.sha256()
    if tree.is_file():
        with open(tree, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return "tar:" + digest.hexdigest()
    for path, st in _walk(tree):
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
    return "dir:" + digest.hexdigest()


def _walk(root: Path, rel: str = ""):
    """(relative path, lstat) of every file under root, sorted, without .git and build outputs
    of a variant (obj/)."""
    with os.scandir(root / rel if rel else root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = f"{rel}/{entry.name}" if rel else entry.name
            if path in (".git", "obj"):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(root, path)
            else:
                yield path, entry.stat(follow_symlinks=False)


def variant_key(tree: str, patches: list[bytes], fragment: bytes) -> str:
    """The cache key of a tree (its tree_id) with patches (their bytes) applied in order."""
    digest = hashlib.sha256(f"{tree}\n".encode() + fragment)
    for text in patches:
        digest.update(b"\0patch\0" + hashlib.sha256(text).digest())
    return digest.hexdigest()[:16]


def build(tree: Path, patches: list[Path], cache: Path, log=sys.stderr) -> Build:
    """Build `tree` with `patches` applied (in order), or return the variant already built."""
    tree = tree.resolve()
    if not tree.exists():
        raise BuildError(f"{tree}: no such tree")
    if not (tree.is_file() or (tree / "Makefile").exists()):
        raise BuildError(f"{tree}: not a kernel source tree (no Makefile) nor a source tarball")
    texts = []
    for patch in patches:
        try:
            texts.append(patch.read_bytes())
        except OSError as exc:
            raise BuildError(f"patch {patch}: {exc.strerror}") from None
    builds = cache / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    with open(builds / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ident = tree_id(tree)
        root = builds / variant_key(ident, texts, FRAGMENT.read_bytes())
        done = _load(root)
        if done:
            return done
        base = _base(tree, ident, cache, log)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        return _build(root, base, ident, patches, texts, builds, log, time.monotonic())


def _load(root: Path) -> Build | None:
    meta = root / "build.json"
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    return Build(root, data["release"], 0.0, data.get("seeded_from", ""))


def _base(tree: Path, ident: str, cache: Path, log) -> Path:
    """The directory variants are linked from: the tree itself, or a tarball unpacked once."""
    if tree.is_dir():
        return tree
    unpacked = cache / "trees" / ident.removeprefix("tar:")[:16]
    if (unpacked / "done").exists():
        return next(p for p in unpacked.iterdir() if p.is_dir())
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir(parents=True)
    print(f"gadgetd-hil build: unpacking {tree}", file=log)
    try:
        with tarfile.open(tree) as tar:
            tar.extractall(unpacked, filter="tar")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(unpacked, ignore_errors=True)
        raise BuildError(f"{tree}: cannot unpack: {exc}") from None
    tops = [p for p in unpacked.iterdir() if p.is_dir()]
    if len(tops) != 1 or not (tops[0] / "Makefile").exists():
        shutil.rmtree(unpacked, ignore_errors=True)
        raise BuildError(f"{tree}: not a kernel source tarball (one top directory with a Makefile)")
    (unpacked / "done").touch()
    return tops[0]


def _build(root: Path, base: Path, ident: str, patches: list[Path], texts, builds: Path, log,
           started: float) -> Build:
    src = root / "src"
    _link_copy(base, src)
    if (src / ".config").exists() or (src / "include" / "config").exists():
        # built in place: O= builds need a clean source tree (mrproper only unlinks, so the
        # tree's own files stay)
        _run_logged(["make", "mrproper"], src, root / "build.log", "make mrproper")
    for patch in patches:
        _apply(src, patch, root / "build.log")
    seed = _seed(builds, base, root)
    if seed:
        print(f"gadgetd-hil build: starting from {seed.name}'s objects", file=log)
        subprocess.run(["cp", "-a", seed / "src" / "obj", src / "obj"], check=True)
        _refresh_changed(seed / "src", src)
    else:
        _configure(src, root / "build.log")
    release = _make(src, root, log, LOCALVERSION="-" + root.name[:LOCALVERSION_CHARS])
    (root / "boot").mkdir(exist_ok=True)
    shutil.copy2(src / "obj" / "arch" / "x86" / "boot" / "bzImage",
                 root / "boot" / f"vmlinuz-{release}")
    seconds = time.monotonic() - started
    (root / "build.json").write_text(json.dumps({
        "tree": str(base), "tree_id": ident, "base": str(base), "release": release,
        "patches": [{"path": str(p.resolve()), "sha256": hashlib.sha256(t).hexdigest()}
                    for p, t in zip(patches, texts, strict=True)],
        "fragment_sha256": hashlib.sha256(FRAGMENT.read_bytes()).hexdigest(),
        "seconds": round(seconds, 1), "seeded_from": seed.name if seed else "",
        "built": time.time()}, indent=1))
    return Build(root, release, seconds, seed.name if seed else "")


def _link_copy(base: Path, src: Path) -> None:
    """src as hard links to base's files (a full copy across file systems)."""
    proc = subprocess.run(["cp", "-al", base, src], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(src, ignore_errors=True)
        subprocess.run(["cp", "-a", base, src], check=True)
    shutil.rmtree(src / ".git", ignore_errors=True)  # a work tree's: the build needs none of it
    (src / ".git").unlink(missing_ok=True)  # a linked work tree's .git file


def _apply(src: Path, patch: Path, log_path: Path) -> None:
    """GNU patch writes each file it changes anew, so the tree's own files (hard-linked) keep
    their contents."""
    proc = subprocess.run(["patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch",
                           "-d", src, "-i", patch.resolve()], capture_output=True, text=True)
    with open(log_path, "a") as f:
        f.write(f"$ patch -p1 < {patch}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        bad = next((line for line in lines if "FAILED" in line or "malformed" in line
                    or "Reversed" in line or "can't find" in line), lines[-1] if lines else "")
        raise BuildError(f"patch {patch} does not apply: {bad}")


def _seed(builds: Path, base: Path, root: Path) -> Path | None:
    """The newest finished variant with the same configuration fragment, one built from the
    same tree first (a clone of the tree does as well: files are compared by contents)."""
    fragment = hashlib.sha256(FRAGMENT.read_bytes()).hexdigest()
    found = []
    for meta in builds.glob("*/build.json"):
        data = json.loads(meta.read_text())
        if (meta.parent != root and data["fragment_sha256"] == fragment
                and (meta.parent / "src/obj").is_dir()):
            found.append((data["base"] == str(base), data["built"], meta.parent))
    return max(found)[2] if found else None


def _refresh_changed(old: Path, new: Path) -> None:
    """Ready `new` for the objects copied from `old`: a file that is old's very file (inode) is
    left as it is; one with old's contents and mode becomes a link to old's (and so has its
    mtime: nothing to rebuild); any other gets a fresh copy, newer than every copied object, so
    make rebuilds what depends on it. Copies and links replace `new`'s entries, never write
    through them: those may be the tree's own files."""
    before = dict(_walk(old))
    for path, st in _walk(new):
        prev = before.get(path)
        if stat.S_ISLNK(st.st_mode) or (prev is not None and prev.st_ino == st.st_ino):
            continue
        target, temporary = new / path, new / f"{path}.gadgetd-new"
        if (prev is not None and prev.st_size == st.st_size and prev.st_mode == st.st_mode
                and filecmp.cmp(old / path, target, shallow=False)):
            os.link(old / path, temporary)
        else:
            shutil.copyfile(target, temporary)
            os.chmod(temporary, st.st_mode & 0o7777)
        os.replace(temporary, target)


def _env() -> dict[str, str]:
    cache = Path(os.environ.get("CCACHE_DIR", Path.home() / ".cache" / "ccache"))
    return {**os.environ, "CCACHE_DIR": str(cache), "CCACHE_NOHASHDIR": "1",
            "KBUILD_BUILD_USER": "gadgetd", "KBUILD_BUILD_HOST": "gadgetd-hil",
            "KBUILD_BUILD_TIMESTAMP": "2026-01-01", "LC_ALL": "C"}


def _run_logged(argv: list, cwd: Path, log_path: Path, what: str) -> None:
    with open(log_path, "a") as f:
        f.write(f"$ {' '.join(map(str, argv))}\n")
        f.flush()
        proc = subprocess.run(argv, cwd=cwd, env=_env(), stdout=f, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        text = log_path.read_text(errors="replace").splitlines()
        first = next((line for line in text if re.search(r"\berror\b|\*\*\*", line)),
                     text[-1] if text else "")
        raise BuildError(f"{what} failed ({log_path}): {first.strip()}")


def _configure(src: Path, log_path: Path) -> None:
    """virtme-ng's configuration (its defconfig and fragments), then vm.config again on top:
    virtme-ng appends its own list last, and ours must win where they differ (debug info)."""
    configkernel = Path(sys.executable).parent / "virtme-configkernel"
    tool = str(configkernel) if configkernel.exists() else shutil.which("virtme-configkernel")
    if not tool:
        raise BuildError("virtme-configkernel (virtme-ng) not found: install gadgetd[hil]")
    _run_logged([tool, "--defconfig", "--custom", FRAGMENT, "O=obj"], src, log_path,
                "virtme-configkernel")
    with open(src / "obj" / ".config", "a") as config:
        config.write("\n" + FRAGMENT.read_text())
    _run_logged(["make", "O=obj", "olddefconfig"], src, log_path, "make olddefconfig")


def missing_symbols(config_text: str, fragment_text: str) -> list[str]:
    """Lines of the fragment the final .config does not have (a dependency the tree lacks)."""
    have = set(config_text.splitlines())
    return [line for line in fragment_text.splitlines()
            if line.startswith("CONFIG_") and line not in have]


def _make(src: Path, root: Path, log, **variables: str) -> str:
    log_path = root / "build.log"
    assigned = [f"{k}={v}" for k, v in variables.items()]
    _run_logged(["make", "O=obj", "olddefconfig", *assigned], src, log_path, "make olddefconfig")
    missing = missing_symbols((src / "obj" / ".config").read_text(), FRAGMENT.read_text())
    if missing:
        raise BuildError(f"{src}: the configuration lacks {', '.join(missing)} "
                         f"(vm.config; see {log_path})")
    jobs = str(os.cpu_count() or 1)
    print(f"gadgetd-hil build: make -j{jobs} {' '.join(TARGETS)} (log: {log_path})", file=log)
    _run_logged(["make", "O=obj", f"-j{jobs}", "CC=ccache gcc", *assigned, *TARGETS], src,
                log_path, "make")
    release = (src / "obj" / "include" / "config" / "kernel.release").read_text().strip()
    _run_logged(["make", "O=obj", *assigned, f"INSTALL_MOD_PATH={root}", "INSTALL_MOD_STRIP=1",
                 "modules_install"], src, log_path, "make modules_install")
    for link in ("build", "source"):  # point into the variant; virtme-ng needs neither
        (root / "lib" / "modules" / release / link).unlink(missing_ok=True)
    return release
