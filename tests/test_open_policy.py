"""The ep0 open policy's own logic, with an injected fake opener and a fake clock."""

import errno

import pytest

from gadgetd.open_policy import DeadlineExceeded, Ep0OpenPolicy, RetryStats, call_with_retry


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def opener(failures, clock=None, cost=0.0):
    """Fails with each errno in `failures`, then returns fd 7; each attempt costs `cost` s."""
    seen = []

    def attempt(remaining):
        seen.append(remaining)
        if clock:
            clock.now += cost
        if len(seen) <= len(failures):
            raise OSError(failures[len(seen) - 1], "fake")
        return 7

    attempt.seen = seen
    return attempt


def test_retries_eagain_eintr_ebusy_and_counts_them():
    clock, stats = FakeClock(), RetryStats()
    op = opener([errno.EAGAIN, errno.EAGAIN, errno.EINTR, errno.EBUSY], clock)
    fd = call_with_retry(op, Ep0OpenPolicy("nonblock"), stats, clock=clock, sleep=clock.sleep)
    assert fd == 7
    assert len(op.seen) == 5
    assert stats.retries == {"EAGAIN": 2, "EINTR": 1, "EBUSY": 1}
    assert stats.as_dict()["retries_total"] == 4
    assert stats.operations == 1


def test_backoff_is_exponential_and_bounded():
    policy = Ep0OpenPolicy(first_delay=0.001, max_delay=0.01)
    assert [policy.delay(n) for n in range(6)] == [0.001, 0.002, 0.004, 0.008, 0.01, 0.01]
    assert policy.delay(10_000) == 0.01


def test_sleeps_follow_the_backoff():
    clock = FakeClock()
    policy = Ep0OpenPolicy(first_delay=0.001, max_delay=0.004)
    call_with_retry(opener([errno.EAGAIN] * 4, clock), policy, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [0.001, 0.002, 0.004, 0.004]


def test_deadline_expires_and_is_counted():
    clock, stats = FakeClock(), RetryStats()
    policy = Ep0OpenPolicy(first_delay=0.01, max_delay=0.1, deadline=1.0)
    with pytest.raises(DeadlineExceeded) as exc:
        call_with_retry(opener([errno.EAGAIN] * 10_000, clock), policy, stats,
                        clock=clock, sleep=clock.sleep)
    assert exc.value.errno == errno.ETIMEDOUT
    assert stats.deadline_failures == 1
    assert clock.now == pytest.approx(1.0)  # never sleeps past the deadline
    assert stats.max_latency == pytest.approx(1.0)


def test_remaining_time_is_passed_to_the_operation():
    clock = FakeClock()
    op = opener([errno.EAGAIN, errno.EAGAIN], clock, cost=0.25)
    call_with_retry(op, Ep0OpenPolicy(deadline=2.0, first_delay=0.0), clock=clock,
                    sleep=clock.sleep)
    assert op.seen == pytest.approx([2.0, 1.75, 1.5])


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EACCES, errno.ENODEV, errno.EIO])
def test_other_errors_are_not_retried(code):
    stats = RetryStats()
    op = opener([code])
    with pytest.raises(OSError) as exc:
        call_with_retry(op, Ep0OpenPolicy(), stats, sleep=lambda s: None)
    assert exc.value.errno == code
    assert len(op.seen) == 1 and not stats.retries


def test_custom_retry_set_excludes_ebusy():
    op = opener([errno.EBUSY])
    with pytest.raises(OSError):
        call_with_retry(op, Ep0OpenPolicy(), retry_errnos={errno.EAGAIN}, sleep=lambda s: None)


def test_deadline_from_a_blocking_operation_is_not_retried():
    def blocked(remaining):
        raise DeadlineExceeded(errno.ETIMEDOUT, "still waiting")

    with pytest.raises(DeadlineExceeded):
        call_with_retry(blocked, Ep0OpenPolicy(), sleep=lambda s: None)


def test_stats_accumulate_over_operations():
    clock, stats = FakeClock(), RetryStats()
    for _ in range(3):
        call_with_retry(opener([errno.EAGAIN], clock, cost=0.1), Ep0OpenPolicy(), stats,
                        clock=clock, sleep=clock.sleep)
    assert stats.operations == 3 and stats.retries["EAGAIN"] == 3
