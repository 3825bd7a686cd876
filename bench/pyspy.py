"""Where a py-spy profile's time goes: the functions with the most samples from its collapsed
stacks (`py-spy record --format raw`: one "frame;frame;...;frame COUNT" line per stack, each frame
"function (file:line)"). Self is where the sample was taken; total counts a function once per stack
it appears in, leaving out the frames at the root of (nearly) every stack."""

from __future__ import annotations

import re
from collections import Counter

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """`function (file)` without the line, the file reduced to its last two path parts."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = "/".join(match["file"].split("/")[-2:])
    return f"{match['function']} ({file})"


def top(collapsed: str, count: int = 8) -> dict:
    """{"samples": N, "self": [(name, share)], "total": [(name, share)]}, shares of all samples."""
    own, inclusive, samples = Counter(), Counter(), 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [_name(f) for f in stack.split(";")]
        samples += int(n)
        own[frames[-1]] += int(n)
        for name in set(frames):
            inclusive[name] += int(n)

    def shares(counter):
        return [(name, round(n / samples, 3)) for name, n in counter.most_common(count)]

    # The frames (nearly) every stack shares (main, click, the event loop's run) say nothing.
    below_the_root = Counter({name: n for name, n in inclusive.items() if n < 0.95 * samples})
    return {"samples": samples, "self": shares(own) if samples else [],
            "total": shares(below_the_root) if samples else []}
