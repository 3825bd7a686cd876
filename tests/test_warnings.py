"""Per-request warnings are rate-limited per kind, and what was held back is counted."""

from __future__ import annotations

import logging

from gadgetd.function import Warnings


def test_a_flood_logs_ten_a_second_per_kind_and_counts_the_rest(caplog):
    now = [0.0]
    warnings = Warnings("loop0", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="gadgetd.function"):
        for i in range(100):
            now[0] = i * 0.005  # 100 stalls in half a second
            warnings.warn("stall", "stalled request %d", i)
        warnings.warn("setup error", "data stage failed")
        now[0] = 1.2
        warnings.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:10] == [f"loop0: stalled request {i}" for i in range(10)]
    assert messages[10] == "loop0: data stage failed"
    assert messages[11] == "loop0: 90 more stall warnings in 1.2 s"
    assert len(messages) == 12
