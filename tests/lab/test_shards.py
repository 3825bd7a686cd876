"""A kernel matrix in two shards run at once (two VMs), joined by `matrix merge` into the table,
JSON and JUnit XML one run writes (`make test-lab`); the merge itself is unit-tested in
tests/test_matrix_shards.py. Before it, two processes fetch the same kernel into one empty cache
at once, as shards on one machine (and matrix --jobs, in threads) do."""

from __future__ import annotations

import json
import os
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


def test_two_fetches_of_one_kernel_at_once_share_the_cache(tmp_path):
    resolve = ("from gadgetd.host import kernels; k = kernels.resolve('debian:6.1.0-50-amd64'); "
               "print(k.release, k.image, k.modules)")
    env = {**os.environ, "GADGETD_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", resolve], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [proc.communicate(timeout=900) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    assert results[0][0] == results[1][0]  # one kernel, found by both
    release, image, modules = results[0][0].split()
    assert release == "6.1.0-50-amd64" and Path(image).is_file()
    assert (Path(modules) / "modules.dep").stat().st_size > 0
    downloads = [line for _, err in results for line in err.splitlines()
                 if line.startswith("gadgetd-hil: downloading")]
    assert downloads == ["gadgetd-hil: downloading linux-image-6.1.0-50-amd64 6.1.176-1"]
    assert sorted(p.name for p in (tmp_path / "kernels").iterdir()) == [release]  # no .partial
