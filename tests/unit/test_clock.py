"""Simulated time shared by processes: one spec, the same time everywhere."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import pytest

from fusebox.cli import clock_from_args
from protocols.clock import Clock, ClockSpecError, sim_spec
from simulators._args import clock_from_args as sim_clock_from_args

START = datetime(2026, 1, 15, 16, 0, tzinfo=UTC)


def test_real_clock_follows_the_wall() -> None:
    clock = Clock.parse("real", real=time.time)
    assert not clock.simulated
    assert abs(clock.now().timestamp() - datetime.now(UTC).timestamp()) < 1
    assert clock.real_seconds(10) == 10
    assert Clock.parse(None, real=time.time).spec() == "real"


def test_two_processes_with_one_spec_agree() -> None:
    spec = sim_spec(START, anchor=1000.0, speed=600)
    assert spec == "sim:2026-01-15T16:00:00Z@1000.000x600"
    a = Clock.parse(spec, real=time.time)
    b = Clock(a.start, a.anchor, a.speed, real=lambda: 1010.0)
    a2 = Clock(a.start, a.anchor, a.speed, real=lambda: 1010.0)
    assert b.now() == a2.now() == START + timedelta(seconds=6000)
    assert a.real_seconds(600) == pytest.approx(1.0)
    assert Clock.parse(a.spec(), real=time.time).start == START


def test_env_gives_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processes (fusebox, the simulators) read $FUSEBOX_CLOCK themselves;
    protocols.clock reads no environment."""
    monkeypatch.setenv("FUSEBOX_CLOCK", sim_spec(START, anchor=0, speed=2))
    for from_args in (clock_from_args, sim_clock_from_args):
        assert from_args(argparse.Namespace(clock=None)).speed == 2
        assert from_args(argparse.Namespace(clock="real")).start is None
        assert from_args(argparse.Namespace()).speed == 2


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
        Clock.parse(spec, real=time.time)
