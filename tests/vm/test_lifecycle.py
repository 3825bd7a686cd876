"""Bring-up, teardown and refusals against the real configfs/FunctionFS (inside the VM)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest

from gadgetd import configfs, ffs, runstate, template
from gadgetd.host.device import LoopbackDriver
from tests.vm.conftest import dummy_hcd_params, gadgetd, reload_dummy_hcd

pytestmark = pytest.mark.vm


def test_run_serves_and_sigterm_leaves_nothing(daemon, loopback_template):
    d = daemon()
    dev = d.wait_bound()
    assert LoopbackDriver(dev).loopback(b"hello") == b"hello"
    assert d.stop() == 0, d.stderr
    assert configfs.leftovers(d.spec) == []


def _worker_uids(d) -> tuple[str, set[int], int]:
    """The served function's reported user, its worker's uids (real, effective, saved, fs) and the
    owner of its ep0 file."""
    fn = next(iter(d.spec.functions.values()))
    state = runstate.read(d.spec.name)["functions"][fn.name]
    status = Path(f"/proc/{state['pid']}/status").read_text()
    (uids,) = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
    return state["user"], set(map(int, uids)), (fn.mountpoint / "ep0").stat().st_uid


def test_worker_runs_as_gadgetd_by_default(daemon, loopback_template):
    # The VM shares the host's user database: `make setup` creates gadgetd there.
    uid = pwd.getpwnam("gadgetd").pw_uid
    d = daemon()
    d.wait_bound()
    assert _worker_uids(d) == ("gadgetd", {uid}, uid)
    worker = runstate.read(d.spec.name)["functions"]["loop0"]["pid"]
    assert "NoNewPrivs:\t1" in Path(f"/proc/{worker}/status").read_text()
    assert d.stop() == 0, d.stderr


def test_worker_as_root_only_with_allow_root(tmp_path, daemon, loopback_template):
    t = tmp_path / "t.toml"
    t.write_text(loopback_template.read_text().replace('user = "gadgetd"', 'user = "root"'))
    proc = gadgetd("run", t)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "function.loop0.user = 'root'" in proc.stderr and "allow_root = true" in proc.stderr
    t.write_text(t.read_text().replace('user = "root"', 'user = "root"\nallow_root = true'))
    d = daemon(t)
    d.wait_bound()
    assert _worker_uids(d) == ("root", {0}, 0)
    assert d.stop() == 0, d.stderr


def test_missing_user_touches_nothing(tmp_path, loopback_template):
    t = tmp_path / "t.toml"
    t.write_text(loopback_template.read_text().replace('user = "gadgetd"', 'user = "gadgetd-none"'))
    proc = gadgetd("run", t)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "gadgetd: error: function loop0: user 'gadgetd-none' does not exist")
    assert configfs.leftovers(template.load(t)) == []


def test_nonblock_open_policy_serves(daemon, loopback_template):
    d = daemon(loopback_template, "--nonblock")
    status = LoopbackDriver(d.wait_bound()).status()
    assert status["ep0_retries"]["operations"] >= 1
    assert d.stop() == 0


def test_invalid_template_touches_nothing(tmp_path, loopback_template):
    bad = tmp_path / "bad.toml"
    bad.write_text(loopback_template.read_text().replace('type = "loopback"', 'type = "nope"'))
    before = sorted(os.listdir(configfs.GADGETS))
    proc = gadgetd("run", bad)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "function.loop0.type = 'nope'" in proc.stderr
    assert sorted(os.listdir(configfs.GADGETS)) == before


def test_unknown_udc_touches_nothing(loopback_template):
    proc = gadgetd("run", loopback_template, "--udc", "no_such_udc")
    assert proc.returncode == 3
    assert "UDC 'no_such_udc' not found" in proc.stderr and "dummy_udc.0" in proc.stderr
    assert configfs.leftovers(template.load(loopback_template)) == []


def test_failure_half_way_is_undone(tmp_path, loopback_template):
    """The mount point is a regular file: mount fails after the configfs tree was built."""
    blocker = Path("/run/gadgetd/ffs/not-a-dir")
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("")
    t = tmp_path / "t.toml"
    t.write_text(loopback_template.read_text().replace("/run/gadgetd/ffs/loop0", str(blocker)))
    try:
        proc = gadgetd("run", t)
    finally:
        blocker.unlink()
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    spec = template.load(t)
    assert not configfs.gadget_dir(spec.name).exists()
    assert ffs.mountpoints("loop0") == []


def test_someone_elses_gadget_refused_then_replaced(daemon, loopback_template):
    spec = template.load(loopback_template)
    os.mkdir(configfs.gadget_dir(spec.name))  # a gadget of that name, not made by gadgetd
    proc = gadgetd("run", loopback_template)
    assert proc.returncode == 3 and "already exists" in proc.stderr and "--replace" in proc.stderr
    d = daemon(loopback_template, "--replace")
    assert LoopbackDriver(d.wait_bound()).loopback(b"again") == b"again"
    assert d.stop() == 0
    assert configfs.leftovers(d.spec) == []


def test_restart_after_crash_cleans_its_own_leftovers(daemon, loopback_template):
    first = daemon()
    first.wait_bound()
    first.stop(signal.SIGKILL)  # a crash: the tree, the mount and the state file stay
    assert configfs.gadget_dir(first.spec.name).exists()
    second = daemon()
    assert LoopbackDriver(second.wait_bound()).loopback(b"again") == b"again"
    assert "removing gadget gadgetd-loopback left by gadgetd pid" in second.stop_and_log()
    assert configfs.leftovers(second.spec) == []


def test_world_writable_template_refused(tmp_path, loopback_template):
    t = tmp_path / "t.toml"
    t.write_text(loopback_template.read_text())
    t.chmod(0o666)
    proc = gadgetd("run", t)
    assert proc.returncode == 2 and "writable by group or others" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_down_refuses_a_served_gadget_and_removes_a_crashed_one(daemon):
    d = daemon()
    d.wait_bound()
    proc = gadgetd("down", d.spec.name)
    assert proc.returncode == 1 and f"owned by gadgetd pid {d.proc.pid}" in proc.stderr
    d.stop(signal.SIGKILL)
    proc = gadgetd("down", d.spec.name)
    assert proc.returncode == 0, proc.stderr
    assert configfs.leftovers(d.spec) == []
    assert gadgetd("down", d.spec.name).returncode == 1  # nothing left to remove


def test_udc_auto_without_and_with_several_udcs(loopback_template):
    params = dummy_hcd_params()
    try:
        reload_dummy_hcd(*params, "num=2")
        proc = gadgetd("run", loopback_template)
        assert proc.returncode == 3
        assert "several UDCs present (dummy_udc.0, dummy_udc.1)" in proc.stderr
        assert "--udc" in proc.stderr
        subprocess.run(["rmmod", "dummy_hcd"], check=True)
        proc = gadgetd("run", loopback_template)
        assert proc.returncode == 3
        assert "modprobe dummy_hcd" in proc.stderr and "dtoverlay=dwc2" in proc.stderr
    finally:
        subprocess.run(["rmmod", "dummy_hcd"], capture_output=True)
        subprocess.run(["modprobe", "dummy_hcd", *params], check=True)
    assert configfs.leftovers(template.load(loopback_template)) == []
