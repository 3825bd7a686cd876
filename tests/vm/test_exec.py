"""FunctionFS programs gadgetd did not write, served under gadgetd (kind exec).

MTP: Debian's umtp-responder (umtprd) with the shipped configfs_templates/mtp.toml and its
umtprd.conf, driven from the host side by Debian's mtp-tools (libmtp): detect, list, fetch and
send with checksums equal on both sides; then umtprd SIGKILLed (20 times at full fault counts):
gadgetd unbinds, restarts it, binds again, and the host lists the folder each time.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from gadgetd import configfs, runstate, templates
from gadgetd.repro.kernel_log import KernelLog
from tests.vm.conftest import RunningDaemon

pytestmark = pytest.mark.mtp
SCALE = float(os.environ.get("GADGETD_FAULT_SCALE", "0.1"))
KILLS = max(2, round(20 * SCALE))
MTP_TIMEOUT = 60  # seconds for one mtp-tools command (libmtp probes the device first)


def shared_dir(prefix: str) -> Path:
    """A directory root owns and others may enter: the function's user runs and reads in it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture
def mtp(request):
    """The shipped template and umtprd.conf, pointed at a folder of this test's; the daemon
    serving it; the host's view checked clean afterwards."""
    base = shared_dir("gadgetd-mtp-")
    storage = base / "storage"
    storage.mkdir()
    user = pwd.getpwnam("gadgetd")
    (storage / "hello.bin").write_bytes(hashlib.sha256(b"gadgetd").digest() * 4096)
    for path in (storage, *storage.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
    conf = templates.directory() / "umtprd.conf"
    (base / "umtprd.conf").write_text(conf.read_text().replace('"/var/lib/umtp"', f'"{storage}"'))
    text = templates.path("mtp").read_text()
    template = base / "mtp.toml"
    template.write_text(text.replace('"/etc/gadgetd/umtprd.conf"', f'"{base}/umtprd.conf"'))
    log = KernelLog()
    d = RunningDaemon(template)
    d.wait_bound()
    yield d, storage
    assert d.stop() == 0, d.stderr
    assert configfs.leftovers(d.spec) == [], "configfs residue or stale mounts"
    assert log.interesting() == [], "new WARNING/BUG in dmesg"
    shutil.rmtree(base)


def mtp_tool(*argv: str, daemon: RunningDaemon | None = None) -> str:
    """An mtp-tools command; its output (libmtp says "No devices" with exit 0 at times). A
    failure shows the tool's output and the tail of DAEMON's log (umtprd's output is in it)."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=MTP_TIMEOUT)
    log = f"\ngadgetd's log:\n{daemon.read_log()[-3000:]}" if daemon else ""
    assert proc.returncode == 0 and "No devices" not in proc.stdout + proc.stderr, \
        f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}{log}"
    return proc.stdout


def files_on_device() -> dict[str, int]:
    """mtp-files: name -> file id."""
    out = mtp_tool("mtp-files")
    ids = re.findall(r"File ID: (\d+)\s+Filename: (.+)", out)
    return {name.strip(): int(file_id) for file_id, name in ids}


def listed_within(timeout: float, name: str = "hello.bin") -> dict[str, int]:
    """The folder as the host lists it once NAME is in it: the gadget comes back and umtprd
    answers before libmtp has a listing (an empty one at first); the last listing on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            files = files_on_device()
            if name in files:
                return files
        except (AssertionError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            return files
        time.sleep(1)


def umtprd_pid(name: str) -> int | None:
    state = runstate.read(name) or {}
    fn = state.get("functions", {}).get("mtp", {})
    return fn.get("pid") if fn.get("ready") else None


def test_mtp_detect_list_fetch_send(mtp, tmp_path):
    d, storage = mtp
    detect = mtp_tool("mtp-detect")
    assert "gadgetd MTP" in detect or "1d6b" in detect.lower(), detect[-2000:]
    files = listed_within(60)
    assert "hello.bin" in files, files
    mtp_tool("mtp-getfile", str(files["hello.bin"]), str(tmp_path / "fetched.bin"), daemon=d)
    assert (tmp_path / "fetched.bin").read_bytes() == (storage / "hello.bin").read_bytes()
    sent = os.urandom(300_000)
    (tmp_path / "sent.bin").write_bytes(sent)
    # mtp-sendfile's second argument is the parent folder on the device ("/": the storage's root)
    out = mtp_tool("mtp-sendfile", str(tmp_path / "sent.bin"), "/", daemon=d)
    assert "Error sending file" not in out, out[-2000:]  # mtp-sendfile exits 0 on errors
    assert hashlib.sha256((storage / "sent.bin").read_bytes()).digest() == \
        hashlib.sha256(sent).digest()
    assert "sent.bin" in listed_within(30, "sent.bin")
    assert re.search(r"mtp: .*uMTP Responder", d.read_log()), "umtprd's output under its name"


def test_umtprd_killed_is_restarted_and_the_host_lists_again(mtp):
    d, _ = mtp
    assert "hello.bin" in listed_within(60)
    for kill in range(KILLS):
        deadline = time.monotonic() + 60
        while (pid := umtprd_pid(d.spec.name)) is None:
            assert time.monotonic() < deadline, f"kill {kill}: umtprd not ready again"
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while umtprd_pid(d.spec.name) in (pid, None):
            assert time.monotonic() < deadline, f"kill {kill}: no new umtprd"
            time.sleep(0.2)
        assert "hello.bin" in listed_within(90), f"after kill {kill}"
    log = d.read_log()
    assert d.proc.poll() is None, log
    # every restart came after an unbind (the daemon's rule for reopening an instance)
    # (umtprd's exit closed ep0: FunctionFS may have unbound the gadget itself by then)
    events = re.findall(r"function mtp: .*recovering|unbound (?:from \S+|already)|"
                        r"function mtp served by pid", log)
    restarts = [i for i, e in enumerate(events) if "recovering" in e]
    assert len(restarts) >= KILLS, log[-3000:]
    for i in restarts:
        assert events[i + 1].startswith("unbound") and "served" in events[i + 2], events
