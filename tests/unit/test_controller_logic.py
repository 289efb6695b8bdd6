"""The controller's decisions with a stand-in for the OCPP server (the real server
and charger are in tests/component/test_controller.py): the default off-peak
window with its random delay, the local replan when the lease runs out, mode off,
the safe current without a site meter, and hysteresis."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge.config import EdgeConfig
from edge.controller import Controller
from edge.ocpp.server import ChargerState
from protocols.clock import Clock
from protocols.contract import pack
from protocols.lease import Lease
from protocols.readings import Reading

T0 = datetime(2026, 1, 15, 17, 0, tzinfo=UTC)


class FakeServer:
    def __init__(self) -> None:
        self.chargers: dict[str, ChargerState] = {}
        self.observers: list[Any] = []
        self.sent: list[tuple[str, int, Any]] = []

    def connect(self, charger_id: str, *, tx: str | None = "1") -> ChargerState:
        state = ChargerState(charger_id, "1.6", "accepted", T0, T0)
        if tx is not None:
            state.transactions[1] = tx
        self.chargers[charger_id] = state
        return state

    async def set_charging_profile(
        self, charger_id: str, target: int, profile: Any
    ) -> str:
        self.sent.append((charger_id, target, profile))
        return "Accepted"


def clock_at(moment: datetime) -> Clock:
    return Clock(start=moment, anchor=0.0, speed=1.0, real=lambda: 0.0)


def config(**site: Any) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "gateway_id": "gw",
            "cloud": {"mqtt_url": "mqtt://127.0.0.1:1"},
            "meters": [{"type": "glow", "id": "site", "topic": "glow/x"}],
            "chargers": [
                {"id": "CP1", "password": "x" * 16},
                {"id": "CP2", "password": "x" * 16, "max_current_a": 16},
            ],
            "site": {
                "timezone": "UTC",
                "default_window": "23:30-05:30",
                "meter": "site",
                **site,
            },
        }
    )


def controller(moment: datetime, **site: Any) -> tuple[Controller, FakeServer]:
    server = FakeServer()
    ctl = Controller(
        config(**site),
        server,
        clock=clock_at(moment),
        rng=random.Random(7),
    )
    return ctl, server


def lease(*, valid_until: datetime, mode: str = "smart", periods: Any = None) -> bytes:
    start = T0.replace(minute=0)
    ms = int(start.timestamp() * 1000)
    hour = 3600 * 1000
    return pack(
        Lease.model_validate(
            {
                "gw": "gw",
                "version": 1,
                "issued_ms": int(T0.timestamp() * 1000) - 1000,
                "valid_until_ms": int(valid_until.timestamp() * 1000),
                "site": {"main_fuse_a": 60},
                "slots_start_ms": ms,
                # dear until 23:00, cheap after
                "price_p_per_kwh": [30.0] * 12 + [5.0] * 12,
                "chargers": [
                    {
                        "charger_id": "CP1",
                        "mode": mode,
                        "periods": periods
                        if periods is not None
                        else [
                            {
                                "start_ms": ms + hour,
                                "end_ms": ms + 2 * hour,
                                "limit_w": 3680,
                            }
                        ],
                        "request": {
                            "energy_needed_kwh": 7.36,
                            "ready_by_ms": ms + 20 * hour,
                            "max_power_w": 7360,
                            "register_wh_at_request": 0.0,
                        },
                    }
                ],
            }
        )
    )


def meter(ctl: Controller, at: datetime, watts: float) -> None:
    ctl.on_meter("site", [Reading("site", "power_w", at, watts)])


def test_without_a_site_meter_every_charger_gets_the_safe_current() -> None:
    ctl, server = controller(T0, safe_current_a=8, meter=None)
    server.connect("CP1")
    ctl.boost("CP1")
    decision = ctl._guard({"CP1": (32.0, "boost", "")}, T0)
    assert decision == {"CP1": (8.0, "safe_current", True)}


def test_a_valid_lease_is_followed_and_mode_off_means_zero() -> None:
    ctl, server = controller(T0 + timedelta(hours=1, minutes=5))
    server.connect("CP1")
    assert ctl.accept_lease(lease(valid_until=T0 + timedelta(hours=3)))
    limit, state, _ = ctl._planned(
        ctl.chargers["CP1"], server.chargers["CP1"], ctl.clock.now()
    )
    assert (round(limit, 1), state) == (16.0, "applied")
    ctl2, server2 = controller(T0 + timedelta(hours=1, minutes=5))
    server2.connect("CP1")
    assert ctl2.accept_lease(lease(valid_until=T0 + timedelta(hours=3), mode="off"))
    assert ctl2._planned(
        ctl2.chargers["CP1"], server2.chargers["CP1"], ctl2.clock.now()
    )[:2] == (
        0.0,
        "applied",
    )


def test_an_expired_lease_is_replanned_locally_into_the_cheap_slots() -> None:
    # the lease ran out at 18:00; at 19:00 it is dear (30p) until 23:00
    moment = T0 + timedelta(hours=2)
    ctl, server = controller(moment)
    # the EV's energy register counts what it is given (the lease's 7.36 kWh are
    # asked at 0 Wh): once they are in, nothing more is planned (the 12-hour curve
    # says nothing of the morning, so that is no place to charge)
    server.connect("CP1").register_wh = 0.0
    assert ctl.accept_lease(lease(valid_until=T0 + timedelta(hours=1)))
    limit, state, _ = ctl._planned(ctl.chargers["CP1"], server.chargers["CP1"], moment)
    assert (limit, state) == (0.0, "local_plan")
    # through the night and the next morning: charging only ever in 5p slots
    charged = []
    for step in range(0, 18 * 6):
        at = moment + timedelta(minutes=10 * step)
        ctl.clock = clock_at(at)
        limit, state, _ = ctl._planned(ctl.chargers["CP1"], server.chargers["CP1"], at)
        assert state == "local_plan"
        if limit > 0:
            assert limit >= 6
            hour = at.hour
            assert hour >= 23 or hour < 5 or 11 <= hour < 17, at
            charged.append(at)
            ev = server.chargers["CP1"]
            ev.register_wh = (ev.register_wh or 0.0) + limit * 230 / 6  # 10 minutes
    assert charged


def test_default_window_waits_for_the_random_delay() -> None:
    ctl, server = controller(T0, random_delay_max_s=1800)
    server.connect("CP1")
    cfg = ctl.chargers["CP1"]
    assert ctl._default_window(cfg, T0) == (
        0.0,
        "default_window",
        "waiting for the off-peak window",
    )
    night = T0.replace(hour=23, minute=30)
    delay = ctl._runtime["CP1"].window_delay.get(night.date())
    assert delay is not None and 0 <= delay <= 1800
    before = night + timedelta(seconds=delay - 1)
    after = night + timedelta(seconds=delay + 1)
    assert ctl._default_window(cfg, before)[0] == 0.0
    assert ctl._default_window(cfg, after)[0] == 32.0
    # past midnight the same night's window still holds, with the same delay
    assert ctl._default_window(cfg, night + timedelta(hours=3))[0] == 32.0
    assert ctl._default_window(cfg, night + timedelta(hours=6, minutes=1))[0] == 0.0


def test_delays_differ_between_chargers() -> None:
    ctl, _ = controller(T0, random_delay_max_s=1800)
    for cid in ("CP1", "CP2"):
        ctl._default_window(ctl.chargers[cid], T0)
    day = T0.date()
    assert (
        ctl._runtime["CP1"].window_delay[day] != ctl._runtime["CP2"].window_delay[day]
    )


def test_fuse_guard_shares_between_two_evs_and_hysteresis_holds_a_raise() -> None:
    ctl, server = controller(T0, main_fuse_a=40, margin_a=0, raise_hold_s=30)
    for cid in ("CP1", "CP2"):
        server.connect(cid).power_w = 0.0
    meter(ctl, T0, 230 * 10)  # 10 A of house
    out = ctl._guard({"CP1": (32.0, "applied", ""), "CP2": (16.0, "applied", "")}, T0)
    assert out["CP1"][0] == pytest.approx(15.0) and out["CP2"][0] == pytest.approx(15.0)
    assert out["CP1"][1] == "fuse_limited"
    # once throttled, a raise must wait for the hold
    from edge.controller import _Applied

    ctl._runtime["CP1"].applied = _Applied(
        id(server.chargers["CP1"]), "1", 15.0, T0, True
    )
    assert ctl._hysteresis("CP1", 20.0, False, T0) == 15.0
    assert ctl._hysteresis("CP1", 20.0, False, T0 + timedelta(seconds=10)) == 15.0
    assert ctl._hysteresis("CP1", 20.0, False, T0 + timedelta(seconds=31)) == 20.0
    # lowering never waits
    assert ctl._hysteresis("CP1", 5.0, True, T0 + timedelta(seconds=32)) == 5.0


def test_stale_meter_data_is_not_trusted() -> None:
    ctl, server = controller(T0, stale_after_s=30, safe_current_a=6)
    server.connect("CP1")
    meter(ctl, T0, 100.0)
    fresh = ctl._guard({"CP1": (32.0, "applied", "")}, T0 + timedelta(seconds=29))
    stale = ctl._guard({"CP1": (32.0, "applied", "")}, T0 + timedelta(seconds=31))
    assert fresh["CP1"][0] == 32.0 and stale["CP1"] == (6.0, "safe_current", True)
    # an older reading redelivered does not move the clock back
    meter(ctl, T0 - timedelta(minutes=5), 99999.0)
    assert ctl.site_import_w == [100.0]


def test_metrics_show_each_charger_the_site_and_the_lease() -> None:
    ctl, server = controller(T0 + timedelta(hours=1, minutes=5))
    server.connect("CP1").power_w = 0.0
    meter(ctl, T0 + timedelta(hours=1, minutes=5), 2000.0)
    assert ctl.accept_lease(lease(valid_until=T0 + timedelta(hours=3)))
    from edge.controller import ChargerDecision

    ctl.decisions = {"CP1": ChargerDecision("CP1", "applied", 16.0, 16.0, 3680.0)}
    samples = {
        (name, tuple(sorted(labels.items()))): v for name, _, labels, v in ctl.metrics()
    }
    assert (
        samples[("fusebox_charger_limit_a", (("charger", "CP1"), ("state", "applied")))]
        == 16.0
    )
    assert samples[("fusebox_site_import_w", ())] == 2000.0
    assert samples[("fusebox_lease_version", ())] == 1
    assert samples[("fusebox_lease_valid_seconds", ())] == pytest.approx(6900, abs=1)


async def test_a_cancel_that_lands_with_a_wake_still_stops_the_loop() -> None:
    # Python 3.11's asyncio.wait_for dropped such a cancel: the loop went on and
    # SIGTERM left the edge running (seen in CI as a bench edge that never exited)
    ctl, _ = controller(T0)
    task = asyncio.create_task(ctl.run())
    await asyncio.sleep(0.01)
    ctl._wake.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done, "the controller loop ignored the cancel"
    assert task.cancelled()


class _Zero(random.Random):
    """Every backoff wait is 0: retries come at once."""

    def uniform(self, a: float, b: float) -> float:
        return a


class RefusingServer(FakeServer):
    """Answers the first ``refusals`` SetChargingProfile with Rejected."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def set_charging_profile(
        self, charger_id: str, target: int, profile: Any
    ) -> str:
        await super().set_charging_profile(charger_id, target, profile)
        if self.refusals:
            self.refusals -= 1
            return "Rejected"
        return "Accepted"


def _unprotected(ctl: Controller) -> dict[str, float]:
    return {
        labels["charger"]: value
        for name, _help, labels, value in ctl.metrics()
        if name == "fusebox_charger_unprotected"
    }


async def test_the_failsafe_waits_for_the_boot_and_is_retried_until_accepted() -> None:
    """Issue 10: the fail-safe default went out 6-19 ms after a known charger
    reconnected, before its BootNotification; refused then, it was never sent
    again on that connection, leaving the charger unprotected."""
    server = RefusingServer(refusals=2)
    ctl = Controller(config(), server, clock=clock_at(T0), rng=_Zero(1))
    state = server.connect("CP1", tx=None)
    state.capabilities = None
    ctl.evaluate()
    await asyncio.sleep(0)
    assert server.sent == []  # connected, not booted: nothing yet
    state.profiles_ready = True  # the boot was answered (or the backstop passed)
    ctl.evaluate()
    for _ in range(50):
        await asyncio.sleep(0)
        if len(server.sent) == 3:
            break
    purposes = [p.purpose.value for _, _, p in server.sent]
    assert purposes == ["TxDefault"] * 3  # refused twice, then accepted
    assert _unprotected(ctl)["CP1"] == 0.0
    assert ctl._runtime["CP1"].failsafe_tries == 3


async def test_a_charger_that_keeps_refusing_the_failsafe_is_flagged() -> None:
    server = RefusingServer(refusals=10**6)
    ctl = Controller(config(), server, clock=clock_at(T0), rng=_Zero(1))
    state = server.connect("CP1", tx=None)
    state.profiles_ready = True
    ctl.evaluate()
    for _ in range(20):
        await asyncio.sleep(0)
    assert _unprotected(ctl)["CP1"] == 1.0
    assert len(server.sent) > 1  # still being retried
    state.connected = False  # the connection is gone: the retries stop
    tries = ctl._runtime["CP1"].failsafe_tries
    for _ in range(20):
        await asyncio.sleep(0)
    assert ctl._runtime["CP1"].failsafe_tries <= tries + 1
    for task in list(ctl._tasks):
        task.cancel()
