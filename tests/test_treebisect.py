"""The tree bisect driver on a real git repository, each step a script instead of build + boot +
repro: the first bad commit is named (exit 0), skipped revisions around it leave it open (125)."""

import subprocess
import sys

import pytest

from gadgetd.host import kernels, treebisect
from gadgetd.repro import report as rep


def _commit(repo, message, **files):
    for name, text in files.items():
        (repo / name).write_text(text)
    subprocess.run(["git", "-C", repo, "add", "-A"], check=True)
    subprocess.run(["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit",
                    "-q", "-m", message], check=True)
    return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """good, unrelated, the bad change, unrelated, unrelated (as make test-kernel-tree's)."""
    monkeypatch.setattr(kernels, "CACHE", tmp_path / "cache")
    path = tmp_path / "linux"
    path.mkdir()
    subprocess.run(["git", "init", "-q", path], check=True)
    shas = [_commit(path, "good", lock="spinlock\n", skip="no\n")]
    shas.append(_commit(path, "unrelated 1", doc="a\n"))
    shas.append(_commit(path, "the bad one", lock="trylock\n"))
    shas.append(_commit(path, "unrelated 2", doc="b\n"))
    shas.append(_commit(path, "unrelated 3", doc="c\n"))
    return path, shas


def _steps(monkeypatch):
    """A step that reads the work tree as the real one reads its kernel's verdict."""
    script = ("import pathlib, sys\n"
              "if pathlib.Path('skip').read_text() == 'yes\\n': sys.exit(125)\n"
              "sys.exit(1 if pathlib.Path('lock').read_text() == 'trylock\\n' else 0)\n")
    monkeypatch.setattr(treebisect, "step_command",
                        lambda scenarios, nonblock: [sys.executable, "-c", script])


def test_the_first_bad_commit_is_named(repo, monkeypatch, capsys):
    path, shas = repo
    _steps(monkeypatch)
    assert treebisect.bisect(path, shas[0], shas[-1], ["contended_open"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"first bad: {shas[2]} the bad one")
    assert subprocess.run(["git", "-C", path, "status", "--porcelain"], capture_output=True,
                          text=True).stdout == ""  # the repository itself untouched


def test_untestable_revisions_next_to_the_bad_one_leave_it_open(repo, monkeypatch):
    path, shas = repo
    subprocess.run(["git", "-C", path, "checkout", "-q", shas[1]], check=True)
    subprocess.run(["git", "-C", path, "checkout", "-q", "-b", "skips"], check=True)
    # a history where the bad change lands in a revision that cannot be tested
    skip_good = _commit(path, "good again", doc="x\n")
    _commit(path, "does not build", lock="trylock\n", skip="yes\n")
    last = _commit(path, "builds again", skip="no\n")
    _steps(monkeypatch)
    assert treebisect.bisect(path, skip_good, last, ["contended_open"]) == 125


def test_a_revision_that_is_not_a_commit_is_a_one_line_error(repo):
    path, shas = repo
    with pytest.raises(kernels.KernelError, match="'v9.9' is not a commit"):
        treebisect.bisect(path, "v9.9", shas[-1], ["contended_open"])


def test_a_directory_that_is_no_repository_is_refused(tmp_path):
    with pytest.raises(kernels.KernelError, match="not a git repository"):
        treebisect.bisect(tmp_path, "a", "b", ["contended_open"])


def test_step_statuses_are_git_bisect_run_s():
    assert treebisect.STEP_STATUS == {rep.ABSENT: 0, rep.PRESENT: 1, rep.INCONCLUSIVE: 125}
    argv = treebisect.step_command(["delayed_open"], nonblock=False)
    assert argv[1:] == ["-m", "gadgetd.host.treebisect", "--blocking", "--scenario",
                        "delayed_open"]


def test_the_first_bad_line_is_parsed():
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert treebisect.first_bad(f"running x\n{sha} is the first bad commit\ncommit {sha}\n") == sha
    assert treebisect.first_bad("There are only 'skip'ped commits left to test.\n") is None
