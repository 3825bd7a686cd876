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
    assert found["total"][:2] == [("process (gadgetd/aio.py)", 0.9),
                                  ("_reap (gadgetd/aio.py)", 0.6)]  # run, in every stack: left out


def test_a_frame_counts_once_per_stack_in_total():
    found = pyspy.top("m (a.py:9);f (a.py:1);g (a.py:2);f (a.py:3) 4\nm (a.py:9);h (a.py:5) 6\n")
    assert dict(found["total"]) == {"h (a.py)": 0.6, "f (a.py)": 0.4, "g (a.py)": 0.4}
    assert found["self"] == [("h (a.py)", 0.6), ("f (a.py)", 0.4)]


def test_no_samples_no_shares():
    assert pyspy.top("") == {"samples": 0, "self": [], "total": []}
