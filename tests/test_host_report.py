"""The host's report (`gadgetd-hil drive --report`) as repro on the board reads it."""

import threading
import time

from gadgetd.host.drive import report_line
from gadgetd.repro.host_report import HostReport, summary


def write(path, seq, counts):
    with open(path, "a") as f:
        f.write(report_line(seq, counts) + "\n")


def test_a_window_is_the_difference_of_the_lines_around_it(tmp_path):
    path = tmp_path / "drive.jsonl"
    write(path, 1, {"echo_in:ok": 10})
    report = HostReport(path)
    mark = report.mark()
    assert mark == (1, {"echo_in:ok": 10})
    write(path, 2, {"echo_in:ok": 30, "set_interface:EPIPE": 2})
    # since() waits for a line written after it was called: the window's end is covered
    threading.Timer(0.3, write, (path, 3, {"echo_in:ok": 35, "set_interface:EPIPE": 2,
                                           "disconnects": 1})).start()
    started = time.monotonic()
    delta = report.since(mark)
    assert time.monotonic() - started >= 0.25
    assert delta == {"echo_in:ok": 25, "set_interface:EPIPE": 2, "disconnects": 1}
    assert summary(delta) == {"requests": 27, "served": 25, "stalls": 2, "disconnects": 1,
                              "outcomes": delta}


def test_no_line_after_the_window_is_not_zero(tmp_path):
    path = tmp_path / "drive.jsonl"
    report = HostReport(path)
    assert report.since(report.mark(), wait=0.3) is None
    assert summary(None) is None


def test_a_line_being_written_is_not_read(tmp_path):
    path = tmp_path / "drive.jsonl"
    write(path, 1, {"status:ok": 1})
    with open(path, "a") as f:
        f.write('{"seq": 2, "t": 1.0, "cou')
    assert HostReport(path).mark() == (1, {"status:ok": 1})


def test_quiet_asks_the_host_through_a_file_and_waits_for_its_word(tmp_path):
    path = tmp_path / "drive.jsonl"
    write(path, 1, {"status:ok": 1})
    report = HostReport(path)

    def host_goes_quiet():  # drive's side: it sees the file and says so in its next line
        assert report.quiet_file.exists()
        with open(path, "a") as f:
            f.write(report_line(2, {"status:ok": 1}, quiet=True) + "\n")

    threading.Timer(0.3, host_goes_quiet).start()
    with report.quiet() as quiet:
        assert quiet
    assert not report.quiet_file.exists()
    with report.quiet(wait=0.3) as quiet:  # no new line: not confirmed
        assert not quiet
