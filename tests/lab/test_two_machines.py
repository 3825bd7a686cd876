"""The two-machine lab (`make test-two-machines`): a board VM (usbip-vudc) and a host VM
(vhci-hcd) on their own kernels, joined by the lab's private link (gadgetd.host.lab).

On one kernel pair the whole HIL suite and the reconnects (tests/lab/test_lab_host.py) run
from the host against `gadgetd run` on the board, before repro in the same boot (a hang is
possible there). On every pair the board runs `gadgetd repro --nonblock --host remote` with
`gadgetd-hil drive` as its host, drive's report merged: the verdicts follow the board's kernel.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gadgetd import template, templates
from gadgetd.host.lab import BOARD_ADDRESS
from gadgetd.repro.report import hang_proven

pytestmark = pytest.mark.lab
HIL = Path(sys.executable).parent / "gadgetd-hil"
PRESENT_KERNEL, ABSENT_KERNEL = "debian:6.1.0-57-amd64", "debian:sid"
# The scenarios about the topology (the host's traffic, STALLs and disconnects cross USB/IP);
# delayed_open and read_after_unbind play their own function and need no host.
LAB_SCENARIOS = ("contended_open", "deactivated_set_alt", "open_race", "deactivated_reopen")
SPEC = template.load(templates.path("loopback"))
DEVICE = f"{SPEC.id_vendor:04x}:{SPEC.id_product:04x}"

# Both sides see the lab's directory as $GADGETD_LAB and their own part of it as
# $GADGETD_RESULTS. The board's repro waits for host/hil-done, so the HIL suite runs first.
MODULES = 'ls /sys/module > "$R/modules.txt"; ls /sys/class/udc > "$R/udcs.txt"\n'
BOARD = """\
export PATH={bin}:$PATH L=$GADGETD_LAB R=$GADGETD_RESULTS
""" + MODULES + """\
{serve}
until [ -e "$L/host/hil-done" ]; do sleep 1; done
gadgetd repro --nonblock --host remote --host-report "$L/host/drive.jsonl" {scenarios} \\
  --record "$R/repro.jsonl" > "$R/repro.txt" 2>&1
echo $? > "$R/repro-status"
"""
SERVE = 'gadgetd run loopback > "$R/gadgetd.log" 2>&1 &'
HOST = """\
export PATH={bin}:$PATH L=$GADGETD_LAB R=$GADGETD_RESULTS
""" + MODULES + """\
status=0
{hil}
touch "$R/hil-done"
gadgetd-hil drive --device {device} --report "$R/drive.jsonl" --until "$L/board/exit-status" \\
  > "$R/drive.txt" 2>&1
exit $status
"""
PYTEST = ("python -m pytest -p no:cacheprovider -q -rs --device {device} "
          "--board ssh://root@{board} --board-ssh-config \"$L/ssh/ssh_config\" {what}")
HIL_RUN = ('python -c "from gadgetd.host.device import DeviceSelector, wait_for_device; '
           'wait_for_device(DeviceSelector.parse(\'{device}\'), 300)"\n'
           '{pytest} > "$R/hil.txt" 2>&1 || status=1\n'
           '{reconnects} > "$R/reconnects.txt" 2>&1 || status=2')


def lab(out: Path, board_kernel: str, host_kernel: str, with_hil: bool) -> subprocess.CompletedProcess:
    pytest_cmd = PYTEST.format(device=DEVICE, board=BOARD_ADDRESS, what="--pyargs gadgetd.hil")
    reconnects = PYTEST.format(device=DEVICE, board=BOARD_ADDRESS,
                               what=f"-m lab_host {Path(__file__).with_name('test_lab_host.py')}")
    hil = HIL_RUN.format(device=DEVICE, pytest=pytest_cmd, reconnects=reconnects) if with_hil else ""
    board = BOARD.format(bin=HIL.parent, serve=SERVE if with_hil else "",
                         scenarios=" ".join(f"--scenario {n}" for n in LAB_SCENARIOS))
    host = HOST.format(bin=HIL.parent, hil=hil, device=DEVICE)
    out.mkdir(parents=True, exist_ok=True)
    # Two VMs share two cores: the boots take 70 to 110 s each, the HIL suite 5 to 6 minutes
    # and the reconnects 7 on a slow machine, then repro 4.
    timeout = 2100 if with_hil else 900
    with open(out / "lab.log", "w") as log:  # both VMs' output, as it comes
        return subprocess.run([str(HIL), "lab", "--board-kernel", board_kernel, "--host-kernel",
                               host_kernel, "--board", board, "--host", host, "--out", str(out),
                               "--timeout", str(timeout)], stdout=log,
                              stderr=subprocess.STDOUT, timeout=timeout + 600)


def repro_result(record: Path, status: Path) -> dict:
    """A repro's exit status, report and scenarios, from its record and status files."""
    result = {"status": int(status.read_text()), "scenarios": {}}
    for line in record.read_text().splitlines():
        obj = json.loads(line)
        if "report" in obj:
            result["report"] = obj["report"]
        else:
            result["scenarios"][obj.pop("scenario")] = obj
    return result


def summary(out: Path, proc: subprocess.CompletedProcess) -> str:
    files = [out / side / name for side, name in (("board", "repro.txt"), ("host", "hil.txt"),
                                                   ("host", "reconnects.txt"),
                                                   ("host", "drive.txt"))]
    tails = "\n".join(f"--- {f}\n{f.read_text()[-2500:]}" for f in files if f.exists())
    lab_log = (out / "lab.log").read_text()[-3000:]
    return f"{shlex.join(proc.args[:6])}: exit {proc.returncode}\n{lab_log}\n{tails}"


CASES = [  # board kernel, host kernel, HIL suite + reconnects first, expected verdict
    (PRESENT_KERNEL, PRESENT_KERNEL, True, "present"),
    (ABSENT_KERNEL, ABSENT_KERNEL, False, "absent"),
    (PRESENT_KERNEL, ABSENT_KERNEL, False, "present"),
    (ABSENT_KERNEL, PRESENT_KERNEL, False, "absent"),
]


@pytest.mark.parametrize("board_kernel,host_kernel,with_hil,expected", CASES,
                         ids=[f"board-{b[7:]}-host-{h[7:]}" for b, h, _, _ in CASES])
def test_lab(board_kernel, host_kernel, with_hil, expected):
    out = Path("out/lab-test") / f"{board_kernel[7:]}-{host_kernel[7:]}"
    proc = lab(out, board_kernel, host_kernel, with_hil)
    why = summary(out, proc)
    assert proc.returncode == 0, why  # the host's commands all passed; the board's script ran
    board_modules = set((out / "board" / "modules.txt").read_text().split())
    host_modules = set((out / "host" / "modules.txt").read_text().split())
    # The board has a UDC and no host controller of ours; the host the reverse.
    assert "usbip_vudc" in board_modules and not {"dummy_hcd", "vhci_hcd"} & board_modules
    assert (out / "board" / "udcs.txt").read_text().split() == ["usbip-vudc.0"]
    assert "vhci_hcd" in host_modules and not {"dummy_hcd", "usbip_vudc"} & host_modules
    assert (out / "host" / "udcs.txt").read_text().split() == []
    repro = repro_result(out / "board" / "repro.jsonl", out / "board" / "repro-status")
    scenarios = repro["scenarios"]
    assert repro["report"]["verdict"] == expected, why
    assert repro["status"] == (1 if expected == "present" else 0), why
    assert scenarios["contended_open"]["verdict"] == expected, why
    reopen = scenarios["deactivated_reopen"]
    if expected == "present":
        assert reopen["verdict"] == "present" and hang_proven(reopen["hang"]), why
    else:
        assert reopen["verdict"] == "absent", why
    assert "NOT in this report" not in repro["report"]["host"], why  # drive's counts merged
    assert all(s.get("host") for s in scenarios.values()), why
    if with_hil:
        hil = (out / "host" / "hil.txt").read_text()
        assert " passed" in hil and "skipped" not in hil and "failed" not in hil, why
        reconnects = json.loads((out / "host" / "reconnects.json").read_text())
        assert all(len(v) == 3 for v in reconnects.values()) and len(reconnects) == 5, reconnects
