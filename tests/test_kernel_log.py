"""Kernel log records by sequence number (gadgetd.repro.kernel_log), on a file laid out as
/dev/kmsg reads."""

from __future__ import annotations

from gadgetd.repro.kernel_log import KernelLog, parse_records


def test_records_parse_with_their_sequence_numbers():
    data = (b"6,812,1234567,-;usb 1-1: new high-speed USB device\n"
            b" SUBSYSTEM=usb\n"
            b"4,813,1234570,-;WARNING: CPU: 0 PID: 1 at drivers/usb/gadget/function/f_fs.c\n")
    assert parse_records(data) == [
        (812, "usb 1-1: new high-speed USB device"),
        (813, "WARNING: CPU: 0 PID: 1 at drivers/usb/gadget/function/f_fs.c")]


def test_only_records_after_the_start_and_a_gap_is_said(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_bytes(b"6,1,0,-;before\n")
    log = KernelLog(str(kmsg))
    with open(kmsg, "ab") as f:
        f.write(b"6,2,0,-;INFO: task gadgetd blocked for more than 120 seconds.\n")
        f.write(b"6,9,0,-;after a wrap\n")  # 3..8 were overwritten before they were read
    assert log.new_lines() == ["INFO: task gadgetd blocked for more than 120 seconds.",
                               "after a wrap",
                               "kmsg: 6 records were overwritten before they were read"]
    assert log.interesting() == ["INFO: task gadgetd blocked for more than 120 seconds.",
                                 "kmsg: 6 records were overwritten before they were read"]
