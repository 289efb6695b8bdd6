"""The pure parts of issue 11's admission control: ``AdmissionPlan`` (caps per
class, shedding by priority, retry-after), ``classify``, the hashing pool's
``HashSlots`` and the intake's submission ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.api.admission import (
    AdmissionPlan,
    Admit,
    ClassLimits,
    Priority,
    Refuse,
    classify,
    default_limits,
)
from cloud.intake import Submission
from cloud.passwords import HashSlots


def _plan(total: int = 8) -> AdmissionPlan:
    return AdmissionPlan(
        {
            Priority.READ: ClassLimits(6, 8, 10.0, 1.0),
            Priority.SUBMIT: ClassLimits(4, 7, 10.0, 2.0),
            Priority.LOGIN: ClassLimits(2, 7, 15.0, 2.5),
            Priority.INSTALL: ClassLimits(2, 6, 30.0, 5.0),
            Priority.BULK: ClassLimits(1, 4, 60.0, 10.0),
        },
        total,
    )


def test_a_class_at_its_cap_is_refused_with_retry_after_and_others_still_served() -> (
    None
):
    plan = _plan()
    assert isinstance(plan.admit(Priority.LOGIN), Admit)
    assert isinstance(plan.admit(Priority.LOGIN), Admit)
    refused = plan.admit(Priority.LOGIN)
    assert isinstance(refused, Refuse)
    assert refused.status == 503 and refused.retry_after_s == 3  # 2.5 s, rounded up
    assert "2 login requests in flight" in refused.reason
    assert isinstance(plan.admit(Priority.READ), Admit)
    plan.release(Priority.LOGIN)
    assert isinstance(plan.admit(Priority.LOGIN), Admit)
    assert plan.figures()["login"] == {"in_flight": 2, "admitted": 3, "refused": 1}


def test_bulk_is_shed_first_and_reads_last() -> None:
    plan = _plan()
    for _ in range(4):
        assert isinstance(plan.admit(Priority.READ), Admit)
    # 4 in flight: bulk (below 4) is shed, installers (below 6) are not
    bulk = plan.admit(Priority.BULK)
    assert isinstance(bulk, Refuse) and "shed first" in bulk.reason
    assert isinstance(plan.admit(Priority.INSTALL), Admit)
    assert isinstance(plan.admit(Priority.INSTALL), Admit)
    assert isinstance(plan.admit(Priority.SUBMIT), Admit)  # 6 < 7
    assert isinstance(plan.admit(Priority.SUBMIT), Refuse)  # 7 in flight
    assert isinstance(plan.admit(Priority.READ), Admit)  # reads fill it: 8
    assert isinstance(plan.admit(Priority.READ), Refuse)  # the process cap
    assert plan.busy == 8


def test_release_without_admit_is_a_bug() -> None:
    with pytest.raises(ValueError, match="no read request"):
        _plan().release(Priority.READ)


@given(
    st.lists(st.tuples(st.sampled_from(list(Priority)), st.booleans()), max_size=200)
)
def test_in_flight_never_exceeds_any_cap(steps: list[tuple[Priority, bool]]) -> None:
    plan = AdmissionPlan(default_limits(16), 16)
    held: list[Priority] = []
    for priority, release in steps:
        if release and priority in held:
            held.remove(priority)
            plan.release(priority)
        elif isinstance(plan.admit(priority), Admit):
            held.append(priority)
        assert plan.busy == len(held) <= 16
        for p, lim in plan.limits.items():
            assert plan.in_flight.get(p, 0) <= lim.max_in_flight


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/healthz", None),
        ("GET", "/app/static/app.js", None),
        ("POST", "/v1/auth/login", Priority.LOGIN),
        ("POST", "/v1/auth/password", Priority.LOGIN),
        ("POST", "/login", Priority.LOGIN),
        ("GET", "/login", Priority.READ),
        ("POST", "/v1/gateways/gw-1/meters/m/readings", Priority.SUBMIT),
        ("GET", "/v1/gateways/gw-1/meters/m/readings", Priority.READ),
        ("GET", "/v1/gateways/gw-1/submissions/x", Priority.READ),
        ("GET", "/v1/sites", Priority.READ),
        ("PUT", "/v1/gateways/gw-1/chargers/CP/preferences", Priority.READ),
        ("POST", "/v1/claims", Priority.INSTALL),
        ("GET", "/v1/gateways/gw-1/commissioning", Priority.INSTALL),
        ("POST", "/app/install/claim", Priority.INSTALL),
        ("GET", "/v1/fleet", Priority.BULK),
        ("GET", "/v1/gateways/gw-1/readings.csv", Priority.BULK),
        ("PUT", "/v1/tariffs/t/prices", Priority.BULK),
        ("GET", "/openapi.json", Priority.BULK),
    ],
)
def test_classify(method: str, path: str, expected: Priority | None) -> None:
    assert classify(method, path) == expected


def test_default_limits_keep_the_order_of_priorities() -> None:
    lim = default_limits(64)
    shed_at = [lim[p].admit_below_total for p in Priority]
    assert shed_at == sorted(shed_at, reverse=True)
    assert lim[Priority.READ].admit_below_total == 64


def test_hash_slots_refuse_past_workers_and_queue() -> None:
    slots = HashSlots(workers=2, queue_per_worker=1)
    assert slots.capacity == 4
    assert all(slots.take() for _ in range(4))
    assert not slots.take() and slots.refused == 1
    slots.give_back()
    assert slots.take()
    with pytest.raises(ValueError, match="no hash"):
        HashSlots(1, 0).give_back()


def test_submission_ids_same_reading_same_id_else_another() -> None:
    now = datetime(2026, 3, 31, 9, tzinfo=UTC)
    ts = now - timedelta(hours=1)
    a = Submission.new("gw-1", "m", ts, 1000.0, "k1", 7, now)
    # the same reading later, by the same or another account: the same id
    assert Submission.new("gw-1", "m", ts, 1000.0, "k1", 8, now).id == a.id
    # the same key with another value, or another gateway: another id
    assert Submission.new("gw-1", "m", ts, 1001.0, "k1", 7, now).id != a.id
    assert Submission.new("gw-2", "m", ts, 1000.0, "k1", 7, now).id != a.id
    assert Submission.new("gw-1", "m", ts, 1000.0, None, 7, now).id != a.id
    assert Submission.from_bytes(a.to_bytes()) == a
    with pytest.raises((ValueError, KeyError)):
        Submission.from_bytes(b'{"id": "not-a-uuid"}')
