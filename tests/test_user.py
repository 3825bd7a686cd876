"""Who a function's worker runs as: gadgetd's own system user by default, never uid 0 without
allow_root, and the sysusers.d file that creates the user (shipped, staged, applied by make setup).
The user database is faked here: these tests must not depend on the machine having the user."""

from __future__ import annotations

import pwd
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from gadgetd import worker
from gadgetd.errors import SetupError
from gadgetd.model import FunctionSpec, Interface
from gadgetd.service import SYSUSERS_FILE
from gadgetd.supervisor import Supervisor
from gadgetd.template import parse
from tests.conftest import ROOT
from tests.test_recovery import FakeLoop

FN = FunctionSpec(name="loop0", type="loopback", mountpoint=Path("/run/t/loop0"),
                  interface=Interface(), endpoints=())


def _users(monkeypatch, **uids):
    """The user database holds exactly these users (name=uid, gid = uid + 1)."""
    def getpwnam(name):
        if name not in uids:
            raise KeyError(f"getpwnam(): name not found: {name!r}")
        uid = uids[name]
        return pwd.struct_passwd((name, "x", uid, uid + 1, "", "/nonexistent", "/usr/sbin/nologin"))
    monkeypatch.setattr(pwd, "getpwnam", getpwnam)


def test_the_model_defaults_to_gadgetd():
    assert (FN.user, FN.allow_root) == ("gadgetd", False)


def test_missing_default_user_says_how_to_create_it(monkeypatch):
    _users(monkeypatch)
    with pytest.raises(SetupError) as exc:
        worker.user_entry(FN)
    message = str(exc.value)
    assert message == (f"function loop0: user 'gadgetd' does not exist: create it with "
                       f"`systemd-sysusers {SYSUSERS_FILE}` as root (`make setup` in a checkout "
                       "and `gadgetd install-service` do it)")
    assert SYSUSERS_FILE.is_file()


def test_missing_other_user_is_one_line(monkeypatch):
    _users(monkeypatch, gadgetd=999)
    with pytest.raises(SetupError) as exc:
        worker.user_entry(replace(FN, user="alice"))
    assert str(exc.value) == "function loop0: user 'alice' does not exist"


def test_uid_0_refused_at_run_time_without_allow_root(monkeypatch):
    _users(monkeypatch, toor=0, root=0)
    for user in ("toor", "root"):  # "root" too: a model built without the template reader
        with pytest.raises(SetupError) as exc:
            worker.user_entry(replace(FN, user=user))
        assert str(exc.value) == (f"function loop0: user {user!r} has uid 0: the worker would run "
                                  "as root (set allow_root = true in [function.loop0] if it must)")
        assert worker.user_entry(replace(FN, user=user, allow_root=True)).pw_uid == 0


def test_drop_privileges_refuses_uid_0_too(monkeypatch):
    _users(monkeypatch, toor=0)
    monkeypatch.setattr(worker.os, "geteuid", lambda: 0)
    for name in ("setgroups", "setgid", "setuid"):  # never this process's own credentials
        monkeypatch.setattr(worker.os, name, lambda *a, name=name: pytest.fail(f"{name} called"))
    with pytest.raises(SetupError, match="has uid 0"):
        worker.drop_privileges(replace(FN, user="toor"))


def _without_user(text):
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("user ="))


def test_functionfs_mounted_as_the_default_user(monkeypatch, loopback_text):
    _users(monkeypatch, gadgetd=999)
    sup = Supervisor(parse(_without_user(loopback_text), "t.toml"), loop=FakeLoop())
    fn = sup._mount_options(sup.spec.functions["loop0"])
    assert (fn.user, fn.mount.uid, fn.mount.gid) == ("gadgetd", 999, 1000)
    assert fn.mount.as_option_string() == "no_disconnect=0,uid=999,gid=1000"


def test_missing_user_stops_bring_up_before_anything_is_touched(monkeypatch, loopback_text):
    _users(monkeypatch)
    sup = Supervisor(parse(loopback_text, "t.toml"), loop=FakeLoop())
    touched = []
    monkeypatch.setattr("gadgetd.udc.resolve", lambda name: touched.append(name))
    monkeypatch.setattr("gadgetd.configfs.ensure_configfs", lambda: touched.append("configfs"))
    with pytest.raises(SetupError, match="user 'gadgetd' does not exist: create it with"):
        sup.bring_up()
    assert touched == [] and not sup.undo


def test_status_reports_the_effective_user(monkeypatch, tmp_path, loopback_text):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    from gadgetd.recovery import Recovery
    from tests.test_recovery import FakeWorker

    loop = FakeLoop()
    sup = Supervisor(parse(_without_user(loopback_text), "t.toml"), loop=loop)
    sup.recovery = Recovery(loop, lambda fn, r, g: FakeWorker(fn, r, g), lambda: None,
                            lambda: None, sup._fatal)
    sup.recovery.start(sup.spec.functions)
    assert sup.state()["functions"]["loop0"]["user"] == "gadgetd"


def test_sysusers_file_makes_a_system_user_without_login(tmp_path):
    """systemd-sysusers' own reading of the file, into a scratch root (the machine's is untouched)."""
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("no systemd-sysusers here")
    (tmp_path / "etc").mkdir()
    proc = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS_FILE)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "Creating user 'gadgetd'" in proc.stderr, proc.stderr
    (entry,) = [line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
                if line.startswith("gadgetd:")]
    name, _, uid, gid, _, home, shell = entry
    assert 0 < int(uid) < 1000 and home == "/nonexistent" and shell.endswith("/nologin")
    again = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS_FILE)],
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "Creating" not in again.stderr  # a no-op once it exists


def test_make_setup_applies_the_shipped_sysusers_file():
    makefile = (ROOT / "Makefile").read_text()
    (path,) = re.findall(r"^SYSUSERS := (\S+)$", makefile, re.M)
    assert (ROOT / path).resolve() == SYSUSERS_FILE
    (prereqs,) = re.findall(r"^setup: ([^#]*)##", makefile, re.M)
    assert "system-user" in prereqs.split()
    (recipe,) = re.findall(r"^system-user:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert "systemd-sysusers $(CURDIR)/$(SYSUSERS)" in recipe
    if shutil.which("make"):  # make's own expansion of the recipe (-n: printed, not run)
        proc = subprocess.run(["make", "-n", "-C", str(ROOT), "system-user"], capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert f"systemd-sysusers {SYSUSERS_FILE}" in proc.stdout
