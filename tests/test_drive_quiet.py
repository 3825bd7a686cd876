"""drive's Storm asks for the quiet file by opening it (over sshfs a stat of a removed file is
answered from a 20 s attribute cache); here on a local directory: absent, present, removed."""

from __future__ import annotations

from gadgetd.host.device import DeviceSelector
from gadgetd.host.drive import Storm


def test_quiet_follows_the_file(tmp_path):
    quiet = tmp_path / "drive.jsonl.quiet"
    storm = Storm(DeviceSelector.parse("1d6b:0104"), quiet_file=str(quiet))
    assert not storm.quiet()
    quiet.touch()
    assert storm.quiet()
    quiet.unlink()
    assert not storm.quiet()


def test_without_a_quiet_file_the_storm_never_holds():
    assert not Storm(DeviceSelector.parse("1d6b:0104")).quiet()
