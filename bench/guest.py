"""The bench inside the VM (root, dummy_hcd): every device side in turn, measured by one host
program (host_bulk: libusb, fixed request size and queue depth), alternating sides each round.

Device sides: gadgetd's sourcesink (`gadgetd run sourcesink`), the
in-kernel SourceSink function (configfs), and the kernel's C FunctionFS examples ffs-test and
aio_multibuff (built from linux-source by bench/build.sh). Results: one JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bringup  # noqa: E402
from gadgetd import runstate, syscalls, templates  # noqa: E402
from gadgetd.configfs import GADGETS as CFG  # noqa: E402
from gadgetd.repro.report import percentiles  # noqa: E402
from gadgetd.strategy import GadgetStrategy  # noqa: E402

SIZE, DEPTH, BYTES = 65536, 8, 64 << 20  # host_bulk's fixed request size, queue depth, volume
SETTLE = 1.0  # seconds every side gets between configuration and traffic: steady state, not start-up
PSS_PERIOD = 0.05  # seconds between smaps_rollup samples (20 Hz)
GADGET_ZERO, FFS_EXAMPLE = "0525:a4a0", "0525:a4a4"
CTRL = ("-c", "2000", "-l", "64")  # host_bulk ctrl: 2000 round trips of Gadget Zero's echo, 64 bytes


def udc() -> str:
    return sorted(os.listdir("/sys/class/udc"))[0]


def write(path: Path, value) -> None:
    path.write_text(f"{value}\n")


def wait_configured(device: str, timeout: float = 60.0) -> float:
    """The one watcher for every side: the moment the host has configured the device."""
    vid, pid = device.split(":")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for d in Path("/sys/bus/usb/devices").iterdir():
            try:
                if ((d / "idVendor").read_text().strip(), (d / "idProduct").read_text().strip()) \
                        == (vid, pid) and (d / "bConfigurationValue").read_text().strip():
                    return time.monotonic()
            except OSError:
                continue
        time.sleep(0.002)
    raise TimeoutError(f"{device} was not configured within {timeout:g} s")


def proc_kib(pid: int, file: str, field: str) -> int:
    """A "Field: N kB" line of /proc/PID/FILE (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def vmhwm_kib(pid: int) -> int:
    return proc_kib(pid, "status", "VmHWM")


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (the interpreter, libraries) split among sharers."""
    return proc_kib(pid, "smaps_rollup", "Pss")


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (utime and stime of /proc/PID/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = syscalls.proc_stat(pid)  # from the state on: utime and stime are 12 and 13
        total += int(fields[11]) + int(fields[12])
    return total / ticks


class PssPeak:
    """The peak of the summed PSS of some processes, sampled at 20 Hz while traffic runs."""

    def __init__(self, pids: list[int]):
        self.pids, self.peak_kib = pids, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, sum(pss_kib(pid) for pid in self.pids))
            self._stop.wait(PSS_PERIOD)

    def __enter__(self) -> PssPeak:
        if self.pids:  # nothing to sample for the other sides
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def python_start_s() -> float:
    """The venv's interpreter doing nothing: exec to exit, the floor under any Python daemon."""
    start = time.monotonic()
    subprocess.run([str(ROOT / ".venv/bin/python"), "-c", "pass"], check=True)
    return time.monotonic() - start


class Gadgetd:
    name, device, directions = "gadgetd", GADGET_ZERO, ("in", "out")

    def __init__(self):
        # The console script, as a board runs it; bring-up is timed by the one watcher below.
        self.strategy = GadgetStrategy(templates.path("sourcesink"),
                                       command=(str(ROOT / ".venv/bin/gadgetd"),),
                                       log_file=open(os.devnull, "w"))

    def up(self) -> float:
        start = time.monotonic()
        self.proc = self.strategy.start()
        return wait_configured(self.device) - start

    def rss_kib(self) -> dict:
        state = runstate.read("gadgetd-sourcesink") or {}
        worker = state.get("functions", {}).get("ss0", {}).get("pid")
        return {"supervisor": vmhwm_kib(self.proc.pid),
                "worker": vmhwm_kib(worker) if worker else 0}

    def worker_pid(self) -> int:
        return runstate.read("gadgetd-sourcesink")["functions"]["ss0"]["pid"]

    def pids(self) -> list[int]:
        return [self.proc.pid, self.worker_pid()]

    def down(self) -> None:
        self.strategy.stop()


class KernelSourceSink:
    """configfs SourceSink (usb_f_ss_lb): the in-kernel limit on this machine."""

    name, device, directions = "kernel", GADGET_ZERO, ("in", "out")
    g = CFG / "kss"

    def pids(self) -> list[int]:
        return []  # no process: the function runs in the kernel

    def up(self) -> float:
        subprocess.run(["modprobe", "usb_f_ss_lb"], check=True)
        g = self.g
        for d in (g, g / "strings/0x409", g / "functions/SourceSink.ss0", g / "configs/c.1"):
            d.mkdir()
        write(g / "idVendor", "0x0525")
        write(g / "idProduct", "0xa4a0")
        write(g / "strings/0x409/product", "in-kernel SourceSink")
        f = g / "functions/SourceSink.ss0"
        write(f / "pattern", 0)
        write(f / "bulk_buflen", SIZE)
        write(f / "bulk_qlen", DEPTH)
        (g / "configs/c.1/SourceSink.ss0").symlink_to(f)
        start = time.monotonic()
        write(g / "UDC", udc())
        return wait_configured(self.device) - start

    def down(self) -> None:
        g = self.g
        write(g / "UDC", "")
        (g / "configs/c.1/SourceSink.ss0").unlink()
        for d in (g / "configs/c.1", g / "functions/SourceSink.ss0", g / "strings/0x409", g):
            d.rmdir()


class FfsExample:
    """A C FunctionFS daemon from tools/usb: configfs gadget + mount made first; bring-up is from
    its exec to the host configuring it (the UDC bound as soon as its ep files exist)."""

    device = FFS_EXAMPLE
    g, mount = CFG / "ffsbench", Path("/run/ffs-bench")

    def __init__(self, name: str, argv: list[str], directions: tuple[str, ...]):
        self.name, self.argv, self.directions = name, argv, directions

    def up(self) -> float:
        g = self.g
        for d in (g, g / "strings/0x409", g / "functions/ffs.bench", g / "configs/c.1"):
            d.mkdir()
        write(g / "idVendor", "0x0525")
        write(g / "idProduct", "0xa4a4")
        write(g / "strings/0x409/product", self.name)
        (g / "configs/c.1/ffs.bench").symlink_to(g / "functions/ffs.bench")
        self.mount.mkdir(exist_ok=True)
        # mount(2) itself: mount(8) would turn the source "bench" into ./bench, our directory
        syscalls.mount("bench", self.mount, "functionfs")
        start = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=self.mount, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        while not (self.mount / "ep1").exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}")
            time.sleep(0.001)
        write(g / "UDC", udc())
        return wait_configured(self.device) - start

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def down(self) -> None:
        g = self.g
        write(g / "UDC", "")
        self.proc.kill()
        self.proc.wait()
        syscalls.umount(self.mount)
        (g / "configs/c.1/ffs.bench").unlink()
        for d in (g / "configs/c.1", g / "functions/ffs.bench", g / "strings/0x409", g):
            d.rmdir()


def host_bulk(build: Path, device: str, mode: str, *extra: str) -> dict:
    argv = [str(build / "host_bulk"), "-d", device, "-t", "10000", *extra, mode]
    if mode != "ctrl":
        argv[-1:-1] = ["-s", str(SIZE), "-q", str(DEPTH), "-n", str(BYTES)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"ok": False, "error": proc.stderr.strip()[-300:]}


def ep0_open_cost(seconds: float) -> dict:
    """gadgetd's O_NDELAY open with its retry policy vs a blocking open, under the same
    contention (the repro rig: gadgetd serving, the host storming ep0)."""
    from gadgetd.repro.rig import Rig

    rig = Rig()
    rig.choose_host("local")  # this kernel's host controller (dummy_hcd, or vhci over loopback)
    rig.serve(no_disconnect=False, daemon_nonblock=False)
    storm = rig.host.storm()
    result = {}
    try:
        for mode in ("nonblock", "blocking", "nonblock", "blocking"):
            proc = rig.run_opener("loop", mode, seconds / 4, rig.ep0)
            out, _ = rig.wait_opener(proc, seconds + 30)
            result.setdefault(mode, []).extend(out["latencies"])
    finally:
        storm.stop()
        rig.cleanup()
    return {mode: percentiles(samples) for mode, samples in result.items()}


def traced_bring_up(out: Path) -> dict:
    """One more bring-up of gadgetd under strace with import timing on: its phases (the
    clock is the wall clock here, strace's), and the slowest imports."""
    trace, log = out / "bringup.strace", out / "bringup.log"
    strategy = GadgetStrategy(templates.path("sourcesink"), log_file=open(log, "w+"),
                              command=(*bringup.STRACE, "-o", str(trace), "env",
                                       "PYTHONPROFILEIMPORTTIME=1",
                                       str(ROOT / ".venv/bin/gadgetd")))
    strategy.start()
    try:
        wait_configured(GADGET_ZERO)
        configured = time.time()
    finally:  # strace's child is gadgetd (env execs it): its SIGTERM ends strace too
        pid = strategy.daemon.pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            os.kill(int(child), signal.SIGTERM)
        strategy.daemon.wait(60)
    found = {**bringup.events(trace.read_text()), "configured": configured}
    return {"phases": bringup.phases(found), "imports": bringup.imports(log.read_text())}


def profile(build: Path, side: Gadgetd, out: Path) -> None:
    """py-spy on the worker while the host writes, then while it sends control requests: where
    the time of the data path and of a control round trip goes (collapsed stacks)."""
    pyspy = ROOT / ".venv/bin/py-spy"
    for name, mode, extra, seconds in (("out", "out", (), 8), ("ctrl", "ctrl", CTRL, 10)):
        record = subprocess.Popen([str(pyspy), "record", "--pid", str(side.worker_pid()),
                                   "--duration", str(seconds), "--format", "raw",
                                   "--output", str(out / f"profile-{name}.txt"), "--nonblocking"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        host_bulk(build, side.device, mode, *extra)
        record.wait(120)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    build = args.build
    # the C peer at the FunctionFS limit serves gadgetd's own sourcesink descriptors
    blobs = args.out / "blobs"
    subprocess.run([sys.executable, "-m", "gadgetd", "blobs", str(templates.path("sourcesink")),
                    "ss0", "--out", str(blobs)], check=True, stdout=subprocess.DEVNULL)
    peer = [str(build / "ffs_aio_peer"), ".", str(blobs / "ss0.descriptors"),
            str(blobs / "ss0.strings")]
    sides = [Gadgetd(), KernelSourceSink(),
             FfsExample("ffs_aio_peer", [*peer, str(SIZE), str(DEPTH)], ("in", "out")),
             # the same program shaped like aio_multibuff (256 requests of 8 KiB in flight)
             FfsExample("ffs_aio_peer_deep", [*peer, "8192", "256"], ("in",)),
             FfsExample("ffs-test", [str(build / "ffs-test")], ("in", "out")),
             FfsExample("aio_multibuff", [str(build / "aio_multibuff"), "."], ("in",))]
    rows = []
    for run in range(args.runs):
        order = sides if run % 2 == 0 else sides[::-1]
        for side in order:
            row = {"run": run, "side": side.name, "bring_up_s": round(side.up(), 4)}
            try:
                time.sleep(SETTLE)
                pids = side.pids()
                with PssPeak(pids if side.name == "gadgetd" else []) as pss:
                    for direction in side.directions:
                        before = cpu_s(pids)
                        row[direction] = host_bulk(build, side.device, direction)
                        # the device side's CPU time for the transfer: ours beside the C peer's
                        row[direction]["device_cpu_s"] = round(cpu_s(pids) - before, 3) \
                            if pids else None
                if side.name == "gadgetd":
                    row["pss_kib"] = pss.peak_kib
                if side.name in ("gadgetd", "kernel", "ffs_aio_peer"):  # the C peer: FunctionFS's floor
                    row["ctrl"] = host_bulk(build, side.device, "ctrl", *CTRL)
                if side.name == "gadgetd":
                    row["rss_kib"] = side.rss_kib()
                    if run == 0:
                        profile(build, side, args.out)
            finally:
                side.down()
            rows.append(row)
            print(json.dumps(row), flush=True)
        rows.append({"run": run, "side": "python", "bring_up_s": round(python_start_s(), 4)})
    results = {"kernel": os.uname().release, "usb": os.environ["GADGETD_USB"], "size": SIZE,
               "depth": DEPTH, "bytes": BYTES, "rows": rows, "ep0_open_ms": ep0_open_cost(20),
               "bring_up": traced_bring_up(args.out)}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
