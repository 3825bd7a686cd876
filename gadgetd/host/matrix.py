"""`gadgetd-hil matrix` and `bisect`: run `gadgetd repro` on many kernels, one VM each.

Each guest appends its scenario results to a file in the run's shared directory as they finish,
so a guest that hangs or dies still leaves what it measured; QEMU is killed on timeout and the
matrix goes on with the next kernel.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from debian.debian_support import Version

from gadgetd import template, templates
from gadgetd.errors import GadgetdError
from gadgetd.host import kernels, vm
from gadgetd.model import NONBLOCK, NONBLOCK_ONCE
from gadgetd.repro import report as rep

REPRO_TIMEOUT = 900  # seconds a guest may spend in repro
# Host memory one VM (vm.run's 2 GiB guest) takes: QEMU's peak RSS in the quick matrix's longest
# boot was 1.42 to 1.46 GiB (2026-12-05). Its 2 vCPUs want two cores.
VM_HOST_MIB = 1536
RANGE_START = "6.1.0-50-amd64"  # the default matrix: bookworm ABIs from here up
SCENARIO_SHORT = {"contended_open": "contended", "deactivated_set_alt": "set_alt",
                  "open_race": "race", "delayed_open": "delayed", "deactivated_reopen": "reopen",
                  "read_after_unbind": "rd_unbind"}


@dataclass
class Row:
    spec: str
    release: str = ""
    package_version: str = ""
    verdict: str = rep.INCONCLUSIVE
    exit_status: int | None = None
    scenarios: dict = field(default_factory=dict)
    report: dict | None = None
    note: str = ""
    seconds: float = 0.0
    usb: str = "dummy"  # the guest's USB stack (guest.USB_STACKS)

    @property
    def eagain_rate(self) -> float | None:
        counts = self.scenarios.get("contended_open", {}).get("counts", {})
        attempts = counts.get(f"{NONBLOCK_ONCE}_attempts", 0)
        return counts.get(f"{NONBLOCK_ONCE}_EAGAIN", 0) / attempts if attempts else None

    def latency(self, phase: str = NONBLOCK) -> dict:
        return self.scenarios.get("contended_open", {}).get("latency_ms", {}).get(phase, {})


def bookworm_abis() -> list[tuple[str, str]]:
    """[(release, version)] of bookworm's 6.1 ABIs, oldest first."""
    return [(r, v) for s, r, v in kernels.available()
            if s == "bookworm" and r.startswith("6.1.0-")]


def default_specs() -> list[str]:
    start = Version(RANGE_START)  # ABI names order as Debian versions do (6.1.0-9 < 6.1.0-50)
    abis = [r for r, _ in bookworm_abis() if Version(r) >= start]
    return [f"debian:{r}" for r in abis] + ["debian:trixie", "debian:sid"]


def quick_specs() -> list[str]:
    return ["debian:bookworm", f"debian:{RANGE_START}", "debian:sid"]


def repro_command(record: Path, nonblock: bool, usb: str,
                  scenarios: list[str] | tuple[str, ...] = rep.SCENARIOS) -> list[str]:
    """`gadgetd repro` for the guest. With USB/IP in one kernel, exactly a board's path: repro
    told its host is remote, `gadgetd-hil drive` as that host (reporting its counts to repro),
    stopped once repro has finished."""
    command = [sys.executable, "-m", "gadgetd", "repro", "--record", str(record)]
    for name in scenarios:
        command += ["--scenario", name]
    if nonblock:
        command.append("--nonblock")
    if usb == "dummy":
        return command
    spec = template.load(templates.path("loopback"))
    report, done = record.with_name("drive.jsonl"), record.with_name("repro-done")
    drive = [str(Path(sys.executable).parent / "gadgetd-hil"), "drive", "--device",
             f"{spec.id_vendor:04x}:{spec.id_product:04x}", "--report", str(report),
             "--until", str(done)]
    command += ["--host", "remote", "--host-report", str(report)]
    return ["sh", "-c", f"{shlex.join(drive)} > {shlex.quote(str(report))}.log 2>&1 & "
            f"{shlex.join(command)}; status=$?; touch {shlex.quote(str(done))}; wait; "
            "exit $status"]


def run_one(spec: str, nonblock: bool = True, log=sys.stderr, usb: str = "dummy",
            scenarios: list[str] | tuple[str, ...] = rep.SCENARIOS, console=None) -> Row:
    """repro on one kernel, a boot for each group of rep.boots(scenarios); the reports of the
    boots merged into one (rep.merge). `console`: a binary file for the guests' output."""
    row = Row(spec, usb=usb)
    start = time.monotonic()
    try:
        kernel = kernels.resolve(spec)
    except GadgetdError as exc:
        row.note = str(exc)
        return row
    row.release, row.package_version = kernel.release, kernel.package_version
    reports, notes, consistent = [], [], True
    for group in rep.boots(scenarios):
        result_dir = vm.new_result_dir()
        record = result_dir / "repro.jsonl"
        result = vm.run(kernel, repro_command(record, nonblock, usb, group),
                        timeout=REPRO_TIMEOUT, result_dir=result_dir, log=log, usb=usb,
                        console=console)
        report = None
        if record.exists():
            for line in record.read_text().splitlines():
                obj = json.loads(line)
                if "report" in obj:
                    report = obj["report"]
                else:
                    row.scenarios[obj.pop("scenario")] = obj
        if report is not None:
            reports.append(report)
            consistent &= rep.EXIT_STATUS[report["verdict"]] == result.status
        if result.note or report is None:
            notes.append(f"{'+'.join(map(short_name, group))}: "
                         + (result.note or f"exit {result.status}, no report"))
        shutil.rmtree(result_dir, ignore_errors=True)
    row.note = "; ".join(notes)
    if reports:
        row.report = rep.merge(reports)
        row.verdict = row.report["verdict"]
        row.exit_status = rep.EXIT_STATUS[row.verdict] if consistent else -1
    row.seconds = round(time.monotonic() - start, 1)
    return row


def ordered(specs) -> list[str]:
    """The order every matrix runs and merges in: numbers compared as numbers (6.1.0-9 before
    6.1.0-50), so shards of a list and the whole list agree."""
    def key(spec: str):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", spec)]
    return sorted(dict.fromkeys(specs), key=key)


def shard(specs, k: int, n: int) -> list[str]:
    """Slice K of N (1-based): the specs whose index in ordered(specs) is K-1 modulo N."""
    return [spec for i, spec in enumerate(ordered(specs)) if i % n == k - 1]


def _available_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) // 1024 for line in meminfo
                    if line.startswith("MemAvailable:"))


def check_room(jobs: int, log=sys.stderr) -> None:
    """Refuse more VMs at once than the available memory holds (they would be OOM-killed
    mid-matrix); say so when their vCPUs outnumber the cores (each VM then runs slower)."""
    if jobs == 1:
        return
    available = _available_mib()
    if jobs * VM_HOST_MIB > available:
        raise GadgetdError(f"--jobs {jobs}: {jobs} VMs need about {jobs * VM_HOST_MIB / 1024:.1f}"
                           f" GiB of memory ({VM_HOST_MIB / 1024:.1f} each), "
                           f"{available / 1024:.1f} GiB is available")
    cores = os.cpu_count() or 1
    if 2 * jobs > cores:
        print(f"gadgetd-hil matrix: --jobs {jobs} on {cores} cores: {2 * jobs} vCPUs share them, "
              "so each VM runs slower", file=log)


def run_many(specs: list[str], jobs: int, logs: Path, log=sys.stderr, **options) -> list[Row]:
    """run_one for each spec, `jobs` VMs at a time; with more than one, each kernel's guest
    output goes to LOGS/SPEC.log instead of this terminal. Rows in the order of `specs`."""
    from concurrent.futures import ThreadPoolExecutor

    def one(numbered: tuple[int, str]) -> Row:
        i, spec = numbered
        print(f"matrix [{i}/{len(specs)}] {spec} ...", file=log)
        if jobs == 1:
            row = run_one(spec, log=log, **options)
        else:
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', spec)}.log", "wb") as console:
                row = run_one(spec, log=log, console=console, **options)
        print(f"matrix [{i}/{len(specs)}] {row.release or spec}: {row.verdict} "
              f"({row.seconds:.0f} s){' ' + row.note if row.note else ''}", file=log)
        return row

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, enumerate(specs, 1)))


def load(path: Path) -> list[Row]:
    return [Row(**row) for row in json.loads(path.read_text())]


def merge(dirs: list[Path]) -> list[Row]:
    """The rows of several runs' matrix.json (shards of one matrix), as one run orders them."""
    rows: dict[str, Row] = {}
    for directory in dirs:
        path = directory / "matrix.json"
        if not path.exists():
            raise GadgetdError(f"{directory}: no matrix.json (not a matrix's --out directory)")
        for row in load(path):
            if row.spec in rows:
                raise GadgetdError(f"{row.spec}: in {path} and in an earlier directory")
            rows[row.spec] = row
    return [rows[spec] for spec in ordered(rows)]


def junit(rows: list[Row], path: Path) -> Path:
    """JUnit XML: a test case per kernel and scenario run; present is a failure, inconclusive
    an error, absent a pass; nothing is skipped (scenarios not run are not listed)."""
    import xml.etree.ElementTree as ET

    suite = ET.Element("testsuite", name="gadgetd-hil matrix")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for row in rows:
        results = row.scenarios or {"repro": {"verdict": row.verdict, "finding": row.note}}
        for name, result in results.items():
            case = ET.SubElement(suite, "testcase", classname=row.release or row.spec,
                                 name=name, time=f"{row.seconds:.1f}")
            counts["tests"] += 1
            verdict, finding = result.get("verdict"), result.get("finding") or row.note or ""
            if verdict == rep.PRESENT:
                ET.SubElement(case, "failure", message=f"{name} present: {finding}"[:1000])
                counts["failures"] += 1
            elif verdict != rep.ABSENT:
                ET.SubElement(case, "error", message=f"{name} {verdict}: {finding}"[:1000])
                counts["errors"] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path


def short_name(scenario: str) -> str:
    return SCENARIO_SHORT.get(scenario, scenario)


def render(rows: list[Row]) -> str:
    head = (f"{'kernel':<24} {'package':<20} " + " ".join(f"{s:<9}" for s in SCENARIO_SHORT.values())
            + f" {'EAGAIN%':>7} {'retry p99 ms':>12}  verdict")
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " ".join(f"{r.scenarios.get(n, {}).get('verdict', '-'):<9}" for n in SCENARIO_SHORT)
        rate = f"{100 * r.eagain_rate:.2f}" if r.eagain_rate is not None else "-"
        p99 = r.latency().get("p99", "-")
        note = f"  ({r.note})" if r.note else ""
        lines.append(f"{r.release or r.spec:<24} {r.package_version:<20} {cells} {rate:>7} "
                     f"{p99!s:>12}  {r.verdict}{note}")
    return "\n".join(lines)


VERDICT_COLORS = {rep.PRESENT: "tab:red", rep.ABSENT: "tab:green", rep.INCONCLUSIVE: "tab:gray"}


def chart(rows: list[Row], path: Path) -> None:
    """Every scenario's verdict per kernel (the known-bug table), then contended_open's EAGAIN
    rate and open latencies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.release or r.spec for r in rows]
    x = range(len(rows))
    fig, (ax0, ax1, ax2) = plt.subplots(3, 1, figsize=(max(8, len(rows) * 1.1), 11), sharex=True,
                                        gridspec_kw={"height_ratios": [1.3, 1, 1]})
    scenarios = list(SCENARIO_SHORT)
    for i, r in enumerate(rows):
        for j, name in enumerate(scenarios):
            verdict = r.scenarios.get(name, {}).get("verdict", "not run")
            ax0.add_patch(plt.Rectangle((i - 0.45, j - 0.4), 0.9, 0.8,
                                        color=VERDICT_COLORS.get(verdict, "white"), ec="black"))
            ax0.text(i, j, verdict, ha="center", va="center", fontsize=7)
    ax0.set_ylim(-0.6, len(scenarios) - 0.4)
    ax0.set_yticks(range(len(scenarios)), [short_name(n) for n in scenarios])
    ax0.invert_yaxis()
    ax0.set_title("Known FunctionFS bugs per kernel (red: present, green: absent, gray: "
                  "inconclusive)")
    rates = [100 * (r.eagain_rate or 0) for r in rows]
    ax1.bar(names, rates, color=[VERDICT_COLORS[r.verdict] for r in rows])
    ax1.set_ylabel("O_NDELAY opens failing\nwith EAGAIN (%)")
    for offset, phase, key, label in ((-0.27, NONBLOCK_ONCE, "p50", "O_NDELAY open p50"),
                                      (0, "nonblock-once", "p99", "O_NDELAY open p99"),
                                      (0.27, "nonblock", "p99", "with retry policy p99")):
        ax2.bar([i + offset for i in x], [r.latency(phase).get(key, 0) for r in rows],
                width=0.27, label=label)
    ax2.set_ylabel("contended open()\nlatency (ms)")
    ax2.legend()
    ax2.set_xticks(list(x), names, rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save(rows: list[Row], out_dir: Path, name: str = "matrix") -> tuple[Path, Path]:
    """NAME.json, NAME.png and NAME.xml (JUnit) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    json_path.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    chart(rows, png_path)
    junit(rows, out_dir / f"{name}.xml")
    return json_path, png_path


# --- bisect ----------------------------------------------------------------------------------

def changelog_lines(kernel: kernels.Kernel, newer_than: str) -> list[str]:
    """Changelog lines mentioning functionfs / f_fs from the entries after version `newer_than`."""
    path = kernel.changelog()
    if path is None:
        return []
    found, keep = [], False
    floor = Version(newer_than)
    for line in gzip.open(path, "rt", errors="replace"):
        header = re.match(r"^linux(?:-signed-amd64)? \(([^)]+)\)", line)
        if header:
            keep = Version(header.group(1)) > floor
        elif keep and re.search(r"functionfs|f_fs|\bffs\b", line, re.I):
            found.append(line.rstrip())
    return found


def bisect(good: str, bad: str, nonblock: bool = True, log=sys.stderr,
           scenarios: list[str] | tuple[str, ...] = rep.SCENARIOS) -> int:
    abis = bookworm_abis()
    names = [r for r, _ in abis]
    releases = []
    for spec in (good, bad):
        release = kernels.resolve(spec).release
        if release not in names:
            raise kernels.KernelError(f"{spec} ({release}) is not a bookworm 6.1 ABI")
        releases.append(release)
    lo, hi = names.index(releases[0]), names.index(releases[1])
    if lo >= hi:
        raise kernels.KernelError("--good must be an older ABI than --bad")
    skipped: set[int] = set()
    print(f"bisect: {hi - lo - 1} ABIs between {names[lo]} (good) and {names[hi]} (bad)", file=log)
    while True:
        candidates = [i for i in range(lo + 1, hi) if i not in skipped]
        if not candidates:
            break
        mid = min(candidates, key=lambda i: abs(i - (lo + hi) / 2))
        row = run_one(f"debian:{names[mid]}", nonblock, log, scenarios=scenarios)
        print(f"bisect: {names[mid]} ({abis[mid][1]}): {row.verdict}", file=log)
        if row.verdict == rep.PRESENT:
            hi = mid
        elif row.verdict == rep.ABSENT:
            lo = mid
        else:
            skipped.add(mid)
    if any(lo < i < hi for i in skipped):
        print(f"bisect: first bad is one of {names[lo + 1:hi + 1]} (some could not be tested)")
        return 125
    first_bad = kernels.resolve(f"debian:{names[hi]}")
    print(f"first bad: debian:{names[hi]} ({abis[hi][1]})")
    for line in changelog_lines(first_bad, abis[lo][1]):
        print(line)
    return 0
