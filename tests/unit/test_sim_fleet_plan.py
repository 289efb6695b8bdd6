"""The fleet gateway's outbox and send plan (``simulators.fleet._plan``) against
the edge's own: the simulators may not import the edge, so the plan is restated
there, and this test drives both through the same random events and compares
every decision, so the two cannot drift apart unnoticed."""

from __future__ import annotations

import random

import pytest

from edge.uplink import SendPlan
from protocols.backoff import Backoff
from simulators.fleet import FleetSendPlan, HeldSeqs


def _plans(seed: int) -> tuple[SendPlan, FleetSendPlan]:
    common = {
        "acked_through": 10,
        "live_from": 40,
        "window": 3,
        "ack_timeout_s": 5.0,
        "backoff": Backoff(1.0, 8.0),
        "linger_s": 0.5,
    }
    edge = SendPlan(rng=random.Random(seed), **common)  # type: ignore[arg-type]
    fleet = FleetSendPlan(rng=random.Random(seed), **common)  # type: ignore[arg-type]
    return edge, fleet


def _state(p: SendPlan | FleetSendPlan, now: float) -> tuple[object, ...]:
    flights = sorted(
        (f.first, f.last, f.sent_at, f.attempt) for f in p.in_flight.values()
    )
    return (
        p.acked_through,
        p.backlog_next,
        p.live_next,
        p.paused_until,
        flights,
        list(p.retry),
        p.has_room,
        round(p.next_wakeup(now), 9),
    )


@pytest.mark.parametrize("seed", range(40))
def test_the_fleet_plan_decides_as_the_edge_plan(seed: int) -> None:
    edge, fleet = _plans(seed)
    events = random.Random(1000 + seed)
    now, next_seq = 0.0, 11
    for _ in range(300):
        now += events.choice([0.0, 0.1, 0.7, 3.0, 6.0])
        kind = events.randrange(8)
        if kind == 0 and edge.has_room:
            last = next_seq + events.randrange(5)
            edge.sent(next_seq, last, now)
            fleet.sent(next_seq, last, now)
            next_seq = last + 1
        elif kind == 1:
            assert edge.expire(now) == fleet.expire(now)
        elif kind in (2, 3) and edge.in_flight:
            first = events.choice(sorted(edge.in_flight))
            last = edge.in_flight[first].last
            through = events.choice([0, first - 1, last])
            assert edge.acked(first, last, through) == fleet.acked(first, through)
        elif kind == 4 and edge.in_flight:
            first = events.choice(sorted(edge.in_flight))
            after = events.choice([0.0, 2.0, 30.0])
            edge.busy(first, edge.in_flight[first].last, after, now)
            fleet.busy(first, after, now)
        elif kind == 5:
            assert len(edge.resend_in_flight(now)) == fleet.resend_in_flight(now)
        elif kind == 6:
            assert edge.due_retry(now) == fleet.due_retry(now)
        elif kind == 7:
            waiting = events.randrange(0, 4)
            assert edge.live_ready(now, waiting, 3) == fleet.live_ready(now, waiting, 3)
        assert _state(edge, now) == _state(fleet, now)


def test_held_seqs_prunes_ranges_and_watermarks() -> None:
    held = HeldSeqs()
    assert held.append(10) == (1, 10)
    assert held.append(5) == (11, 15)
    assert held.prune_range(4, 6) == 3
    assert held.read(1, None, 100) == [1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    assert held.read(2, 12, 4) == [2, 3, 7, 8]
    assert held.prune_range(4, 6) == 0  # an ack delivered twice prunes nothing
    assert held.prune_through(8) == 5
    assert (held.count, held.oldest, held.acked_through) == (7, 9, 8)
    assert held.holds(9) and not held.holds(8) and not held.holds(16)
    assert held.remove(12, 13) == 2
    assert held.read(1, None, 100) == [9, 10, 11, 14, 15]
    assert held.append(1) == (16, 16) and held.last_seq == 16
    assert held.prune_through(100) == 6 and held.count == 0 and held.oldest is None


def test_held_seqs_matches_a_plain_set() -> None:
    rng = random.Random(7)
    held, model = HeldSeqs(), set[int]()
    for _ in range(2000):
        if rng.random() < 0.3:
            first, last = held.append(rng.randrange(1, 20))
            model.update(range(first, last + 1))
        else:
            a = rng.randrange(1, held.last_seq + 2)
            b = a + rng.randrange(0, 30)
            assert held.remove(a, b) == len(model & set(range(a, b + 1)))
            model -= set(range(a, b + 1))
        assert held.count == len(model)
        assert held.read(1, None, 10**6) == sorted(model)
