"""``edge.policy.ChargingPolicy``: the controller's decision without I/O, with worked
numbers (the shell that applies it is in tests/component/test_controller.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge.config import SiteConfig
from edge.ocpp.config import ChargerConfig
from edge.policy import ChargerNow, ChargingPolicy, SiteNow, Want
from protocols.lease import SLOT_MS, Lease

T0 = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)


class _FixedRandom(random.Random):
    """``uniform(a, b)`` returns the point ``fraction`` of the way from a to b."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def site(
    import_w: float | None = None, at: datetime | None = T0, **config: Any
) -> SiteNow:
    settings: dict[str, Any] = {
        "timezone": "UTC",
        "meter": "site",
        "default_window": "23:30-05:30",
        **config,
    }
    return SiteNow(
        SiteConfig(**settings), None if import_w is None else (import_w,), at
    )


def charger(cid: str = "CP1", max_a: float = 32, **now: Any) -> ChargerNow:
    facts: dict[str, Any] = {"online": True, "charging": True, "power_w": 0.0, **now}
    config = ChargerConfig.model_validate(
        {"id": cid, "password": "x" * 16, "max_current_a": max_a}
    )
    return ChargerNow(config, **facts)


def lease(valid_until: datetime, **entry: Any) -> Lease:
    start = int(T0.timestamp() * 1000)
    return Lease.model_validate(
        {
            "gw": "gw",
            "version": 1,
            "issued_ms": start - 1000,
            "valid_until_ms": int(valid_until.timestamp() * 1000),
            "site": {"main_fuse_a": 60},
            "slots_start_ms": start,
            # 30 p until 23:00, 5 p after
            "price_p_per_kwh": [30.0] * 12 + [5.0] * 12,
            "chargers": [
                {
                    "charger_id": "CP1",
                    "periods": [
                        {
                            "start_ms": start + SLOT_MS,
                            "end_ms": start + 3 * SLOT_MS,
                            "limit_w": 3680,
                        }
                    ],
                    "request": {
                        "energy_needed_kwh": 7.36,
                        "ready_by_ms": start + 40 * SLOT_MS,
                        "max_power_w": 7360,
                        "register_wh_at_request": 1000.0,
                    },
                    **entry,
                }
            ],
        }
    )


# -------------------------------------------------------------------- the plan


def test_a_valid_lease_gives_its_period_in_amps() -> None:
    policy = ChargingPolicy()
    chargers = {"CP1": charger()}
    valid = lease(T0 + timedelta(hours=3))
    # 3,680 W on one phase at 230 V is 16 A from 17:30 to 18:30, 0 outside
    at = T0 + timedelta(minutes=45)
    assert policy.planned("CP1", at, chargers, site(), valid, {}) == (
        16.0,
        "applied",
        "",
    )
    assert policy.planned("CP1", T0, chargers, site(), valid, {}) == Want(
        0.0, "applied", ""
    )
    off = lease(T0 + timedelta(hours=3), mode="off")
    assert policy.planned("CP1", at, chargers, site(), off, {})[:2] == (0.0, "applied")


def test_boost_wins_until_its_time_is_up() -> None:
    policy = ChargingPolicy()
    chargers = {"CP1": charger()}
    until = T0 + timedelta(minutes=30)
    boost = {"CP1": until}
    assert policy.planned("CP1", T0, chargers, site(), None, boost)[:2] == (
        32.0,
        "boost",
    )
    # past its time: the default window (17:30 is outside it)
    late = policy.planned("CP1", until, chargers, site(), None, boost)
    assert late == (0.0, "default_window", "waiting for the off-peak window")


def test_the_default_window_starts_after_the_random_delay() -> None:
    # 23:30-05:30 with up to 1,800 s of delay; drawn at 0.5: from 23:45:00
    policy = ChargingPolicy(_FixedRandom(0.5))
    cfg = charger().config
    here = site(random_delay_max_s=1800).config
    night = T0.replace(hour=23, minute=45)
    assert policy.default_window("CP1", cfg, here, night - timedelta(seconds=1))[0] == 0
    assert policy.default_window("CP1", cfg, here, night) == (
        32.0,
        "default_window",
        "from 23:45:00",
    )
    # the same night's window after midnight, with the same delay; over at 05:30
    assert policy.default_window("CP1", cfg, here, night + timedelta(hours=5))[0] == 32
    assert policy.default_window("CP1", cfg, here, night + timedelta(hours=6))[0] == 0
    assert policy.memory_of("CP1").window_delay[night.date()] == 900.0


def test_an_expired_lease_is_replanned_less_what_the_register_counted() -> None:
    # asked 44.16 kWh at 1,000 Wh: six hours at 7,360 W, the whole 5 p night
    # (23:00-05:00) at full power; at 23:00 the lease has long expired
    request = {
        "energy_needed_kwh": 44.16,
        "ready_by_ms": int((T0 + timedelta(hours=20)).timestamp() * 1000),
        "max_power_w": 7360,
        "register_wh_at_request": 1000.0,
    }
    expired = lease(T0 + timedelta(hours=1), request=request)
    at = T0.replace(hour=23)

    def wanted(register_wh: float, now: datetime = at) -> Want:
        chargers = {"CP1": charger(register_wh=register_wh)}
        return ChargingPolicy().planned("CP1", now, chargers, site(), expired, {})

    # nothing given yet: 32 A now
    assert wanted(1000.0) == (32.0, "local_plan", "")
    # 7.36 kWh given: 36.8 kWh fit the six cheap hours below full power
    assert 6.0 <= wanted(8360.0)[0] < 32.0
    # all given: nothing more
    assert wanted(45160.0) == (0.0, "local_plan", "")
    # at 19:00 it is dear: nothing now whatever is needed
    assert wanted(1000.0, T0 + timedelta(hours=2)) == (0.0, "local_plan", "")


# ------------------------------------------------------------------ the guard


def test_two_evs_share_what_the_house_leaves() -> None:
    # 40 A fuse, no margin, 10 A of house (2,300 W), both EVs idle: 30 A to share,
    # 15 A each although they want 32 A and 16 A
    policy = ChargingPolicy()
    here = site(2300.0, main_fuse_a=40, margin_a=0)
    chargers = {"CP1": charger("CP1"), "CP2": charger("CP2", max_a=16)}
    wanted = {"CP1": Want(32.0, "applied", ""), "CP2": Want(16.0, "applied", "")}
    out = policy.guard(wanted, chargers, here, T0)
    assert out == {
        "CP1": (15.0, "fuse_limited", True),
        "CP2": (15.0, "fuse_limited", True),
    }


def test_a_spike_throttles_to_the_fuse_minus_the_rest_of_the_house() -> None:
    # 60 A fuse, 2 A margin; the meter sees 1 kW house + 8 kW spike + the EV's
    # 7,360 W: the house is 9,000 W = 39.13 A, so the EV may have 18.87 A -> 18.8
    policy = ChargingPolicy()
    here = site(1000 + 8000 + 7360.0, main_fuse_a=60, margin_a=2)
    chargers = {"CP1": charger(power_w=7360.0)}
    out = policy.guard({"CP1": Want(32.0, "applied", "")}, chargers, here, T0)
    assert out == {"CP1": (18.8, "fuse_limited", True)}


def test_stale_or_missing_meter_data_means_the_safe_current() -> None:
    policy = ChargingPolicy()
    chargers = {"CP1": charger()}
    wanted = {"CP1": Want(32.0, "boost", "")}
    stale = site(100.0, at=T0, stale_after_s=30, safe_current_a=6)
    assert policy.guard(wanted, chargers, stale, T0 + timedelta(seconds=29)) == {
        "CP1": (32.0, None, False)
    }
    assert policy.guard(wanted, chargers, stale, T0 + timedelta(seconds=31)) == {
        "CP1": (6.0, "safe_current", True)
    }
    no_meter = site(meter=None, safe_current_a=8)
    low = {"CP1": Want(5.0, "applied", "")}
    assert policy.guard(low, chargers, no_meter, T0) == {"CP1": (5.0, None, False)}


# ----------------------------------------------------------------- hysteresis


def test_a_raise_after_the_fuse_waits_and_takes_the_least_headroom_seen() -> None:
    policy = ChargingPolicy()
    here = site(raise_hold_s=30)
    # held at 15 A by the guard; headroom for 20 A, then only 18 A, then 20 A again
    assert policy.hysteresis("CP1", 20.0, 15.0, True, T0, here) == 15.0
    at10 = T0 + timedelta(seconds=10)
    assert policy.hysteresis("CP1", 18.0, 15.0, True, at10, here) == 15.0
    at31 = T0 + timedelta(seconds=31)
    assert policy.hysteresis("CP1", 20.0, 15.0, True, at31, here) == 18.0
    # lowering never waits; a raise the plan makes (not the guard) neither
    assert policy.hysteresis("CP1", 5.0, 15.0, True, at31, here) == 5.0
    assert policy.hysteresis("CP1", 32.0, 15.0, False, at31, here) == 32.0


# ---------------------------------------------------------------- one decision


def test_decide_reports_every_charger_and_ends_boosts_with_the_session() -> None:
    policy = ChargingPolicy()
    chargers = {
        "CP1": charger("CP1"),
        "CP2": charger("CP2", charging=False),
        "CP3": charger("CP3", online=False),
    }
    boosts: dict[str, datetime | None] = {"CP1": None, "CP2": None}
    here = site(2300.0, main_fuse_a=40, margin_a=0)
    out = policy.decide(T0, chargers, here, None, boosts)
    assert out.boosts_ended == ("CP2",)
    assert out.fuse_held == {"CP1": True}
    d = out.decisions
    assert list(d) == ["CP3", "CP1"]
    assert (d["CP3"].state, d["CP3"].limit_a) == ("not_connected", 0.0)
    # boost wants 32 A; the fuse leaves 30 A: 30 A, 6,900 W, planned 32 A
    assert (d["CP1"].state, d["CP1"].limit_a) == ("fuse_limited", 30.0)
    assert d["CP1"].limit_w == pytest.approx(6900.0)
    assert d["CP1"].planned_a == 32.0


def test_decide_holds_a_throttled_charger_while_headroom_is_young() -> None:
    policy = ChargingPolicy()
    here = site(2300.0, main_fuse_a=40, margin_a=0, raise_hold_s=30)
    # the charger holds 15 A for the fuse; now there is room for 30 A
    held = {"CP1": charger(applied_a=15.0, applied_for_fuse=True)}
    first = policy.decide(T0, held, here, None, {"CP1": None})
    assert (first.decisions["CP1"].state, first.decisions["CP1"].limit_a) == (
        "fuse_limited",
        15.0,
    )
    assert first.fuse_held == {"CP1": True}
    later = policy.decide(T0 + timedelta(seconds=30), held, here, None, {"CP1": None})
    assert later.decisions["CP1"].limit_a == 30.0
