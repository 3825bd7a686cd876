"""ep0 open policy: when to retry an open (or an ep0 operation), how long to back off, when to give up.

Pure logic: the caller passes the operation, so the policy is tested with a fake opener and used
unchanged by the daemon (ffs.py) and by repro.
"""

from __future__ import annotations

import errno
import time
from collections import Counter
from dataclasses import dataclass, field

from gadgetd.model import BLOCKING, NONBLOCK

# EAGAIN: trylock of ffs->mutex failed under O_NDELAY (since e5bf5ee26663);
# EINTR: a signal interrupted the (interruptible) mutex wait; EBUSY: the instance is CLOSING.
RETRY_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY})


class DeadlineExceeded(OSError):
    """The policy's overall deadline passed; carries the last errno seen."""


@dataclass(frozen=True)
class Ep0OpenPolicy:
    mode: str = BLOCKING  # gadgetd.model's ep0 open vocabulary: blocking or nonblock
    first_delay: float = 0.0002  # seconds before the first retry
    max_delay: float = 0.02  # backoff doubles up to this
    deadline: float = 10.0  # overall budget for one open (or one ep0 operation)

    @property
    def nonblock(self) -> bool:
        """Open with O_RDWR|O_NDELAY (the failing userland's way) and retry EAGAIN."""
        return self.mode == NONBLOCK

    def delay(self, retry: int) -> float:
        """Backoff before retry number `retry` (0-based): bounded exponential."""
        return min(self.max_delay, self.first_delay * (2 ** min(retry, 30)))


@dataclass
class RetryStats:
    """Counts for status and repro: operations, retries by errno name, latency."""

    operations: int = 0
    retries: Counter = field(default_factory=Counter)
    deadline_failures: int = 0
    total_wait: float = 0.0
    max_latency: float = 0.0

    def as_dict(self) -> dict:
        return {
            "operations": self.operations,
            "retries": dict(self.retries),
            "retries_total": sum(self.retries.values()),
            "deadline_failures": self.deadline_failures,
            "max_latency_s": round(self.max_latency, 6),
        }


def call_with_retry(operation, policy: Ep0OpenPolicy, stats: RetryStats | None = None,
                    retry_errnos=RETRY_ERRNOS, clock=time.monotonic, sleep=time.sleep):
    """Run `operation(remaining_seconds)` until it succeeds, retrying on `retry_errnos`.

    `remaining_seconds` lets a blocking operation bound its own wait. Raises DeadlineExceeded
    when the deadline passes, or the operation's own OSError when it is not retryable.
    """
    stats = stats if stats is not None else RetryStats()
    start = clock()
    retry = 0
    try:
        while True:
            remaining = policy.deadline - (clock() - start)
            if remaining <= 0:
                stats.deadline_failures += 1
                raise DeadlineExceeded(errno.ETIMEDOUT,
                                       f"gave up after {retry} retries in {policy.deadline:g} s")
            try:
                return operation(remaining)
            except OSError as exc:
                if isinstance(exc, DeadlineExceeded) or exc.errno not in retry_errnos:
                    raise
                stats.retries[errno.errorcode.get(exc.errno, str(exc.errno))] += 1
                pause = min(policy.delay(retry), max(0.0, policy.deadline - (clock() - start)))
                stats.total_wait += pause
                sleep(pause)
                retry += 1
    finally:
        stats.operations += 1
        stats.max_latency = max(stats.max_latency, clock() - start)
