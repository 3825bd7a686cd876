"""--board URL parsing: the ssh command line the HIL suite runs on the board."""

import os

import pytest

from gadgetd.host.board import BoardError, SshBoard


def test_root_url_with_port_identity_and_config():
    b = SshBoard("g", "ssh://root@pi.local:2222", identity="/k", ssh_config="/c")
    assert b.target == "root@pi.local" and b.sudo == ""
    assert b.options[:2] == ["-F", "/c"]
    assert ["-p", "2222"] == b.options[b.options.index("-p"):b.options.index("-p") + 2]
    assert "/k" == b.options[b.options.index("-i") + 1]
    assert "BatchMode=yes" in b.options  # never a password prompt in a test run


def test_other_user_goes_through_sudo():
    b = SshBoard("g", "ssh://pi@10.0.0.2")
    assert b.target == "pi@10.0.0.2" and b.sudo == "sudo -n " and "-p" not in b.options


@pytest.mark.parametrize("url", ["pi@10.0.0.2", "http://pi", "ssh://"])
def test_bad_url_refused(url):
    with pytest.raises(BoardError, match="expected ssh://USER@HOST"):
        SshBoard("g", url)


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """An `ssh` first on PATH that prints its arguments, one a line."""
    ssh = tmp_path / "ssh"
    ssh.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


@pytest.mark.parametrize("url, target, remote", [
    ("ssh://root@pi.local", "root@pi.local", "sh -c true"),
    ("ssh://-oProxyCommand=id", "-oproxycommand=id", "sudo -n sh -c true")])
def test_the_target_is_never_an_ssh_option(fake_ssh, url, target, remote):
    assert SshBoard("g", url).sh("true").splitlines()[-3:] == ["--", target, remote]
