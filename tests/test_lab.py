"""`gadgetd-hil lab`'s exit status from its two VMs' results."""

from pathlib import Path

import pytest

from gadgetd.host import lab, vm


def result(status, booted=True, stopped=False, note=""):
    return vm.VmResult(status, None, 15.0 if booted else None, 1.0, Path("/x"), note, stopped)


@pytest.mark.parametrize("board,host,expected", [
    (result(0, stopped=True), result(0), 0),  # a serving board stopped after the host's command
    (result(0, stopped=True), result(3), 3),  # the host command's status
    (result(2), result(0), 1),  # the board command failed
    (result(0), result(0), 0),
    (result(vm.TIMEOUT), result(0), vm.TIMEOUT),
    (result(0, stopped=True), result(vm.TIMEOUT), vm.TIMEOUT),
    (result(vm.NOT_BOOTED, booted=False), result(0), vm.NOT_BOOTED),
    (result(0, stopped=True), result(vm.NOT_BOOTED, booted=False), vm.NOT_BOOTED),
    (result(vm.NOT_BOOTED, note="setup failed"), result(0), vm.NOT_BOOTED),
])
def test_exit_status(board, host, expected):
    assert lab.exit_status(board, host)[0] == expected


def test_the_link_joins_each_side_to_the_other(tmp_path):
    board, host = lab._link(tmp_path, "board"), lab._link(tmp_path, "host")
    assert f"local.type=unix,local.path={tmp_path / 'board'}," in board[1]
    assert f"remote.type=unix,remote.path={tmp_path / 'board'}" in host[1]
    assert board[3].endswith(lab.MACS["board"]) and host[3].endswith(lab.MACS["host"])
