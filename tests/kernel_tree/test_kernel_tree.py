"""Kernel trees (`make test-kernel-tree`): Debian's linux-source-6.1 built with each experiment of
kernel-patches/, its verdicts, and `gadgetd-hil bisect --tree` on a git repository made from it.

Builds are heavy on two cores (the first takes most of an hour; each patch after it minutes), so
this suite is not in `make test`. Figures land in out/kernel-tree/: builds.json (build times),
a matrix per experiment, bisect.txt.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gadgetd.host import build, kernels

pytestmark = pytest.mark.kernel_tree
ROOT = Path(__file__).resolve().parents[2]
HIL = Path(sys.executable).parent / "gadgetd-hil"
TREE = Path("/usr/src/linux-source-6.1.tar.xz")  # Debian's linux-source-6.1 (make setup)
PATCHES = ROOT / "kernel-patches"
OUT = ROOT / "out" / "kernel-tree"
ALL = ("contended_open", "deactivated_set_alt", "open_race", "delayed_open", "deactivated_reopen",
       "read_after_unbind")
# name: (patches, scenarios run, verdicts expected)
EXPERIMENTS = {
    # the same source as debian:6.1.0-57-amd64: the same verdicts (make repro-test's)
    "stock": ((), ALL, {"contended_open": "present", "deactivated_set_alt": "absent",
                        "open_race": "absent", "delayed_open": "absent",
                        "deactivated_reopen": "present", "read_after_unbind": "absent"}),
    "open-without-mutex": (("ffs-open-without-mutex.patch",),
                           ("contended_open", "deactivated_reopen"),
                           {"contended_open": "absent", "deactivated_reopen": "absent"}),
    "open-plain-lock": (("ffs-open-plain-lock.patch",),
                        ("contended_open", "delayed_open", "deactivated_reopen"),
                        {"contended_open": "absent", "deactivated_reopen": "present"}),
    "revert-read-loop-fix": (("ffs-revert-read-loop-fix.patch",),
                             ("delayed_open", "read_after_unbind"),
                             {"delayed_open": "present", "read_after_unbind": "present"}),
}


def spec(patches) -> str:
    return ":".join([f"tree:{TREE}", *(str(PATCHES / p) for p in patches)])


def _record(name: str, value) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=1))


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_each_experiment_builds_and_the_image_boots_by_its_path(name):
    """The stock tree first (a full build), then each patch on top of its objects."""
    patches = [str(PATCHES / p) for p in EXPERIMENTS[name][0]]
    argv = [HIL, "build", str(TREE)] + [a for p in patches for a in ("--patch", p)]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    image = Path(proc.stdout.strip())
    assert image.is_file() and image.parent.name == "boot"
    assert kernels.resolve(str(image)).modules == image.parent.parent / "lib/modules" / \
        image.name.removeprefix("vmlinuz-")
    meta = json.loads((image.parent.parent / "build.json").read_text())
    _record(f"build:{name}", {"seconds": meta["seconds"], "seeded_from": meta["seeded_from"],
                              "release": meta["release"],
                              "this_run_seconds": round(time.monotonic() - started, 1)})


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_verdicts(name):
    patches, scenarios, expected = EXPERIMENTS[name]
    out = OUT / name
    argv = [HIL, "matrix", "--kernels", spec(patches), "--out", str(out)]
    argv += [a for s in scenarios for a in ("--scenario", s)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "matrix.txt", "w") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT)
    assert proc.returncode == 0, (out / "matrix.txt").read_text()[-3000:]
    row = json.loads((out / "matrix.json").read_text())[0]
    verdicts = {s: row["scenarios"][s]["verdict"] for s in scenarios}
    _record(f"verdicts:{name}", {"verdicts": verdicts, "seconds": row["seconds"],
                                 "release": row["release"]})
    for scenario, verdict in expected.items():
        assert verdicts[scenario] == verdict, (scenario, row["scenarios"][scenario])
    if name == "open-plain-lock":
        counts = row["scenarios"]["contended_open"]["counts"]
        eagain = sum(v for k, v in counts.items() if k.endswith("_EAGAIN"))
        assert eagain == 0 and sum(v for k, v in counts.items() if k.endswith("_attempts")) > 0
        waits = row["scenarios"]["delayed_open"]["latency_ms"]  # how long opens now wait
        assert waits["while_reading"]["p50"] is not None and waits["baseline"]["max"] is not None


def _replace(path: Path, text: str) -> None:
    """Write a new file, never through a hard link to the unpacked tree."""
    path.unlink()
    path.write_text(text)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=gadgetd",
                           "-c", "user.email=gadgetd@localhost", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A", "--force")  # Debian's top-level .gitignore ignores everything (/*)
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _patch(repo: Path, patch: str, *options: str) -> None:
    subprocess.run(["patch", "-p1", "--batch", *options, "-d", str(repo), "-i",
                    str(PATCHES / patch)], check=True, capture_output=True)


def _append(repo: Path, rel: str, line: str) -> None:
    path = repo / rel
    _replace(path, path.read_text() + line)


@pytest.fixture(scope="module")
def repository():
    """good (the open path without the mutex), two unrelated commits, the bad one (the trylock
    back), two more unrelated ones: the repository a kernel developer would bisect."""
    base = build._base(TREE, build.tree_id(TREE), kernels.CACHE, sys.stderr)
    repo = OUT / "bisect-repo"
    subprocess.run(["rm", "-rf", str(repo)], check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(base), str(repo)], check=True)
    _git(repo, "init", "-q")
    _patch(repo, "ffs-open-without-mutex.patch")
    shas = [_commit(repo, "usb: gadget: f_fs: open without ffs->mutex (good)")]
    _append(repo, "Documentation/usb/functionfs.rst", "\n.. unrelated 1\n")
    shas.append(_commit(repo, "Documentation: functionfs: unrelated 1"))
    _append(repo, "drivers/usb/gadget/udc/dummy_hcd.c", "/* unrelated 2 */\n")
    shas.append(_commit(repo, "usb: dummy_hcd: unrelated 2"))
    _patch(repo, "ffs-open-without-mutex.patch", "-R")
    shas.append(_commit(repo, "usb: gadget: f_fs: take ffs->mutex in open again (the bad one)"))
    _append(repo, "drivers/usb/usbip/vudc_main.c", "/* unrelated 3 */\n")
    shas.append(_commit(repo, "usbip: vudc: unrelated 3"))
    _append(repo, "Documentation/usb/functionfs.rst", "\n.. unrelated 4\n")
    shas.append(_commit(repo, "Documentation: functionfs: unrelated 4"))
    return repo, shas


def test_bisect_on_a_git_tree_names_the_bad_commit(repository):
    repo, shas = repository
    started = time.monotonic()
    with open(OUT / "bisect.txt", "w") as log:
        proc = subprocess.run([HIL, "bisect", "--tree", str(repo), "--good", shas[0],
                               "--bad", shas[-1], "--scenario", "contended_open"],
                              stdout=subprocess.PIPE, stderr=log, text=True)
        log.write(proc.stdout)
    seconds = round(time.monotonic() - started, 1)
    steps = (OUT / "bisect.txt").read_text().count("bisect step: ")
    _record("bisect", {"seconds": seconds, "steps": steps, "exit": proc.returncode})
    assert proc.returncode == 0, (OUT / "bisect.txt").read_text()[-3000:]
    assert f"first bad: {shas[3]} " in proc.stdout
    assert _git(repo, "status", "--porcelain") == ""  # the repository is only read
