"""A kernel matrix in two shards run at once (two VMs), joined by `matrix merge` into the table,
JSON and JUnit XML one run writes (`make test-lab`); the merge itself is unit-tested in
tests/test_matrix_shards.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

pytestmark = pytest.mark.lab
HIL = Path(sys.executable).parent / "gadgetd-hil"
KERNELS = {"debian:6.1.0-57-amd64": "present", "debian:sid": "absent"}


def test_two_shards_at_once_merge_into_one_matrix():
    out = Path("out/lab-shards")
    start = time.monotonic()
    shards = [subprocess.Popen([str(HIL), "matrix", "--kernels", ",".join(KERNELS),
                                "--scenario", "contended_open", "--shard", f"{k}/2",
                                "--out", str(out / str(k))],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for k in (1, 2)]
    outputs = [shard.communicate(timeout=1800)[0] for shard in shards]
    seconds = time.monotonic() - start
    assert [s.returncode for s in shards] == [0, 0], outputs  # each kernel reported
    merged = subprocess.run([str(HIL), "matrix", "merge", str(out / "1"), str(out / "2"),
                             "--out", str(out / "merged")], capture_output=True, text=True)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    rows = json.loads((out / "merged" / "matrix.json").read_text())
    assert {r["spec"]: r["verdict"] for r in rows} == KERNELS
    suite = ElementTree.parse(out / "merged" / "matrix.xml").getroot()
    cases = suite.iter("testcase")
    assert sorted(len(c.findall("failure")) for c in cases) == [0, 1]
    print(f"two shards at once, merged: {seconds:.0f} s")
