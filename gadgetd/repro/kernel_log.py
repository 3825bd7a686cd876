"""What the kernel says: new kernel log records worth reporting (a stuck task's state is
gadgetd.syscalls.task_state)."""

from __future__ import annotations

import os
import re

INTERESTING = re.compile(r"WARNING|BUG|blocked for more than|hung_task|Call Trace|Oops|"
                         r"general protection|RIP:")


class KernelLog:
    """Records the kernel logged since this object was made, read from /dev/kmsg by sequence
    number: a ring buffer that wrapped since (dmesg's line count would shift) loses nothing
    that is still there, and records overwritten before they were read are counted and said."""

    def __init__(self, path: str = "/dev/kmsg"):
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(self._fd, 0, os.SEEK_END)  # from the next record on
        self._lines: list[str] = []
        self._next_seq: int | None = None
        self.lost = 0

    def _read(self) -> None:
        while self._fd is not None:
            try:
                chunk = os.read(self._fd, 8192)
            except BlockingIOError:
                return
            except BrokenPipeError:  # overwritten before it was read: the sequence gap counts it
                continue
            if not chunk:
                return
            for seq, text in parse_records(chunk):
                if self._next_seq is not None and seq > self._next_seq:
                    self.lost += seq - self._next_seq
                self._next_seq = seq + 1
                self._lines.append(text)

    def new_lines(self) -> list[str]:
        self._read()
        lost = [f"kmsg: {self.lost} records were overwritten before they were read"]
        return self._lines + (lost if self.lost else [])

    def interesting(self) -> list[str]:
        return [line for line in self.new_lines() if INTERESTING.search(line)
                or line.startswith("kmsg: ")]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            self.close()


def parse_records(data: bytes) -> list[tuple[int, str]]:
    """/dev/kmsg records ("PRIO,SEQ,USEC,FLAGS;TEXT", continuation lines indented) ->
    (sequence number, text)."""
    found = []
    for line in data.decode(errors="replace").splitlines():
        if not line or line.startswith(" ") or ";" not in line:
            continue
        header, text = line.split(";", 1)
        fields = header.split(",")
        if len(fields) >= 3 and fields[1].isdigit():
            found.append((int(fields[1]), text))
    return found
