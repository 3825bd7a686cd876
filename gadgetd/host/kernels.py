"""Debian kernels for the VM bench: resolve a SPEC, fetch the packages once into a cache.

Packages are read through a private apt state (its own sources, lists and cache under the cache
directory), so the machine's apt configuration is never touched. The mirror addresses and keyring
are taken from the system's own apt sources at run time; signatures are always checked.

SPEC forms: debian:ABI (debian:6.1.0-54-amd64), debian:SUITE (bookworm, trixie, sid: that suite's
newest image), tree:TREE[:PATCH...] (a source tree or tarball built with those patches, see
build.py), a path to a kernel image (with modules_dir, unless it lies in DIR/boot beside
DIR/lib/modules/RELEASE as builds do), or a kernel build tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from debian.debian_support import Version

from gadgetd.errors import GadgetdError
from gadgetd.host import build

CACHE = Path(os.environ.get("GADGETD_CACHE", Path.home() / ".cache" / "gadgetd"))
SUITES = {
    "bookworm": ("bookworm", "bookworm-updates", "bookworm-security"),
    "trixie": ("trixie", "trixie-updates", "trixie-security"),
    "sid": ("sid",),
}
DEFAULT_SPEC = "debian:bookworm"  # what bookworm's linux-image-amd64 resolves to
_THREADS = threading.Lock()  # flock() locks per open file: threads of one process need this too
LIST_MAX_AGE = 6 * 3600  # refresh the private package lists after this many seconds
# New-layout (7.x) images are metapackages over these parts.
_PARTS = ("linux-binary-", "linux-modules-", "linux-base-")
_SYSTEM_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


class KernelError(GadgetdError):
    status = 125  # for `git bisect run`: this revision cannot be tested


@dataclass
class Kernel:
    spec: str
    release: str  # uname -r
    image: Path
    modules: Path | None  # lib/modules/<release>, or None when the image comes with a build tree
    packages: list[tuple[str, str]] = field(default_factory=list)  # (package, version)
    suite: str = ""

    @property
    def package_version(self) -> str:
        return self.packages[0][1] if self.packages else ""

    def changelog(self) -> Path | None:
        root = CACHE / "kernels" / self.release
        found = sorted(root.glob("usr/share/doc/linux-*/changelog*.gz")) if root.is_dir() else []
        return found[0] if found else None


def system_mirrors() -> dict[str, tuple[str, str]]:
    """{'debian': (uri, keyring), 'debian-security': (uri, keyring)} from the system's sources."""
    mirrors: dict[str, tuple[str, str]] = {}
    keyring_default = "/usr/share/keyrings/debian-archive-keyring.gpg"
    files = [_SYSTEM_SOURCES[0]] + sorted(_SYSTEM_SOURCES[1].glob("*"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        entries = []
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", stanza, re.M))
                for uri in fields.get("URIs", "").split():
                    entries.append((uri, fields.get("Suites", "").split(),
                                    fields.get("Signed-By", keyring_default)))
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[([^]]*)\]\s+)?(\S+)\s+(\S+)", line.strip())
                if m:
                    key = re.search(r"signed-by=(\S+)", m.group(1) or "")
                    entries.append((m.group(2), [m.group(3)],
                                    key.group(1) if key else keyring_default))
        for uri, suites, keyring in entries:
            for suite in suites:
                kind = "debian-security" if suite.endswith("-security") else "debian"
                if suite.split("-")[0] in SUITES and kind not in mirrors:
                    mirrors[kind] = (uri.rstrip("/"), keyring)
    if "debian" not in mirrors:
        raise KernelError("no Debian mirror in the system's apt sources: cannot fetch kernels")
    return mirrors


class PrivateApt:
    """apt-get/apt-cache over a private state directory; the system's apt stays untouched."""

    def __init__(self, root: Path = CACHE / "apt"):
        self.root = root
        self.conf = root / "apt.conf"

    def _write_config(self) -> None:
        etc = self.root / "etc"
        for d in ("etc/apt.conf.d", "etc/preferences.d", "etc/trusted.gpg.d", "state/lists/partial",
                  "cache/archives/partial", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "status").touch()
        mirrors = system_mirrors()
        stanzas = []
        for kind, (uri, keyring) in mirrors.items():
            suites = [s for group in SUITES.values() for s in group
                      if s.endswith("-security") == (kind == "debian-security")]
            # A mirror snapshot's Release files may be past Valid-Until; signatures are still
            # verified against the keyring.
            stanzas.append(f"Types: deb\nURIs: {uri}\nSuites: {' '.join(suites)}\n"
                           f"Components: main\nSigned-By: {keyring}\nCheck-Valid-Until: no\n")
        (etc / "gadgetd.sources").write_text("\n".join(stanzas))
        r = self.root
        self.conf.write_text("\n".join([
            f'Dir::Etc "{etc}/";', 'Dir::Etc::sourcelist "/dev/null";',
            f'Dir::Etc::sourceparts "{etc}/";', f'Dir::Etc::parts "{etc}/apt.conf.d/";',
            'Dir::Etc::preferences "/dev/null";',
            f'Dir::Etc::preferencesparts "{etc}/preferences.d/";',
            f'Dir::Etc::trusted "{etc}/trusted.gpg";',
            f'Dir::Etc::trustedparts "{etc}/trusted.gpg.d/";',
            f'Dir::State "{r}/state/";', f'Dir::State::status "{r}/state/status";',
            f'Dir::Cache "{r}/cache/";', f'Dir::Log "{r}/log/";',
            'APT::Architecture "amd64";', 'APT::Architectures { "amd64"; };',
            'Acquire::Languages "none";', 'APT::Sandbox::User "root";',
            'Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";',
            'Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";',
            'Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";',
            'Debug::NoLocking "true";', ""]))

    def _run(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.conf), "LC_ALL": "C"}
        proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise KernelError(f"{' '.join(args[:2])} failed: {tail}")
        return proc.stdout

    def update(self, force: bool = False) -> None:
        stamp = self.root / "state" / "updated"
        fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < LIST_MAX_AGE
        if fresh and not force:
            return
        self._write_config()
        print("gadgetd-hil: refreshing the private package lists", file=sys.stderr)
        self._run("apt-get", "update", "-q")
        stamp.touch()

    def versions(self, package: str) -> list[tuple[str, str]]:
        """[(version, suite)] newest first, from apt-cache madison."""
        out = self._run("apt-cache", "madison", package)
        rows = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[0] == package and "Packages" in parts[2]:
                suite = parts[2].split()[1].split("/")[0]
                if (parts[1], suite) not in rows:
                    rows.append((parts[1], suite))
        return rows

    def depends(self, package: str, version: str) -> list[tuple[str, str]]:
        out = self._run("apt-cache", "show", f"{package}={version}")
        m = re.search(r"^Depends: (.*)$", out, re.M)
        deps = []
        for dep in (m.group(1).split(",") if m else []):
            dm = re.match(r"\s*([^\s(|]+)(?:\s*\(=\s*([^)]+)\))?", dep)
            if dm:
                deps.append((dm.group(1), dm.group(2) or ""))
        return deps

    def download(self, package: str, version: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        existing = sorted(dest.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
        if existing:
            return existing[0]
        print(f"gadgetd-hil: downloading {package} {version}", file=sys.stderr)
        self._run("apt-get", "download", "-q", f"{package}={version}", cwd=dest)
        return sorted(dest.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))[0]


@functools.cache
def apt() -> PrivateApt:
    return PrivateApt()


# Kernel image packages per suite, by ABI name (signed images; not -unsigned/-dbg).
IMAGE_RE = re.compile(r"^linux-image-(\d+\.\d+\.\d+(?:-\d+|\+deb\d+(?:\.\d+)?)-amd64)$")


def available() -> list[tuple[str, str, str]]:
    """[(suite, release, version)] of every kernel image the private apt state knows, oldest first."""
    with _cache_lock():
        apt().update()
    names = [n for n in apt()._run("apt-cache", "pkgnames", "linux-image-").split()
             if IMAGE_RE.match(n)]
    rows = []
    out = apt()._run("apt-cache", "madison", *names) if names else ""
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and "Packages" in parts[2]:
            suite = parts[2].split()[1].split("/")[0].split("-")[0]
            row = (suite, IMAGE_RE.match(parts[0]).group(1), parts[1])
            if row not in rows:
                rows.append(row)
    return sort_rows(rows)


def sort_rows(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(suite, release, version) rows by suite, then by Debian version order (python-debian:
    epochs, and ~ sorting before anything, as dpkg --compare-versions does)."""
    return sorted(rows, key=lambda r: (list(SUITES).index(r[0]), Version(r[2])))


def cached() -> list[Kernel]:
    return [k for k in (_load(d) for d in sorted((CACHE / "kernels").glob("*"))) if k]


def _load(root: Path) -> Kernel | None:
    meta = root / "kernel.json"
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    return Kernel(spec=data["spec"], release=data["release"], image=root / data["image"],
                  modules=root / data["modules"],
                  packages=[tuple(p) for p in data["packages"]], suite=data["suite"])


@contextlib.contextmanager
def _cache_lock():
    """One resolver at a time in the cache, across threads and processes (matrix --jobs, shards
    on one machine): the private apt state and a kernel being unpacked are never shared."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with _THREADS, open(CACHE / ".kernels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def resolve(spec: str, modules_dir: str | None = None) -> Kernel:
    """Turn SPEC into a bootable kernel on disk, downloading Debian packages into the cache."""
    if spec.startswith("debian:"):
        with _cache_lock():
            return _debian(spec)
    if spec.startswith("tree:"):
        tree, *patches = spec.removeprefix("tree:").split(":")
        built = build.build(Path(tree), [Path(p) for p in patches], CACHE)
        # shown where a Debian kernel shows its package: the tree and its patches
        what = "+".join(Path(p).stem for p in patches) or "unpatched"
        return Kernel(spec, release=built.release, image=built.image, modules=built.modules,
                      packages=[(Path(tree).name, what)])
    path = Path(spec)
    if path.is_dir() and (path / ".config").exists():
        return Kernel(spec, release=_tree_release(path), image=path.resolve(), modules=None)
    if path.is_file():
        return _staged_image(spec, path.resolve(), modules_dir)
    raise KernelError(f"kernel {spec!r}: not debian:ABI, debian:SUITE, tree:TREE[:PATCH...], an "
                      "image or a build tree")


def _debian(spec: str) -> Kernel:
    name = spec.removeprefix("debian:")
    if name in SUITES:
        apt().update()
        rows = [(v, s) for v, s in apt().versions("linux-image-amd64") if s in SUITES[name]]
        if not rows:
            raise KernelError(f"{spec}: no linux-image-amd64 in {name}")
        meta_version, suite = rows[0]
        image = [d for d, _ in apt().depends("linux-image-amd64", meta_version)
                 if IMAGE_RE.match(d)]
        if not image:
            raise KernelError(f"{spec}: linux-image-amd64 {meta_version} names no image package")
        release = IMAGE_RE.match(image[0]).group(1)
    else:
        release = name
        if not IMAGE_RE.match(f"linux-image-{release}"):
            raise KernelError(f"{spec}: not a Debian kernel ABI such as 6.1.0-54-amd64 "
                              "(gadgetd-hil kernels lists them)")
        known = _load(CACHE / "kernels" / release)
        if known:
            return _with_spec(known, spec)
        apt().update()
    package = f"linux-image-{release}"
    rows = apt().versions(package)
    if not rows:
        raise KernelError(f"{spec}: package {package} not found (gadgetd-hil kernels lists them)")
    version, suite = rows[0]
    return _with_spec(_fetch(release, package, version, suite.split("-")[0]), spec)


def _with_spec(kernel: Kernel, spec: str) -> Kernel:
    kernel.spec = spec
    return kernel


def _fetch(release: str, package: str, version: str, suite: str) -> Kernel:
    root = CACHE / "kernels" / release
    known = _load(root)
    if known and known.packages[0] == (package, version):
        return known
    # 7.x images are metapackages over linux-binary-*, linux-modules-* and linux-base-*.
    packages = [(package, version)] + [
        (dep, dep_version or version) for dep, dep_version in apt().depends(package, version)
        if dep.startswith(_PARTS)]
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for pkg, ver in packages:
        deb = apt().download(pkg, ver, CACHE / "debs")
        subprocess.run(["dpkg-deb", "-x", deb, partial], check=True)
    image = next((p for p in (partial / "boot" / f"vmlinuz-{release}",
                              partial / "usr/lib/modules" / release / "vmlinuz") if p.exists()),
                 None)
    modules = next((p for p in (partial / "lib/modules" / release,
                                partial / "usr/lib/modules" / release) if p.is_dir()), None)
    if image is None or modules is None:
        raise KernelError(f"{package} {version}: no kernel image or modules in the packages")
    # Debian packages ship no modules.dep (depmod runs at install time): make it once here.
    subprocess.run(["depmod", "-a", "-b", modules.parent.parent.parent, release], check=True)
    (partial / "kernel.json").write_text(json.dumps({
        "spec": f"debian:{release}", "release": release, "suite": suite,
        "image": str(image.relative_to(partial)), "modules": str(modules.relative_to(partial)),
        "packages": packages}, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return _load(root)


def _tree_release(tree: Path) -> str:
    release_file = tree / "include/config/kernel.release"
    if not release_file.exists():
        raise KernelError(f"{tree}: no include/config/kernel.release: build the kernel first")
    return release_file.read_text().strip()


def _image_release(image: Path) -> str:
    out = subprocess.run(["file", "-b", image], capture_output=True, text=True).stdout
    m = re.search(r"version (\S+)", out)
    if not m:
        raise KernelError(f"{image}: not a bootable kernel image ({out.strip()})")
    return m.group(1)


def _staged_image(spec: str, image: Path, modules_dir: str | None) -> Kernel:
    """An image + modules given as paths, arranged as virtme-ng expects (boot/ and lib/modules/
    side by side) with symlinks in the cache, so nothing is installed into /lib/modules."""
    release = _image_release(image)
    beside = image.parent.parent / "lib" / "modules" / release
    if modules_dir is None and image.parent.name == "boot" and (beside / "modules.dep").exists():
        return Kernel(spec, release=release, image=image, modules=beside)
    if modules_dir is None:
        raise KernelError(f"{spec}: a kernel image needs --modules DIR (lib/modules/{release})")
    modules = Path(modules_dir).resolve()
    if (modules / "lib/modules" / release).is_dir():  # an INSTALL_MOD_PATH root
        modules = modules / "lib/modules" / release
    if modules.name != release or not (modules / "modules.dep").exists():
        raise KernelError(f"--modules {modules_dir}: expected a lib/modules/{release} directory "
                          "with modules.dep (make modules_install INSTALL_MOD_PATH=...)")
    stage = CACHE / "staged" / release
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "boot").mkdir(parents=True)
    (stage / "lib/modules").mkdir(parents=True)
    (stage / "boot" / f"vmlinuz-{release}").symlink_to(image)
    (stage / "lib/modules" / release).symlink_to(modules)
    return Kernel(spec, release=release, image=stage / "boot" / f"vmlinuz-{release}",
                  modules=stage / "lib/modules" / release)
