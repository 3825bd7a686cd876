"""read_after_unbind's evidence of absence: re-reads inside the unbind's window (pure)."""

from gadgetd.repro.reader_scenarios import rereads_in_window


def reads(*spec):
    """(issued, returned, events) tuples as the reader's lines."""
    return [{"issued": i, "returned": r, "events": list(e)} for i, r, e in spec]


def test_a_reread_issued_before_the_unbind_returned_counts():
    windows = [{"start": 100, "end": 200}, {"start": 300, "end": 400}]
    lines = reads((0, 50, ["BIND"]), (51, 150, ["DISABLE", "UNBIND"]), (160, 350, ["BIND"]),
                  (351, 380, ["UNBIND"]), (420, 500, []))
    inside, gaps = rereads_in_window(windows, lines)
    assert inside == 1 and gaps == [-40, 20]


def test_an_unbind_without_its_event_or_reread_is_not_counted():
    windows = [{"start": 100, "end": 200}]
    assert rereads_in_window(windows, reads((0, 50, ["BIND"]))) == (0, [])
    assert rereads_in_window(windows, reads((0, 150, ["UNBIND"]))) == (0, [])


def test_an_unbind_event_before_the_window_is_not_this_unbinds():
    windows = [{"start": 100, "end": 200}]
    lines = reads((0, 90, ["UNBIND"]), (91, 95, ["BIND"]), (96, 150, ["UNBIND"]), (151, 300, []))
    assert rereads_in_window(windows, lines) == (1, [-49])
