"""Simulated time shared by processes: one spec, the same time everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from protocols.clock import Clock, ClockSpecError, clock_from_env, sim_spec

START = datetime(2026, 1, 15, 16, 0, tzinfo=UTC)


def test_real_clock_follows_the_wall() -> None:
    clock = Clock.parse("real")
    assert not clock.simulated
    assert abs(clock.now().timestamp() - datetime.now(UTC).timestamp()) < 1
    assert clock.real_seconds(10) == 10
    assert Clock.parse(None).spec() == "real"


def test_two_processes_with_one_spec_agree() -> None:
    spec = sim_spec(START, anchor=1000.0, speed=600)
    assert spec == "sim:2026-01-15T16:00:00Z@1000.000x600"
    a = Clock.parse(spec)
    b = Clock(a.start, a.anchor, a.speed, real=lambda: 1010.0)
    a2 = Clock(a.start, a.anchor, a.speed, real=lambda: 1010.0)
    assert b.now() == a2.now() == START + timedelta(seconds=6000)
    assert a.real_seconds(600) == pytest.approx(1.0)
    assert Clock.parse(a.spec()).start == START


def test_env_gives_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSEBOX_CLOCK", sim_spec(START, anchor=0, speed=2))
    assert clock_from_env().speed == 2
    assert clock_from_env("real").start is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fast", "is not 'real'"),
        ("sim:2026-01-15T16:00:00@10x60", "needs a zone"),
        ("sim:yesterday@10x60", "not ISO 8601"),
        ("sim:2026-01-15T16:00:00Z@10x0", "must be in"),
        ("sim:2026-01-15T16:00:00Z@10x1000000", "must be in"),
    ],
)
def test_bad_specs_say_what_is_expected(spec: str, message: str) -> None:
    with pytest.raises(ClockSpecError, match=message):
        Clock.parse(spec)
