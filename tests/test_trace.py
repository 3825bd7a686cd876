# ruff: noqa: E501 (trace lines as the kernel writes them)
"""gadgetd trace's pure parts: BTF member offsets (a small blob made here as the kernel lays
them out), trace line parsing, pairing entries with returns, and who retried or gave up."""

from __future__ import annotations

import struct

import pytest

from gadgetd.trace import events, runner
from gadgetd.trace.btf import Btf, BtfError

INT, STRUCT, UNION = 1, 4, 5


def blob(types: list[tuple[str, int, int, int, bytes]], names: list[str]) -> bytes:
    """BTF bytes: `types` as (name, kind, vlen | kind_flag << 31, size, trailing data)."""
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in names)

    def off(name: str) -> int:
        return strings.index(b"\0" + name.encode() + b"\0") + 1 if name else 0

    data = b"".join(struct.pack("<III", off(name), kind << 24 | info, size) + trailing
                    for name, kind, info, size, trailing in types)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(data), len(data), len(strings))
    return header + data + strings


def member(name_offset: int, type_id: int, bits: int) -> bytes:
    return struct.pack("<III", name_offset, type_id, bits)


NAMES = ["int", "path", "mnt", "dentry", "file", "f_path", "f_flags", "qstr", "name", "d_name"]


def strings_offset(name: str) -> int:
    table = b"\0" + b"".join(n.encode() + b"\0" for n in NAMES)
    return table.index(b"\0" + name.encode() + b"\0") + 1


@pytest.fixture
def layout() -> Btf:
    """7.2's shape: struct file { ...; union { struct path f_path; } at byte 16; f_flags at byte
    40 (a bitfield-style member: kind_flag set, the size in the top byte of its offset)."""
    s = strings_offset
    return Btf(blob([
        ("int", INT, 0, 4, struct.pack("<I", 32)),  # type 1
        ("path", STRUCT, 2, 16, member(s("mnt"), 1, 0) + member(s("dentry"), 1, 64)),  # 2
        ("", UNION, 1, 16, member(s("f_path"), 2, 0)),  # 3
        ("file", STRUCT, 2 | 1 << 31, 64,
         member(0, 3, 128) + member(s("f_flags"), 1, 32 << 24 | 320)),  # 4
        ("qstr", STRUCT, 1, 16, member(s("name"), 1, 64)),  # 5
        ("dentry", STRUCT, 1, 64, member(s("d_name"), 5, 256)),  # 6
    ], NAMES))


def test_offsets_of_members_direct_and_in_anonymous_unions(layout):
    assert layout.offset("file", "f_flags") == 40
    assert layout.offset("file", "f_path") == 16
    assert layout.offset("path", "dentry") == 8


def test_missing_struct_member_and_bad_data_are_named(layout):
    with pytest.raises(BtfError, match="no struct inode"):
        layout.offset("inode", "i_mode")
    with pytest.raises(BtfError, match="struct file has no member f_mode"):
        layout.offset("file", "f_mode")
    with pytest.raises(BtfError, match="bad magic"):
        Btf(b"\0" * 32)
    with pytest.raises(BtfError, match="unknown BTF kind 31"):
        Btf(blob([("int", 31, 0, 4, b"")], NAMES))


def test_probes_read_flags_and_the_file_name_at_the_kernels_offsets(layout):
    lines = runner.probes(layout)
    # file->f_path.dentry at 16 + 8, dentry->d_name.name at 32 + 8, file->f_flags at 40
    assert "p:ep0_open usb_f_fs:ffs_ep0_open file=+0(+40(+24($arg2))):string " \
           "flags=+40($arg2):x32" in lines
    assert "p:ep0_read usb_f_fs:ffs_ep0_read file=+0(+40(+24($arg1))):string " \
           "flags=+40($arg1):x32" in lines
    assert "r64:ep0_open_ret usb_f_fs:ffs_ep0_open ret=$retval:s32" in lines
    assert "r64:ep0_write_ret usb_f_fs:ffs_ep0_write ret=$retval:s64" in lines


LINES = """\
         gadgetd-200     [000] ..... 100.000000: sched_process_fork: comm=gadgetd pid=200 child_comm=gadgetd child_pid=201
           naive-300     [001] ..... 100.100000: sched_process_exec: filename=/tmp/naive pid=300 old_pid=300
           naive-300     [001] ..... 100.200000: ep0_open: (ffs_ep0_open+0x0/0x190 [usb_f_fs]) file="ep0" flags=0x8802
           naive-300     [001] d.... 100.200100: ep0_open_ret: (do_dentry_open+0x1c9/0x430 <- ffs_ep0_open) ret=-11
         gadgetd-201     [000] ..... 100.300000: ep0_open: (ffs_ep0_open+0x0/0x190 [usb_f_fs]) file="ep0" flags=0x8802
         gadgetd-201     [000] d.... 100.300050: ep0_open_ret: (do_dentry_open+0x1c9/0x430 <- ffs_ep0_open) ret=-11
         gadgetd-201     [000] ..... 100.310000: ep0_open: (ffs_ep0_open+0x0/0x190 [usb_f_fs]) file="ep0" flags=0x8802
         gadgetd-201     [000] d.... 100.310400: ep0_open_ret: (do_dentry_open+0x1c9/0x430 <- ffs_ep0_open) ret=0
         gadgetd-201     [000] ..... 100.400000: ep0_read: (ffs_ep0_read+0x0/0x2d0 [usb_f_fs]) file="ep0" flags=0x8802
         gadgetd-201     [000] d.... 100.650000: ep0_read_ret: (vfs_read+0xa5/0x2c0 <- ffs_ep0_read) ret=12
   Pixel thing-1-400     [001] ..... 100.500000: epfile_open: (ffs_epfile_open+0x0/0x90 [usb_f_fs]) file="ep1" flags=0x8002
   Pixel thing-1-400     [001] d.... 100.900000: epfile_open_ret: (do_dentry_open+0x1c9/0x430 <- ffs_epfile_open) ret=0
"""


def tracked(text: str = LINES) -> events.Tracker:
    tracker = events.Tracker()
    for line in text.splitlines():
        tracker.feed(line)
    return tracker


def test_a_line_with_a_comm_holding_spaces_and_dashes():
    parsed = events.parse_line(LINES.splitlines()[-1])
    assert (parsed["comm"], parsed["pid"], parsed["event"]) == ("Pixel thing-1", 400,
                                                                 "epfile_open_ret")
    assert parsed["args"] == {"ret": "0"}
    assert events.parse_line("# tracer: nop") is None


def test_entries_pair_with_returns_and_a_fork_inherits_the_name():
    tracker = tracked(LINES + "         gadgetd-201     [000] ..... 102.0: ep0_open: "
                              "(ffs_ep0_open+0x0/0x190 [usb_f_fs]) file=\"ep0\" flags=0x2\n")
    worker = tracker.processes[201]
    assert worker.parent == 200 and worker.comm == "gadgetd"
    opens = [c for c in worker.calls if c.kind == "open"]
    assert [(c.result, c.nonblock) for c in opens] == [(-11, True), (0, True), (None, False)]
    assert opens[0].error == "EAGAIN" and opens[-1].seconds is None  # still in flight
    assert tracker.processes[300].exe == "/tmp/naive"


def test_a_process_the_comm_cache_missed_is_named_by_its_executable():
    tracker = tracked("           <...>-357     [001] ..... 100.1: sched_process_exec: "
                      "filename=/tmp/naive pid=357 old_pid=357\n")
    assert tracker.processes[357].comm == "naive"


def test_who_retried_and_who_gave_up():
    rows = {r["pid"]: r for r in events.summary(tracked(LINES + (
        "           other-999     [001] ..... 101.500000: sched_process_exec: filename=/x "
        "pid=999 old_pid=999\n")))}
    assert rows[300]["after_eagain"] == "gave up" and rows[300]["gave_up"] == 1
    assert rows[201]["after_eagain"] == "retried" and rows[201]["eagain"] == 1
    assert rows[201]["ep0_io"] == 1 and rows[201]["longest_ep0_io_ms"] == 250.0
    assert rows[400]["after_eagain"] == "-" and rows[400]["longest_open_ms"] == 400.0
    assert rows[400]["nonblock_opens"] == 0
    assert 200 not in rows and 999 not in rows  # no FunctionFS file touched


def test_an_eagain_in_the_last_second_is_not_called_given_up():
    rows = {r["pid"]: r for r in events.summary(tracked())}  # the trace ends at 100.9
    assert rows[300]["after_eagain"] == "-" and rows[300]["gave_up"] == 0
