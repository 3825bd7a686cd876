"""make bench's reading of py-spy's collapsed stacks (bench/pyspy.py)."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "bench_pyspy", Path(__file__).resolve().parents[1] / "bench" / "pyspy.py")
pyspy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pyspy)

STACKS = """\
run (gadgetd/eventloop.py:99);process (gadgetd/aio.py:50);_reap (gadgetd/aio.py:61) 6
run (gadgetd/eventloop.py:99);process (gadgetd/aio.py:50);_read (gadgetd/functions/sourcesink.py:120) 3
run (gadgetd/eventloop.py:99) 1
process_idle (<frozen x>) 0
"""


def test_self_and_total_shares_of_all_samples():
    found = pyspy.top(STACKS, count=3)
    assert found["samples"] == 10
    assert found["self"] == [("_reap (gadgetd/aio.py)", 0.6),
                             ("_read (functions/sourcesink.py)", 0.3),
                             ("run (gadgetd/eventloop.py)", 0.1)]
    assert found["total"][:2] == [("run (gadgetd/eventloop.py)", 1.0),
                                  ("process (gadgetd/aio.py)", 0.9)]


def test_a_frame_counts_once_per_stack_in_total():
    found = pyspy.top("f (a.py:1);g (a.py:2);f (a.py:3) 4\n")
    assert dict(found["total"]) == {"f (a.py)": 1.0, "g (a.py)": 1.0}
    assert found["self"] == [("f (a.py)", 1.0)]


def test_no_samples_no_shares():
    assert pyspy.top("") == {"samples": 0, "self": [], "total": []}
