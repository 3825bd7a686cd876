"""`gadgetd-hil bisect --tree REPO`: `git bisect run` over a kernel git repository, each step a
build (build.py) + boots + repro (matrix.run_one).

The repository is only read: the bisect runs in a clone of it under the cache (`git clone
--shared`: its objects are borrowed, not copied), kept between bisects so that builds start from
the previous step's objects. A step exits as `git bisect run` wants: 0 absent (good), 1 present
(bad), 125 (skip) when the revision does not build, the kernel does not boot or repro is
inconclusive.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import click

from gadgetd.host import kernels, matrix
from gadgetd.repro import report as rep

STEP_STATUS = {rep.ABSENT: 0, rep.PRESENT: 1, rep.INCONCLUSIVE: 125}
FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit$", re.M)


def _git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise kernels.KernelError(f"git {' '.join(args[:2])} in {repo}: {tail}")
    return proc.stdout.strip()


def revision(repo: Path, rev: str) -> str:
    """The commit REV names in REPO, or a one-line error."""
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                          f"{rev}^{{commit}}"], capture_output=True, text=True)
    if out.returncode != 0:
        raise kernels.KernelError(f"{repo}: {rev!r} is not a commit")
    return out.stdout.strip()


def step_command(scenarios: list[str] | tuple[str, ...], nonblock: bool) -> list[str]:
    """What `git bisect run` runs in the clone for each revision."""
    argv = [sys.executable, "-m", "gadgetd.host.treebisect"]
    if not nonblock:
        argv.append("--blocking")
    for name in scenarios:
        argv += ["--scenario", name]
    return argv


def first_bad(output: str) -> str | None:
    m = FIRST_BAD.search(output)
    return m.group(1) if m else None


def bisect(repo: Path, good: str, bad: str, scenarios, nonblock: bool = True,
           log=sys.stderr) -> int:
    """Bisect REPO between GOOD and BAD; 0 once the first bad commit is named, 125 if skipped
    revisions leave it undecided."""
    repo = repo.resolve()
    if not (repo / ".git").exists() and _git(repo, "rev-parse", "--is-bare-repository",
                                             check=False) != "true":
        raise kernels.KernelError(f"{repo}: not a git repository")
    good_sha, bad_sha = revision(repo, good), revision(repo, bad)
    clone = kernels.CACHE / "bisect" / hashlib.sha256(str(repo).encode()).hexdigest()[:12]
    if not (clone / ".git").exists():
        print(f"bisect: cloning {repo} into {clone} (shared objects)", file=log)
        subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(repo), str(clone)],
                       check=True)
    else:
        _git(clone, "bisect", "reset", check=False)
        _git(clone, "fetch", "-q", str(repo), good_sha, bad_sha)
    _git(clone, "checkout", "-q", "--force", "--detach", bad_sha)
    _git(clone, "bisect", "start", bad_sha, good_sha)
    count = _git(clone, "rev-list", "--count", f"{good_sha}..{bad_sha}")
    print(f"bisect: {count} commits after {good_sha[:12]} (good) up to {bad_sha[:12]} (bad)",
          file=log)
    try:
        proc = subprocess.Popen(["git", "bisect", "run", *step_command(scenarios, nonblock)],
                                cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        output = []
        for line in proc.stdout:
            log.write(line)
            output.append(line)
        proc.wait()
        bisect_log = _git(clone, "bisect", "log", check=False)
    finally:
        _git(clone, "bisect", "reset", check=False)
    print(bisect_log, file=log)
    found = first_bad("".join(output))
    if found is None:
        print("bisect: no first bad commit named (revisions that could not be tested, or the "
              "good and bad ends do not differ)")
        return 125
    print(f"first bad: {_git(clone, 'log', '-1', '--format=%H %s', found)}")
    return 0


@click.command()
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(rep.SCENARIOS))
@click.option("--blocking", is_flag=True)
def step(scenarios, blocking):
    """One `git bisect run` step: build the work tree here, boot it, run repro."""
    row = matrix.run_one(f"tree:{os.getcwd()}", nonblock=not blocking,
                         scenarios=scenarios or rep.SCENARIOS)
    head = _git(Path.cwd(), "log", "-1", "--format=%h %s")
    print(f"bisect step: {head}: {row.verdict}" + (f" ({row.note})" if row.note else ""),
          file=sys.stderr)
    sys.exit(STEP_STATUS[row.verdict])


if __name__ == "__main__":
    step()
