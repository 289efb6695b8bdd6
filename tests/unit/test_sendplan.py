"""The uplink's sender state machine (``edge.uplink.SendPlan``) and ``Backoff``."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.uplink import SendPlan
from protocols.backoff import Backoff, Reconnect


class _FixedRandom(random.Random):
    """``random()`` returns ``fraction``; ``uniform(a, b)`` the same point of [a, b]."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def random(self) -> float:
        return self.fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def _plan(
    *,
    acked_through: int = 0,
    live_from: int = 1,
    window: int = 3,
    ack_timeout_s: float = 10.0,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
) -> SendPlan:
    return SendPlan(
        acked_through=acked_through,
        live_from=live_from,
        window=window,
        ack_timeout_s=ack_timeout_s,
        backoff=backoff or Backoff(1.0, 8.0),
        rng=rng or random.Random(7),
    )


# ----------------------------------------------------------------------- window


def test_start_positions() -> None:
    plan = _plan(acked_through=100, live_from=501)
    assert (plan.backlog_next, plan.live_next) == (101, 501)
    # live_from at or below the watermark starts right after it
    plan = _plan(acked_through=100, live_from=50)
    assert (plan.backlog_next, plan.live_next) == (101, 101)


def test_window_limits_batches_in_flight() -> None:
    plan = _plan(window=3)
    assert plan.has_room
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=0.0)
    assert plan.has_room
    plan.sent(21, 30, now=0.0)
    assert not plan.has_room
    assert sorted(plan.in_flight) == [1, 11, 21]
    assert plan.acked(11, 20, stored_through=0) is True
    assert plan.has_room
    assert sorted(plan.in_flight) == [1, 21]


# ------------------------------------------------------------------------- acks


def test_ack_removes_in_flight_and_advances_watermark() -> None:
    plan = _plan(window=4)
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=0.0)
    plan.sent(21, 30, now=0.0)

    assert plan.acked(1, 10, stored_through=10) is True
    assert plan.acked_through == 10
    assert sorted(plan.in_flight) == [11, 21]


def test_ack_watermark_drops_in_flight_and_retries_below_it() -> None:
    plan = _plan(window=8, ack_timeout_s=5.0)
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=0.0)
    assert plan.expire(now=5.0) == [(1, 10), (11, 20)]  # both become retries
    plan.sent(21, 30, now=6.0)
    plan.sent(31, 40, now=6.0)
    plan.sent(41, 50, now=6.0)

    # live batch 41..50 acked; the cloud has everything through 40 from elsewhere
    assert plan.acked(41, 50, stored_through=40) is True
    assert plan.acked_through == 40
    assert plan.in_flight == {}
    assert plan.retry == []


def test_ack_watermark_keeps_what_reaches_above_it() -> None:
    plan = _plan(window=8, ack_timeout_s=5.0)
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=0.0)
    plan.expire(now=5.0)
    plan.sent(21, 30, now=6.0)
    plan.sent(31, 40, now=6.0)

    assert plan.acked(21, 30, stored_through=15) is True
    assert plan.acked_through == 15
    assert sorted(plan.in_flight) == [31]
    assert [(r[1], r[2]) for r in plan.retry] == [(11, 20)]


def test_stale_ack_matches_nothing_and_never_lowers_watermark() -> None:
    plan = _plan(acked_through=50, live_from=51)
    plan.sent(51, 60, now=0.0)
    assert plan.acked(1, 10, stored_through=10) is False
    assert plan.acked_through == 50
    assert sorted(plan.in_flight) == [51]
    # an unmatched ack still moves the watermark up when it is higher
    assert plan.acked(200, 210, stored_through=55) is False
    assert plan.acked_through == 55
    assert sorted(plan.in_flight) == [51]  # 51..60 reaches above 55: kept


# ----------------------------------------------------------------------- expiry


def test_expire_moves_overdue_batches_to_retry() -> None:
    plan = _plan(window=4, ack_timeout_s=10.0, rng=_FixedRandom(0.5))
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=4.0)

    assert plan.expire(now=9.999) == []
    assert plan.expire(now=10.0) == [(1, 10)]  # exactly ack_timeout_s is overdue
    assert sorted(plan.in_flight) == [11]
    # attempt 0: delay is half of ceiling(0) = 1.0 s with this rng
    assert plan.retry == [(10.5, 1, 10, 1)]
    assert plan.has_room


def test_retry_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(1.0, 8.0)
    plan = _plan(window=1, ack_timeout_s=10.0, backoff=backoff, rng=_FixedRandom(1.0))
    now = 0.0
    attempt = 0
    delays = []
    for _ in range(6):
        plan.sent(1, 10, now, attempt)
        now += 10.0
        assert plan.expire(now) == [(1, 10)]
        ((at, first, last, attempt),) = plan.retry
        delays.append(at - now)
        assert plan.due_retry(at - 0.001) is None
        assert plan.due_retry(at) == (first, last, attempt)
        assert plan.retry == []
        now = at
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert attempt == 6


@given(seed=st.integers(0, 2**32), attempt=st.integers(0, 200))
def test_retry_delay_never_exceeds_the_backoff_ceiling(seed: int, attempt: int) -> None:
    backoff = Backoff(0.5, 30.0)
    plan = _plan(ack_timeout_s=1.0, backoff=backoff, rng=random.Random(seed))
    plan.sent(5, 9, now=100.0, attempt=attempt)
    plan.expire(now=101.0)
    ((at, first, last, next_attempt),) = plan.retry
    assert 101.0 <= at <= 101.0 + backoff.ceiling(attempt)
    assert (first, last, next_attempt) == (5, 9, attempt + 1)


# ------------------------------------------------------------------------- busy


def test_busy_pauses_and_schedules_a_resend() -> None:
    plan = _plan(window=4, rng=_FixedRandom(1.0))  # the largest jitter: +25 %
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=0.0)

    plan.busy(1, 10, retry_after_s=4.0, now=2.0)

    assert plan.paused_until == 7.0  # 2 + 4 * 1.25
    assert sorted(plan.in_flight) == [11]
    assert plan.retry == [(7.0, 1, 10, 1)]
    assert plan.due_retry(6.999) is None
    assert plan.due_retry(7.0) == (1, 10, 1)
    assert plan.due_retry(7.0) is None


@given(seed=st.integers(0, 2**32), retry_after_s=st.floats(0.0, 3600.0))
def test_busy_jitter_is_at_most_a_quarter(seed: int, retry_after_s: float) -> None:
    plan = _plan(rng=random.Random(seed))
    plan.sent(1, 10, now=0.0)
    plan.busy(1, 10, retry_after_s=retry_after_s, now=0.0)
    wait = plan.paused_until
    assert retry_after_s <= wait <= retry_after_s * 1.25
    assert plan.retry == [(plan.paused_until, 1, 10, 1)]


def test_stale_busy_only_pauses() -> None:
    plan = _plan(rng=_FixedRandom(0.0))
    plan.sent(11, 20, now=0.0)
    plan.busy(1, 10, retry_after_s=3.0, now=1.0)  # 1..10 is not in flight
    assert plan.paused_until == 4.0
    assert plan.retry == []
    assert sorted(plan.in_flight) == [11]


def test_busy_never_shortens_a_pause() -> None:
    plan = _plan(rng=_FixedRandom(0.0))
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=0.0)
    plan.busy(1, 10, retry_after_s=30.0, now=0.0)
    plan.busy(11, 20, retry_after_s=1.0, now=0.0)
    assert plan.paused_until == 30.0
    # the second range was due at 1.0 but the pause holds it back
    assert plan.due_retry(1.0) is None
    assert plan.due_retry(29.9) is None
    assert plan.due_retry(30.0) in {(1, 10, 1), (11, 20, 1)}
    assert plan.due_retry(30.0) in {(1, 10, 1), (11, 20, 1)}
    assert plan.due_retry(30.0) is None


def test_due_retry_respects_the_pause_for_expired_batches() -> None:
    plan = _plan(ack_timeout_s=5.0, rng=_FixedRandom(0.0))
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=0.0)
    plan.busy(11, 20, retry_after_s=20.0, now=1.0)  # paused until 21
    assert plan.expire(now=5.0) == [(1, 10)]  # retry due at 5.0 (zero jitter)
    assert plan.retry[0] == (21.0, 11, 20, 1)
    assert plan.retry[1] == (5.0, 1, 10, 1)
    assert plan.due_retry(20.0) is None
    assert plan.due_retry(21.0) == (11, 20, 1)
    assert plan.due_retry(21.0) == (1, 10, 1)


def test_rejected_removes_from_flight() -> None:
    plan = _plan()
    plan.sent(1, 10, now=0.0)
    assert plan.rejected(1) is True
    assert plan.rejected(1) is False
    assert plan.in_flight == {}


def test_next_wakeup() -> None:
    plan = _plan(ack_timeout_s=10.0, rng=_FixedRandom(0.0))
    assert plan.next_wakeup(now=0.0) == 1.0  # nothing pending: poll once a second
    plan.sent(1, 10, now=0.0)
    assert plan.next_wakeup(now=3.0) == 7.0
    plan.busy(1, 10, retry_after_s=2.0, now=3.0)
    assert plan.next_wakeup(now=3.0) == 2.0
    assert plan.next_wakeup(now=5.5) == 1.0  # everything already due


# ---------------------------------------------------------------------- backoff


# ----------------------------------------------------------------------- linger


def test_live_records_linger_then_go_together() -> None:
    plan = _plan()
    plan.linger_s = 0.5
    assert plan.live_ready(now=10.0, waiting=0, batch_max=100) is False
    assert plan.live_since is None
    # three meters' messages arrive over 0.4 s: they wait for each other
    assert plan.live_ready(now=10.0, waiting=3, batch_max=100) is False
    assert plan.live_ready(now=10.2, waiting=7, batch_max=100) is False
    assert plan.next_wakeup(now=10.2) == pytest.approx(0.3)
    assert plan.live_ready(now=10.4, waiting=12, batch_max=100) is False
    # 0.5 s after the first one arrived, all twelve go in one batch
    assert plan.live_ready(now=10.5, waiting=12, batch_max=100) is True
    plan.live_taken()
    assert plan.live_since is None
    # the next record lingers anew from its own arrival
    assert plan.live_ready(now=10.6, waiting=1, batch_max=100) is False
    assert plan.live_ready(now=11.1, waiting=1, batch_max=100) is True


def test_a_full_batch_does_not_linger() -> None:
    plan = _plan()
    plan.linger_s = 0.5
    assert plan.live_ready(now=0.0, waiting=99, batch_max=100) is False
    assert plan.live_ready(now=0.1, waiting=100, batch_max=100) is True


def test_no_linger_sends_at_once() -> None:
    plan = _plan()
    assert plan.linger_s == 0.0
    assert plan.live_ready(now=3.0, waiting=1, batch_max=100) is True


# ------------------------------------------------------------- ingest presence


def test_resend_in_flight_makes_every_batch_due_now_keeping_its_attempt() -> None:
    plan = _plan(window=4, ack_timeout_s=30.0)
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=1.0, attempt=2)
    # without the presence signal these would wait for the 30 s timeout
    assert plan.due_retry(now=2.0) is None
    assert plan.resend_in_flight(now=2.0) == [(1, 10), (11, 20)]
    assert plan.in_flight == {}
    assert plan.has_room
    assert plan.due_retry(now=2.0) == (1, 10, 0)
    assert plan.due_retry(now=2.0) == (11, 20, 2)
    assert plan.due_retry(now=2.0) is None


def test_resend_in_flight_respects_a_busy_pause() -> None:
    plan = _plan(rng=_FixedRandom(0.0))
    plan.sent(1, 10, now=0.0)
    plan.sent(11, 20, now=0.0)
    plan.busy(1, 10, retry_after_s=5.0, now=1.0)
    assert plan.resend_in_flight(now=2.0) == [(11, 20)]
    assert plan.due_retry(now=2.0) is None  # paused until 6.0
    # the batch resent for presence was due first; the busy one follows
    assert plan.due_retry(now=6.0) == (11, 20, 0)
    assert plan.due_retry(now=6.0) == (1, 10, 1)


def test_resend_in_flight_with_nothing_in_flight_changes_nothing() -> None:
    plan = _plan()
    assert plan.resend_in_flight(now=1.0) == []
    assert plan.retry == []


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    b = Backoff(0.5, 60.0)
    assert [b.ceiling(n) for n in range(9)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        60.0,
        60.0,
    ]
    assert b.ceiling(10_000) == 60.0  # no overflow for absurd attempts


@given(
    seed=st.integers(0, 2**32),
    attempt=st.integers(0, 10_000),
    base_s=st.floats(0.0, 10.0),
    cap_s=st.floats(0.0, 600.0),
)
def test_backoff_delay_within_zero_and_ceiling(
    seed: int, attempt: int, base_s: float, cap_s: float
) -> None:
    b = Backoff(base_s, cap_s)
    delay = b.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= b.ceiling(attempt) <= cap_s


def test_backoff_zero_base_is_instant() -> None:
    assert Backoff(0.0, 60.0).delay(30, random.Random(1)) == 0.0


@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_backoff_delay_is_full_jitter(fraction: float) -> None:
    assert Backoff(1.0, 60.0).delay(3, _FixedRandom(fraction)) == 8.0 * fraction


# -------------------------------------------------------------------- reconnect


def test_reconnect_waits_longer_per_failure_and_says_so_once() -> None:
    rc = Reconnect(Backoff(0.5, 4.0))
    top = _FixedRandom(1.0)  # always the ceiling
    delays = [rc.failed(top) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert rc.failures == 6 and not rc.first_failure
    assert rc.succeeded() is True  # that ended an outage
    assert (rc.failures, rc.outages) == (0, 1)
    assert rc.succeeded() is False  # still up: nothing ended
    assert rc.failed(top) == 0.5  # a new outage starts from the shortest wait
    assert rc.first_failure


def test_reconnect_first_failure_only_on_the_first_of_a_run() -> None:
    rc = Reconnect(Backoff(1.0, 8.0))
    rng = random.Random(3)
    firsts = []
    for _ in range(4):
        rc.failed(rng)
        firsts.append(rc.first_failure)
    assert firsts == [True, False, False, False]
