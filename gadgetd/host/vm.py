"""Boot a kernel under QEMU (virtme-ng, software emulation, the machine's root over 9p) and run
one command in it with a USB stack loaded (guest.USB_STACKS: dummy_hcd, libcomposite and usb_f_fs
by default).

Exit status: CMD's own whenever CMD finished (even if the guest then cannot shut down);
124 when CMD did not finish within the timeout; 125 when the kernel could not be booted or the
guest died before CMD finished. QEMU is always killed at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gadgetd.host.kernels import CACHE, Kernel, KernelError

TIMEOUT = 124
NOT_BOOTED = 125
BOOT_TIMEOUT = 240  # seconds; a TCG boot takes 10-20 s, more when the machine is loaded
SHUTDOWN_GRACE = 20  # seconds QEMU gets to power off after CMD finished


@dataclass
class VmResult:
    status: int
    kernel: Kernel
    boot_seconds: float | None
    command_seconds: float | None
    result_dir: Path
    note: str = ""
    stopped: bool = False  # stopped from outside (`stop`) while the command still ran


def _vng() -> str:
    here = Path(sys.executable).parent / "vng"
    found = str(here) if here.exists() else shutil.which("vng")
    if not found:
        raise KernelError("vng (virtme-ng) not found: install gadgetd[hil] (make setup)")
    return found


def _copy(src, out) -> None:
    for chunk in iter(lambda: src.read1(65536), b""):
        out.write(chunk)
        out.flush()


def _follow(path: Path, out, proc: subprocess.Popen) -> None:
    """tail -f `path` to `out` until `proc` has exited and the file has no more."""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
            elif proc.poll() is not None:
                return
            else:
                time.sleep(0.2)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def new_result_dir() -> Path:
    """A directory the guest can write (shared read-write over 9p) for results that must leave
    the guest as they are produced."""
    runs = CACHE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="vm-", dir=runs))


SYSTEMD_GUEST = Path(__file__).resolve().parent / "systemd_guest"
CHECKOUT = Path(__file__).resolve().parents[2]
GUEST_TMPFS = Path("/tmp")  # the guest mounts its own tmpfs there, hiding the host's


def _hidden_dirs() -> list[Path]:
    """What the guest needs (this checkout, the venv, the working directory) but would not see
    because it lies under the guest's own /tmp. Shared read-write and mounted first: virtme-ng
    mounts every --rodir after every --rwdir, so a read-only checkout would hide a results
    directory inside it."""
    needed = sorted({p for p in (CHECKOUT, Path(sys.prefix).resolve(), Path.cwd().resolve())
                     if p.is_relative_to(GUEST_TMPFS)})
    return [p for p in needed if not any(p != q and p.is_relative_to(q) for q in needed)]


def _systemd_argv(argv: list[str], result_dir: Path) -> list[str]:
    """Boot the machine's systemd as PID 1 (virtme-ng --systemd) and run result_dir/cmd.sh as
    the kernel-command-line.service, after basic.target; see systemd_guest/ for why each piece."""
    # run.sh mounts the --rwdir shares itself, in order (9p tags virtme.initmount0, 1, ...).
    rwdirs = [argv[i + 1] for i, a in enumerate(argv) if a == "--rwdir"]
    append = " ".join([
        f"PATH={SYSTEMD_GUEST / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
        f"systemd.run={SYSTEMD_GUEST / 'run.sh'}",
        "systemd.run_success_action=poweroff", "systemd.run_failure_action=poweroff",
        f"systemd.setenv=GADGETD_RESULT={result_dir}", f"systemd.setenv=GADGETD_CWD={os.getcwd()}",
        f"systemd.setenv=GADGETD_RWDIRS={':'.join(rwdirs)}",
        # for early-hook.sh (init's environment): what its fresh /tmp must not hide
        f"GADGETD_TMP_DIRS={':'.join(map(str, _hidden_dirs()))}", "panic=-1"])
    return [*argv, "--systemd", "--append", append, "--qemu-opts=-no-reboot"]


def run(kernel: Kernel, command: list[str], speed: str = "high", timeout: float = 1800,
        memory: str = "2G", cpus: int = 2, quiet: bool = False, log=sys.stderr,
        result_dir: Path | None = None, results: Path | None = None,
        systemd: bool = False, usb: str = "dummy", guest_options: tuple[str, ...] = (),
        qemu_options: tuple[str, ...] = (), shared: tuple[Path, ...] = (),
        stop: threading.Event | None = None, console=None) -> VmResult:
    """Boot `kernel`, run `command` as root in the checkout's directory, stream its output.

    `results`: a host directory the command may write into (as $GADGETD_RESULTS).
    `systemd`: the machine's systemd runs as init and `command` as a service under it.
    `usb`: the guest's USB stack; `guest_options` more options for it (the lab link's address).
    `shared`: more host directories the guest sees read-write (the lab's).
    `stop`: once set, the guest is killed (the command's status stays unknown).
    `console`: a binary file for the guest's output (default: this process's stdout, stderr)."""
    result_dir = result_dir or new_result_dir()
    options = ["--speed", speed, "--usb", usb, *guest_options, "--result", str(result_dir)]
    argv = [_vng(), "--run", str(kernel.image), "--disable-kvm", "--force-9p",
            "--memory", memory, "--cpus", str(cpus)]
    for directory in _hidden_dirs():
        argv += ["--rwdir", str(directory)]
    argv += ["--rwdir", str(result_dir), "--cwd", os.getcwd()]
    for directory in shared:
        argv += ["--rwdir", str(directory)]
    if qemu_options:
        argv.append(f"--qemu-opts={shlex.join(qemu_options)}")  # a value beginning with -
    if results is not None:
        results = results.resolve()
        results.mkdir(parents=True, exist_ok=True)
        argv += ["--rwdir", str(results)]
        options += ["--results", str(results)]
    guest = [sys.executable, "-m", "gadgetd.host.guest", *options, "--", *command]
    # In a file, not on the kernel's command line (virtme-ng's --exec): that line holds 2048
    # bytes on x86, and a longer one left the guest waiting forever, without a word.
    (result_dir / "cmd.sh").write_text(f"exec {shlex.join(guest)}\n")
    if systemd:
        argv = _systemd_argv(argv, result_dir)
    else:
        argv += ["--exec", f"sh {shlex.quote(str(result_dir / 'cmd.sh'))}"]
    if not quiet:
        versions = ", ".join(f"{p} {v}" for p, v in kernel.packages) or str(kernel.image)
        print(f"gadgetd-hil vm: booting {kernel.release} ({versions}), speed {speed}", file=log)
    start = time.monotonic()
    # vng runs virtme-run from PATH: put the interpreter's bin directory (the venv) first.
    env = {**os.environ, "PATH": f"{Path(argv[0]).parent}:{os.environ.get('PATH', '')}"}
    # QEMU opens /proc/self/fd/1 and /2 itself; through pipes its writes cannot clobber a file
    # both streams share, and the copy threads stream the guest's output as it comes.
    if systemd:
        # The serial console carries systemd's boot; the command's output is in `log`.
        with open(result_dir / "console", "wb") as serial:
            proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                                    env=env, stdout=serial, stderr=subprocess.STDOUT)
        (result_dir / "log").touch()
        copiers = [threading.Thread(target=_follow, args=(result_dir / "log", console or
                                                          sys.stdout.buffer, proc),
                                    daemon=True)]
    else:
        proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        copiers = [threading.Thread(target=_copy, args=(src, dst), daemon=True)
                   for src, dst in ((proc.stdout, console or sys.stdout.buffer),
                                    (proc.stderr, console or sys.stderr.buffer))]
    for t in copiers:
        t.start()
    booted = finished = None
    status, note, stopped = NOT_BOOTED, "", False
    try:
        while True:
            now = time.monotonic()
            if booted is None and (result_dir / "booted").exists():
                booted = now
            if (result_dir / "status").exists():
                text = (result_dir / "status").read_text().strip()
                if text:
                    status, finished = int(text), now
                    break
            if (result_dir / "setup-failed").exists():
                note = "the guest could not set up its USB stack (see its output)"
                break
            if proc.poll() is not None:
                note = ("the guest died before the command finished" if booted else
                        f"the kernel did not boot (virtme-ng exited {proc.returncode})")
                break
            if booted is None and now - start > BOOT_TIMEOUT:
                note = f"the kernel did not boot within {BOOT_TIMEOUT} s"
                break
            if stop is not None and stop.is_set():
                stopped, note = True, "stopped while the command ran"
                break
            if booted is not None and now - booted > timeout:
                status, note = TIMEOUT, f"the command did not finish within {timeout:g} s"
                break
            time.sleep(0.2)
        if finished is not None:
            try:
                proc.wait(SHUTDOWN_GRACE)
            except subprocess.TimeoutExpired:
                note = "the guest could not shut down (a task stuck in the kernel?)"
    finally:
        _kill(proc)
        for t in copiers:
            t.join(5)
    result = VmResult(status, kernel, booted - start if booted else None,
                      finished - booted if finished and booted else None, result_dir, note,
                      stopped)
    if not quiet:
        timing = f"boot {result.boot_seconds:.1f} s" if result.boot_seconds else "no boot"
        if result.command_seconds is not None:
            timing += f", command {result.command_seconds:.1f} s"
        print(f"gadgetd-hil vm: {kernel.release}: exit {status} ({timing})"
              + (f": {note}" if note else ""), file=log)
    return result
