"""Failure windows of bring-up, ownership, binding and reload, against the real kernel. Faults
come from outside: strace in front of `gadgetd run` injects signals and errors into the
supervisor's own syscalls (-e inject=...:signal=|error=...:when=N); workers are not traced."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import usb.core
import usb.util

from gadgetd import configfs, ffs, runstate, template, templates
from gadgetd.host.device import ECHO_IN, DeviceSelector, LoopbackDriver, wait_for_device
from tests.vm.conftest import dummy_hcd_params, gadgetd, save_figures

pytestmark = [pytest.mark.vm, pytest.mark.faults]  # make test-faults runs them at full counts
GADGETD = (sys.executable, "-m", "gadgetd")
# The supervisor's bring-up steps: configfs directories and links, mount points and mounts.
STEPS = ("mkdir", "mkdirat", "symlink", "symlinkat", "mount")
FULL = float(os.environ.get("GADGETD_FAULT_SCALE", "0.1")) >= 1  # make test-faults
# Seconds a traced gadgetd may take to come up: strace stops it at every syscall, and under
# software emulation with a cold 9p cache its imports alone took over 60 s (CI, 2026-12-05).
TRACED_START = 300


def each_step(calls: list[tuple[str, int, str]]) -> list[tuple[str, int]]:
    """(syscall, n) for every step under make test-faults; make test (a traced Python start takes
    ~10 s under emulation) takes the first configfs directory and the first mount (an earlier
    mkdir may be of a directory that exists, where an error is rightly tolerated)."""
    if FULL:
        return sorted((name, n) for name, n, _ in calls)
    return [next((name, n) for name, n, line in calls
                 if name in ("mkdir", "mkdirat") and "/sys/kernel/config/" in line),
            next((name, n) for name, n, _ in calls if name == "mount")]


def traced(*inject: str, log: Path | None = None, paths=()) -> tuple[str, ...]:
    """strace in front of gadgetd: -e inject=... on the supervisor only (no -f: workers are not
    traced); with `paths`, only on syscalls on those paths. (With --seccomp-bpf, which needs
    -f, strace 6.1 injected no signal at all here.)"""
    return ("strace", "-qq", "-ttt", "-y", "-e", "signal=none",
            "-o", str(log or "/dev/null"),
            "-e", f"trace={','.join(STEPS)},write", *(a for p in paths for a in ("-P", str(p))),
            *(a for i in inject for a in ("-e", i)), "--", *GADGETD)


def nth_call(log: Path, syscall: str, n: int) -> float:
    """Timestamp of the n-th call of `syscall` in a -ttt log."""
    return [when for when, name in map(_call, log.read_text().splitlines())
            if name == syscall][n - 1]


def _call(line: str) -> tuple[float, str]:
    """(timestamp, syscall name) of one line of a -ttt log."""
    when, call = line.split(maxsplit=1)
    return float(when), call.split("(")[0]


def gadget_pid(strace_pid: int, timeout=30.0) -> int:
    """The traced gadgetd: strace's only child."""
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{strace_pid}/task/{strace_pid}/children")
    while time.monotonic() < deadline:
        children = path.read_text().split() if path.exists() else []
        if children:
            return int(children[0])
        time.sleep(0.02)
    raise AssertionError("strace started no gadgetd")


def where_it_hangs(strace_pid: int, log: Path) -> tuple[int, str]:
    """What a traced gadgetd that did not exit is doing: (its pid, its processes (state,
    wchan), the Python stack py-spy reads once strace is gone (a traced process cannot be
    read), and the calls strace injected into and saw last)."""
    pid = gadget_pid(strace_pid, timeout=1)
    signals = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))]
    ps = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:30,args", "--ppid", str(pid), "-p",
                         str(pid)], capture_output=True, text=True).stdout
    os.kill(strace_pid, signal.SIGKILL)  # its tracee is detached, not killed
    time.sleep(1)
    pyspy = Path(sys.executable).parent / "py-spy"
    dump = subprocess.run([str(pyspy), "dump", "--pid", str(pid)], capture_output=True,
                          text=True, timeout=60)
    lines = log.read_text().splitlines() if log.exists() else []
    injected = [line for line in lines if "INJECTED" in line]
    return pid, "\n".join([ps, *signals, dump.stdout + dump.stderr, "strace:", *injected, "...",
                           *lines[-15:]])


def no_residue(spec) -> None:
    assert configfs.leftovers(spec) == [], "configfs residue or stale mounts"
    assert not configfs.gadget_dir(spec.name).exists()
    assert all(ffs.mountpoints(name) == [] for name in spec.functions)


@pytest.fixture(scope="module")
def bring_up(tmp_path_factory) -> list[str]:
    """The supervisor's traced calls of a plain bring-up, up to its first bind."""
    loopback_template = templates.path("loopback")
    log = tmp_path_factory.mktemp("steps") / "steps.strace"
    tracer = subprocess.Popen(traced(log=log) + ("run", str(loopback_template)))
    wait_for_device_of(template.load(loopback_template))
    os.kill(gadget_pid(tracer.pid), signal.SIGTERM)
    assert tracer.wait(60) == 0
    lines = log.read_text().splitlines()
    return lines[:next(i for i, line in enumerate(lines) if '"dummy_udc' in line)]


@pytest.fixture(scope="module")
def step_calls(bring_up) -> list[tuple[str, int, str]]:
    """The step syscalls of a plain bring-up (counted, not assumed): (name, n-th call of that
    name, strace line)."""
    seen, calls = collections.Counter(), []
    for line in bring_up:
        name = _call(line)[1]
        if name in STEPS:
            seen[name] += 1
            calls.append((name, seen[name], line))
    return calls


@pytest.fixture(scope="module")
def attributes(bring_up) -> list[str]:
    """The configfs attributes a plain bring-up writes, in order (strace -y names each fd)."""
    written = [line.split("<", 1)[1].split(">", 1)[0] for line in bring_up
               if _call(line)[1] == "write" and "</sys/kernel/config/" in line]
    return list(dict.fromkeys(written))


def test_sigkill_during_bring_up_does_not_block_the_next_start(daemon, loopback_template):
    """Killed at its first mount, after the configfs tree was built: the ownership record taken
    before the first mkdir lets the next start (no --replace, as the unit runs it) clean up."""
    proc = subprocess.run(traced("inject=mount:signal=SIGKILL:when=1")
                          + ("run", str(loopback_template)), capture_output=True, text=True,
                          timeout=TRACED_START)
    spec = template.load(loopback_template)
    assert proc.returncode != 0 and configfs.gadget_dir(spec.name).exists()
    d = daemon()
    assert LoopbackDriver(d.wait_bound()).loopback(b"after a crash") == b"after a crash"
    assert f"removing gadget {spec.name} left by gadgetd pid" in d.stop_and_log()
    no_residue(spec)


def test_sigterm_after_each_bring_up_step_stops_within_10_s(loopback_template, tmp_path, step_calls):
    spec = template.load(loopback_template)
    steps = collections.Counter(name for name, _, _ in step_calls)
    assert steps["mkdir"] + steps["mkdirat"] >= 5 and steps["mount"] >= 1, steps
    took = {}
    for syscall, n in each_step(step_calls):
        log = tmp_path / f"{syscall}{n}.strace"
        proc = subprocess.Popen(traced(f"inject={syscall}:signal=SIGTERM:when={n}", log=log)
                                + ("run", str(loopback_template)), stderr=subprocess.PIPE,
                                text=True)
        try:
            _, stderr = proc.communicate(timeout=TRACED_START)
        except subprocess.TimeoutExpired:
            pid, hang = where_it_hangs(proc.pid, log)
            os.kill(pid, signal.SIGKILL)
            _, stderr = proc.communicate(timeout=30)
            raise AssertionError(f"{syscall} #{n}: no exit {TRACED_START} s after starting\n"
                                 f"{hang}\n"
                                 f"gadgetd:\n{stderr[-3000:]}") from None
        ended = time.time()
        took[f"{syscall}#{n}"] = round(ended - nth_call(log, syscall, n), 2)
        assert proc.returncode == 0, f"{syscall} #{n}: {stderr}"
        assert "Traceback" not in stderr
        no_residue(spec)
    save_figures({"suite": "sigterm_during_bring_up", "seconds_to_exit": took})
    assert max(took.values()) < 10, took


def until_served_or_failed(command: tuple[str, ...], spec) -> tuple[int, str, bool]:
    """Run traced gadgetd until it exits, or until its device enumerates and SIGTERM stops it:
    (exit status, stderr, served). A fault the bring-up tolerates (mkdir of a directory that
    exists) must serve; one it does not must fail in one line."""
    with tempfile.TemporaryFile("w+") as err:
        tracer = subprocess.Popen(command, stderr=err, text=True)
        selector = DeviceSelector(spec.id_vendor, spec.id_product)
        deadline = time.monotonic() + TRACED_START
        served = False
        while tracer.poll() is None and not served:
            assert time.monotonic() < deadline, "neither served nor failed"
            time.sleep(0.2)
            served = selector.find() is not None
        if served:
            os.kill(gadget_pid(tracer.pid), signal.SIGTERM)
        status = tracer.wait(60)
        err.seek(0)
        return status, err.read(), served


@pytest.mark.parametrize("error", ["ENOSPC", "EROFS", "EINVAL"] if FULL else ["ENOSPC"])
def test_bring_up_step_failing_leaves_nothing(loopback_template, step_calls, error):
    """Each bring-up step's syscall fails in turn (configfs mkdir and symlink, mount points,
    mount): a one-line error and nothing left, or, where the failure is harmless, served."""
    spec = template.load(loopback_template)
    outcomes = collections.Counter()
    for syscall, n in each_step(step_calls):
        status, stderr, served = until_served_or_failed(
            traced(f"inject={syscall}:error={error}:when={n}")
            + ("run", str(loopback_template)), spec)
        where = f"{syscall} #{n} {error}: {status} {stderr}"
        if served:
            assert status == 0, where
        else:
            assert status == 3, where
            errors = [line for line in stderr.splitlines()
                      if line.startswith("gadgetd: error:")]
            assert len(errors) == 1 and "Traceback" not in stderr, where
        outcomes["served" if served else "refused"] += 1
        no_residue(spec)
    save_figures({"suite": f"{error}_at_each_bring_up_step", **outcomes})
    assert outcomes["refused"] >= 2


@pytest.mark.parametrize("error", ["ENOSPC", "EROFS", "EINVAL"] if FULL else ["EINVAL"])
def test_configfs_attribute_write_failing_leaves_nothing(loopback_template, attributes, error):
    """Each configfs attribute write of bring-up fails in turn (make test: the last one
    bring-up writes): never served without it, a one-line error naming it, nothing left."""
    spec = template.load(loopback_template)
    assert any(a.endswith("/idVendor") for a in attributes), attributes
    for path in attributes if FULL else attributes[-1:]:
        status, stderr, served = until_served_or_failed(
            traced(f"inject=write:error={error}:when=1", paths=[path])
            + ("run", str(loopback_template)), spec)
        where = f"{path} {error}: {status} {stderr}"
        assert not served and status == 3, where
        errors = [line for line in stderr.splitlines() if line.startswith("gadgetd: error:")]
        assert len(errors) == 1 and Path(path).name in errors[0], where
        assert "Traceback" not in stderr, where
        no_residue(spec)
    save_figures({"suite": f"{error}_at_each_attribute", "attributes": len(attributes)})


def _tracer_attached(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in status.splitlines() if line.startswith("TracerPid:")).split()[1] != "0"


@pytest.mark.parametrize("error", ["EBUSY", "ENODEV"] if FULL else ["ENODEV"])
def test_a_failing_bind_is_retried_on_a_timer(loopback_template, tmp_path, error):
    """A UDC appears and every bind fails (ENODEV: it vanished between resolve and bind): the
    timer retries at 0.5, 1, 2, 4 s with no further uevent, and once strace lets go the next
    retry serves. strace attaches to the running daemon (-p), so that SIGINT detaches it."""
    spec = template.load(loopback_template)
    params = dummy_hcd_params()
    subprocess.run(["rmmod", "dummy_hcd"], check=True)
    log = tmp_path / "daemon.log"
    tracer = None
    try:
        with open(log, "w") as out:
            daemon = subprocess.Popen([*GADGETD, "run", "--wait-for-udc", str(loopback_template)],
                                      stderr=out)
        tracer = subprocess.Popen(["strace", "-qq", "-o", "/dev/null", "-p", str(daemon.pid),
                                   "-P", str(configfs.gadget_dir(spec.name) / "UDC"),
                                   "-e", "trace=write", "-e", f"inject=write:error={error}"])
        deadline = time.monotonic() + 30
        while not _tracer_attached(daemon.pid):
            assert time.monotonic() < deadline, "strace did not attach"
            time.sleep(0.1)
    finally:
        subprocess.run(["modprobe", "dummy_hcd", *params], check=True)
    try:
        deadline = time.monotonic() + 90
        while log.read_text().count("binding dummy_udc.0 failed") < 4:
            assert time.monotonic() < deadline and daemon.poll() is None, log.read_text()
            time.sleep(0.2)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        dev = wait_for_device_of(spec)
        assert LoopbackDriver(dev).loopback(b"bound at last") == b"bound at last"
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    text = log.read_text()
    failed = [line for line in text.splitlines() if "binding dummy_udc.0 failed" in line]
    assert [line.rsplit("retrying in ", 1)[1] for line in failed[:4]] == [
        "0.5 s", "1 s", "2 s", "4 s"], text
    assert "bound to dummy_udc.0" in text and "gadget gadgetd-loopback removed" in text
    no_residue(spec)


def test_two_daemons_racing_for_one_gadget(loopback_template):
    spec = template.load(loopback_template)
    racers = [subprocess.Popen([*GADGETD, "run", str(loopback_template)], stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while all(r.poll() is None for r in racers):
            assert time.monotonic() < deadline, "neither racer gave up"
            time.sleep(0.05)
        loser = next(r for r in racers if r.poll() is not None)
        winner = next(r for r in racers if r is not loser)
        assert loser.returncode == 3
        assert f"owned by gadgetd pid {winner.pid}" in loser.stderr.read()
        wait_for_device_of(spec)
        proc = gadgetd("run", "--replace", loopback_template)  # even --replace deletes nothing
        assert proc.returncode == 3 and f"owned by gadgetd pid {winner.pid}" in proc.stderr
        assert LoopbackDriver(wait_for_device_of(spec)).loopback(b"still mine") == b"still mine"
        winner.send_signal(signal.SIGTERM)
        assert winner.wait(60) == 0
    finally:
        for r in racers:
            if r.poll() is None:
                r.send_signal(signal.SIGTERM)
                r.wait(60)
    no_residue(spec)


def wait_for_device_of(spec):
    return wait_for_device(DeviceSelector(spec.id_vendor, spec.id_product), TRACED_START)


def test_a_reload_that_does_not_come_up_restores_the_gadget(daemon, loopback_template):
    """The new template parses, but its mount point is a regular file: bring-up fails half-way
    (configfs built), is undone, and the running template comes back."""
    directory = Path("/run/gadgetd-test")
    directory.mkdir(mode=0o755, exist_ok=True)
    good = loopback_template.read_text()
    path = directory / "reload.toml"
    path.write_text(good)
    blocker = Path("/run/gadgetd/ffs/blocker")
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("")
    try:
        d = daemon(path)
        first = d.wait_bound()
        path.write_text(good.replace("/run/gadgetd/ffs/loop0", str(blocker)))
        os.kill(d.proc.pid, signal.SIGHUP)
        dev = wait_for_device(d.selector, 90, gone_first=first)
        assert LoopbackDriver(dev).loopback(b"restored") == b"restored"
        assert d.proc.poll() is None, "the daemon exited"
        assert runstate.read(d.spec.name)["functions"]["loop0"]["state"] == "ready"
        log = d.stop_and_log()
        restored = [line for line in log.splitlines() if "did not come up" in line]
        assert len(restored) == 1 and str(blocker) in restored[0] and "restoring" in restored[0]
    finally:
        blocker.unlink()
        path.unlink()


@pytest.fixture
def freezer(tmp_path):
    """A cgroup v1 freezer: a frozen task sleeps in the kernel (state D) and SIGKILL does not
    end it until thawed, the shape of a worker stuck in f_fs."""
    root = tmp_path / "freezer"
    root.mkdir()
    subprocess.run(["mount", "-t", "cgroup", "-o", "freezer", "freezer", str(root)], check=True)
    group = root / "stuck"
    group.mkdir()
    yield group
    (group / "freezer.state").write_text("THAWED")
    deadline = time.monotonic() + 30
    while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    group.rmdir()
    subprocess.run(["umount", str(root)], check=True)


def test_a_worker_stuck_in_the_kernel_is_reported_and_the_loop_goes_on(daemon, freezer):
    d = daemon()
    d.wait_bound()
    worker = runstate.read(d.spec.name)["functions"]["loop0"]["pid"]
    (freezer / "cgroup.procs").write_text(str(worker))
    (freezer / "freezer.state").write_text("FROZEN")
    start = time.monotonic()
    while True:  # silent for 10 s -> SIGKILL -> still there 5 s later -> stuck
        state = runstate.read(d.spec.name)["functions"]["loop0"]
        if state["state"] == "stuck" and state["pid"] == worker:
            break
        assert time.monotonic() - start < 60, f"never reported stuck: {state}"
        time.sleep(0.5)
    assert state["stack"].startswith("state D:"), state["stack"]
    before = os.stat(runstate.path(d.spec.name)).st_mtime
    time.sleep(3)
    assert os.stat(runstate.path(d.spec.name)).st_mtime > before, "the loop stopped ticking"
    assert d.proc.poll() is None
    assert d.stop() != 0  # teardown could not reap it, so the mount stays: said, not hidden
    assert f"worker {worker} (loop0) could not be reaped" in d.stderr
    assert "is stuck in the kernel" in d.stderr
    (freezer / "freezer.state").write_text("THAWED")
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    # The next start finds the record of a daemon that did not exit cleanly and the mount it
    # could not remove, and serves.
    again = daemon()
    assert LoopbackDriver(again.wait_bound()).loopback(b"after") == b"after"
    assert "left mounted by gadgetd pid" in again.stop_and_log()
    no_residue(again.spec)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_data_stage_the_host_abandoned_is_dequeued_and_the_worker_goes_on(daemon):
    """The host gives up on an IN request (1 ms timeout) before the worker's reply, then sends
    nothing more. dummy_hcd keeps that reply queued until the next SETUP (usbip-vudc: until the
    next data stage), so without a bound the worker's write(ep0) waited, holding ffs->mutex,
    until the supervisor killed it as silent. Bounded, f_fs dequeues it and the worker goes on."""
    d = daemon()
    loopback = LoopbackDriver(d.wait_bound())
    worker = runstate.read(d.spec.name)["functions"]["loop0"]["pid"]
    counters: dict = {}
    for _ in range(20):
        try:
            loopback.dev.ctrl_transfer(0xC1, ECHO_IN, 0, loopback.interface_number, 4096, 1)
            continue  # answered within 1 ms: try again
        except usb.core.USBTimeoutError:
            pass
        deadline = time.monotonic() + ffs.DATA_STAGE_TIMEOUT + 4  # 2 statuses past the bound
        while time.monotonic() < deadline and not counters.get("data_stage_timeouts"):
            time.sleep(0.5)
            counters = runstate.read(d.spec.name)["functions"]["loop0"]["counters"]
        if counters.get("data_stage_timeouts"):
            break
    assert counters.get("data_stage_timeouts") == 1, counters
    state = runstate.read(d.spec.name)
    assert state["recovery_count"] == 0 and state["functions"]["loop0"]["pid"] == worker
    assert loopback.echo(b"after") == b"after"
    assert loopback.loopback(b"after") == b"after"
    usb.util.dispose_resources(loopback.dev)
    assert "the host did not complete the data stage in 5 s: dequeued and STALLed" in d.stop_and_log()
