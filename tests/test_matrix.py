"""Matrix rendering and the bisect changelog filter (no VM)."""

import gzip

from gadgetd.host import kernels, matrix
from gadgetd.repro import report as rep

CHANGELOG = """linux-signed-amd64 (6.1.192+2) bookworm-security; urgency=high

  * Sign kernel from linux 6.1.192-2

linux (6.1.192-1) bookworm-security; urgency=high

  * New upstream stable update:
    https://www.kernel.org/pub/linux/kernel/v6.x/ChangeLog-6.1.191
    - functionfs: fix the open/removal races
    - usb: gadget: ffs: remove ENTER() macro
    - drm: unrelated fix

linux (6.1.190-1) bookworm-security; urgency=high

  * usb: gadget: f_fs: Prevent deadlock during ep0 read loop
"""


def test_changelog_lines_only_after_the_good_version(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "CACHE", tmp_path)
    doc = tmp_path / "kernels/6.1.0-55-amd64/usr/share/doc/linux-image-6.1.0-55-amd64"
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as f:
        f.write(CHANGELOG)
    kernel = kernels.Kernel("debian:6.1.0-55-amd64", "6.1.0-55-amd64", tmp_path / "img", None)
    assert matrix.changelog_lines(kernel, "6.1.190-1") == [
        "    - functionfs: fix the open/removal races",
        "    - usb: gadget: ffs: remove ENTER() macro",
    ]


def test_render_and_rates():
    row = matrix.Row("debian:6.1.0-56-amd64", "6.1.0-56-amd64", "6.1.192-2", rep.PRESENT, 1)
    row.scenarios = {
        "contended_open": {"verdict": "present",
                           "counts": {"nonblock-once_attempts": 200, "nonblock-once_EAGAIN": 5},
                           "latency_ms": {"nonblock": {"n": 3, "p50": 0.1, "p99": 0.3, "max": 1}}},
        "deactivated_reopen": {"verdict": "present", "counts": {}, "latency_ms": {}},
    }
    assert row.eagain_rate == 0.025
    text = matrix.render([row, matrix.Row("debian:9", note="did not boot")])
    lines = text.splitlines()
    assert "6.1.0-56-amd64" in lines[2] and "2.50" in lines[2] and lines[2].endswith("present")
    assert "debian:9" in lines[3] and "(did not boot)" in lines[3]


def row_with_every_scenario() -> matrix.Row:
    row = matrix.Row("debian:6.1.0-57-amd64", "6.1.0-57-amd64", "6.1.192-3", rep.PRESENT, 1)
    row.scenarios = {name: {"verdict": verdict, "counts": {}, "latency_ms": {}}
                     for name, verdict in zip(rep.SCENARIOS, ["present", "absent", "absent",
                                                              "absent", "present", "inconclusive"],
                                              strict=True)}
    return row


def test_every_scenario_has_a_column():
    row = row_with_every_scenario()
    head, _, line = matrix.render([row]).splitlines()
    assert [matrix.short_name(n) for n in rep.SCENARIOS] == head.split()[2:8]
    assert line.split()[2:8] == ["present", "absent", "absent", "absent", "present",
                                 "inconclusive"]


def test_the_chart_is_written_with_every_scenario(tmp_path):
    row = row_with_every_scenario()
    json_path, png_path = matrix.save([row], tmp_path)
    assert png_path.stat().st_size > 10_000 and "read_after_unbind" in json_path.read_text()


def test_expect_scenario_is_checked_before_anything_boots():
    from click.testing import CliRunner

    from gadgetd.host.cli import main

    result = CliRunner().invoke(main, ["matrix", "--kernels", "debian:sid", "--check",
                                       "--expect-scenario", "read_after_unbind=gone"])
    assert result.exit_code == 2 and "'read_after_unbind=gone': NAME=VERDICT" in result.output
