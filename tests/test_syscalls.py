"""syscalls: the bounded open (a deadline interrupts it, a late timer costs nothing; a FIFO
without a writer blocks open(2) like a busy ffs->mutex), bounded reads and writes (a pipe nobody
drains blocks like an ep0 data stage the host abandoned) and attribute writes (pure userspace)."""

import os
import signal
import time
from pathlib import Path

import pytest

from gadgetd import syscalls
from gadgetd.ffs import DataStageTimeout, bounded, open_bounded
from gadgetd.open_policy import DeadlineExceeded


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_blocked_open_ends_at_its_deadline(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = open_fds()
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        open_bounded(fifo, os.O_RDONLY, 0.2)
    assert 0.2 <= time.monotonic() - start < 2.0
    assert open_fds() == before


def test_a_timer_firing_right_after_the_open_returned_is_no_miss(tmp_path, monkeypatch):
    """SIGALRM lands after open(2) returned, before the timer is cancelled (here made certain by
    raising it there). With a handler that raised, that open was counted as a miss and its fd
    was leaked."""
    path = tmp_path / "file"
    path.write_bytes(b"")
    real = syscalls.open_interruptible

    def open_then_alarm(*args):
        fd = real(*args)
        signal.raise_signal(signal.SIGALRM)  # runs the Python handler before returning
        return fd

    monkeypatch.setattr(syscalls, "open_interruptible", open_then_alarm)
    before = open_fds()
    fd = open_bounded(path, os.O_RDONLY, 1.0)
    assert os.get_inheritable(fd) is False
    os.close(fd)
    assert open_fds() == before


def test_signals_before_the_deadline_do_not_end_the_wait(tmp_path):
    """Another signal interrupting the wait early (a child's SIGCHLD) does not end it: the open
    is retried until its deadline."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    pid = os.fork()
    if pid == 0:
        time.sleep(0.1)
        os._exit(0)
    previous = signal.signal(signal.SIGCHLD, lambda *a: None)
    try:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            open_bounded(fifo, os.O_RDONLY, 0.5)
        assert time.monotonic() - start >= 0.5
    finally:
        signal.signal(signal.SIGCHLD, previous)
        os.waitpid(pid, 0)


def test_a_read_nobody_answers_ends_at_its_deadline():
    r, w = os.pipe()
    try:
        start = time.monotonic()
        with pytest.raises(DataStageTimeout):
            bounded(lambda: syscalls.read_interruptible(r, 64), 0.2, DataStageTimeout, "read")
        assert 0.2 <= time.monotonic() - start < 2.0
        os.write(w, b"late")  # nothing of the interrupted read is left behind
        assert bounded(lambda: syscalls.read_interruptible(r, 64), 1.0, DataStageTimeout,
                       "read") == b"late"
    finally:
        os.close(r)
        os.close(w)


def test_a_write_nobody_takes_ends_at_its_deadline():
    """A full pipe blocks write(2) as a queued IN data stage blocks until the host takes it."""
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        while True:
            try:
                os.write(w, b"x" * 65536)
            except BlockingIOError:
                break
        os.set_blocking(w, True)
        with pytest.raises(DataStageTimeout) as exc:
            bounded(lambda: syscalls.write_interruptible(w, b"reply"), 0.2, DataStageTimeout,
                    "ep0 reply")
        assert "ep0 reply still waiting after 0.200 s" in str(exc.value)
        os.read(r, 65536)
        assert bounded(lambda: syscalls.write_interruptible(w, b"reply"), 1.0,
                       DataStageTimeout, "ep0 reply") == 5
    finally:
        os.close(r)
        os.close(w)


def test_a_failed_attribute_write_names_the_attribute_and_the_value():
    """write(2) errors carry no file name: bring-up's one-line error would name nothing."""
    with pytest.raises(OSError) as exc:
        syscalls.write_attr(Path("/dev/full"), "0x1d6b")  # every write: ENOSPC
    assert exc.value.filename == "/dev/full"
    assert "value '0x1d6b'" in exc.value.strerror
