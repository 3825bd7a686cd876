"""The HIL suite through a labgrid place (`make test-lab`, with gadgetd[labgrid] installed): a real
coordinator, exporter and client, all in the host VM of the two-machine lab; the board VM is the
place's board, reached over the private link by labgrid's SSHDriver; the gadget's USB device,
attached over USB/IP, is the place's USB resource. GadgetdStrategy (gadgetd.host.labgrid_place)
starts gadgetd on the board and stops it after; nothing of the gadget is there before or after.
Then `gadgetd-hil place-repro` runs repro on the place's board with the host's traffic from the
host VM, its counts merged through labgrid's sshfs mount of the board's working directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from gadgetd import template, templates
from gadgetd.host.lab import BOARD_ADDRESS
from gadgetd.repro.report import hang_proven
from tests.lab.test_two_machines import repro_result

pytestmark = pytest.mark.lab
HIL = Path(sys.executable).parent / "gadgetd-hil"
KERNEL = "debian:6.1.0-57-amd64"
SPEC = template.load(templates.path("loopback"))
COORDINATOR = "127.0.0.1:20408"

# Match keys are udev property or sysfs attribute names (labgrid's USBResource.try_match);
# the exporter reports vendor_id/model_id from ID_VENDOR_ID/ID_MODEL_ID, which udevd's usb_id
# sets on the usb_device (virtme-ng-init starts udevd in the VM).
EXPORTER = f"""\
gadget-lab:
  board-ssh:
    cls: NetworkService
    address: {BOARD_ADDRESS}
    port: 22
    username: root
  gadget-usb:
    cls: USBFlashableDevice
    match:
      ID_VENDOR_ID: '{SPEC.id_vendor:04x}'
      ID_MODEL_ID: '{SPEC.id_product:04x}'
      DEVTYPE: usb_device
"""
ENV = f"""\
targets:
  main:
    resources:
      RemotePlace:
        name: gadget
    drivers:
      SSHDriver:
        keyfile: ../ssh/client_key
        connection_timeout: 60.0
      GadgetdStrategy:
        gadget: {SPEC.name}
        start_cmd: gadgetd run loopback
        timeout: 120
options:
  coordinator_address: {COORDINATOR}
imports:
  - gadgetd.host.labgrid_place
"""
# The board waits for the host to finish (the lab stops it once the host's command ends, so
# the host reads the board's configfs over the lab's ssh); its sshd is the lab's.
# On the host: the coordinator (its state in a directory of its own), the exporter, the place
# made and acquired by the client, then the HIL suite with the place's environment, the
# board's configfs listed, then repro on the place (its proven hang on 6.1.0-57 leaves the
# gadget of the task stuck in unbind behind); no gadgetd runs on the board before.
BOARD = """\
export PATH={bin}:$PATH L=$GADGETD_LAB
(ls /sys/kernel/config/usb_gadget && echo listed) > "$GADGETD_RESULTS/gadgets-before.txt"
until [ -e "$L/host/done" ]; do sleep 1; done
"""
HOST = """\
export PATH={bin}:$PATH L=$GADGETD_LAB R=$GADGETD_RESULTS LG_COORDINATOR={coordinator}
status=1
mkdir -p /tmp/coordinator && cd /tmp/coordinator
labgrid-coordinator -l {coordinator} > "$R/coordinator.log" 2>&1 &
until labgrid-client places > /dev/null 2>&1; do sleep 1; done
labgrid-exporter --name lab "$L/labgrid/exporter.yaml" > "$R/exporter.log" 2>&1 &
until labgrid-client resources | grep -q NetworkService; do sleep 1; done
labgrid-client -p gadget create && labgrid-client -p gadget add-match 'lab/gadget-lab/*' &&
labgrid-client -p gadget acquire > "$R/client.txt" 2>&1 &&
start=$(date +%s) &&
python -m pytest -p no:cacheprovider -q --pyargs gadgetd.hil --lg-env "$L/labgrid/env.yaml" \\
  --junitxml "$R/hil-labgrid.xml" > "$R/hil.txt" 2>&1 && status=0
echo $(( $(date +%s) - start )) > "$R/hil-seconds"
ssh -F "$L/ssh/ssh_config" root@{board} 'ls /sys/kernel/config/usb_gadget && echo listed' \\
  > "$R/gadgets-after.txt"
modprobe fuse
gadgetd-hil place-repro --lg-env "$L/labgrid/env.yaml" --out "$R/place-repro" -- --nonblock \\
  --scenario contended_open --scenario deactivated_reopen > "$R/place-repro.txt" 2>&1
echo $? > "$R/place-repro-status"
labgrid-client -p gadget show >> "$R/client.txt" 2>&1
touch "$R/done"
exit $status
"""


def test_the_hil_suite_passes_on_a_labgrid_place():
    out = Path("out/lab-labgrid").resolve()
    (out / "labgrid").mkdir(parents=True, exist_ok=True)
    (out / "labgrid" / "exporter.yaml").write_text(EXPORTER)
    (out / "labgrid" / "env.yaml").write_text(ENV)
    bin_dir = HIL.parent
    with open(out / "lab.log", "w") as log:
        proc = subprocess.run(
            [str(HIL), "lab", "--board-kernel", KERNEL, "--host-kernel", KERNEL,
             "--board", BOARD.format(bin=bin_dir),
             "--host", HOST.format(bin=bin_dir, coordinator=COORDINATOR, board=BOARD_ADDRESS),
             "--out", str(out), "--timeout", "1500"],
            stdout=log, stderr=subprocess.STDOUT, timeout=2100)
    host = out / "host"
    why = "\n".join(f"--- {f.name}\n{f.read_text()[-2500:]}" for f in
                    [out / "lab.log", host / "hil.txt", host / "client.txt",
                     host / "exporter.log"] if f.exists())
    assert proc.returncode == 0, why
    suite = ElementTree.parse(host / "hil-labgrid.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) > 30 and suite.get("failures") == suite.get("errors") == "0"
    assert suite.get("skipped") == "0", why  # the board's control came from the place
    board = out / "board"
    # nothing in configfs before the strategy served the gadget, nor after it turned it off
    assert (board / "gadgets-before.txt").read_text().split() == ["listed"]
    assert (host / "gadgets-after.txt").read_text().split() == ["listed"]
    # repro on the place: the board's report, the host's counts merged through the sshfs mount
    why = (host / "place-repro.txt").read_text()[-4000:]
    repro = repro_result(host / "place-repro" / "repro.jsonl", host / "place-repro-status")
    assert repro["report"]["verdict"] == "present" and repro["status"] == 1, why
    assert "NOT in this report" not in repro["report"]["host"], why
    assert all(s.get("host") for s in repro["scenarios"].values()), why
    assert hang_proven(repro["scenarios"]["deactivated_reopen"]["hang"]), why
    print(f"labgrid place: {suite.get('tests')} tests passed in "
          f"{(host / 'hil-seconds').read_text().strip()} s; repro on the place: "
          + ", ".join(f"{k} {v['verdict']}" for k, v in repro["scenarios"].items()))
