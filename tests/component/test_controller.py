"""The edge controller against a real OCPP server and ``fusebox sim charger`` (both
versions): it follows the lease, the fuse guard throttles on a house load spike
within two meter updates, stale meter data brings the safe current, removing the
spike restores the plan; boost and the fail-safe default profile.

The site meter is the test itself: every ``METER_S`` it feeds the controller the
site's import as a real meter would see it, the house plus what the simulated
charger reports drawing. (Meters over MQTT into the controller are covered by the
end-to-end scenario.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest

from edge.config import EdgeConfig
from edge.controller import Controller
from edge.ocpp.server import OcppServer
from edge.ocpp.transactions import store_path_beside
from edge.outbox import Outbox
from protocols.contract import pack
from protocols.lease import Lease
from protocols.readings import Reading
from tests.harness.procs import Procs
from tests.harness.timing import eventually, timeout

PASSWORD = "s3cret-password-16"
VOLTS = 230.0
FUSE_A = 60.0
MARGIN_A = 2.0
HOUSE_W = 1000.0
SPIKE_W = 8000.0
METER_S = 1.0
STALE_S = 4.0


def edge_config(tmp_path: Path) -> EdgeConfig:
    return EdgeConfig.model_validate(
        {
            "gateway_id": "gw-ctl",
            "cloud": {"mqtt_url": "mqtt://127.0.0.1:1"},
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "meters": [
                {"type": "glow", "id": "site", "topic": "glow/site"},
            ],
            "ocpp": {
                "host": "127.0.0.1",
                "port": 0,
                "security_profile": 1,
                "id_tags": ["TAG1"],
            },
            "chargers": [
                {"id": "CP1", "password": PASSWORD, "max_current_a": 32, "phases": 1}
            ],
            "site": {
                "main_fuse_a": FUSE_A,
                "margin_a": MARGIN_A,
                "meter": "site",
                "safe_current_a": 8,
                "stale_after_s": STALE_S,
                "failsafe_current_a": 10,
                "raise_hold_s": 3,
                # no window today: outside a lease the charger waits
                "default_window": "03:00-03:01",
                "random_delay_max_s": 0,
                "timezone": "UTC",
            },
        }
    )


def lease_for(limit_w: float, *, version: int = 1, minutes: int = 60) -> bytes:
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0)
    ms = int(start.timestamp() * 1000)
    return pack(
        Lease.model_validate(
            {
                "gw": "gw-ctl",
                "version": version,
                "issued_ms": int(now.timestamp() * 1000),
                "valid_until_ms": int(
                    (now + timedelta(minutes=minutes)).timestamp() * 1000
                ),
                "site": {"main_fuse_a": FUSE_A},
                "slots_start_ms": ms,
                "price_p_per_kwh": [10.0] * 6,
                "chargers": [
                    {
                        "charger_id": "CP1",
                        "periods": [
                            {
                                "start_ms": ms,
                                "end_ms": ms + 3 * 3600 * 1000,
                                "limit_w": limit_w,
                            }
                        ],
                        "request": {
                            "energy_needed_kwh": 20,
                            "ready_by_ms": ms + 3 * 3600 * 1000,
                            "max_power_w": 7360,
                        },
                    }
                ],
            }
        )
    )


class SiteMeter:
    """Feeds the controller the site import every ``METER_S`` while ``running``."""

    def __init__(self, controller: Controller, server: OcppServer) -> None:
        self.controller = controller
        self.server = server
        self.spike_w = 0.0
        self.running = True
        self.updates = 0
        self.history: list[tuple[float, float, float]] = []  # (import, ev, spike)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(METER_S)
            if not self.running:
                continue
            state = self.server.chargers.get("CP1")
            ev_w = (state.power_w or 0.0) if state and state.transactions else 0.0
            total = HOUSE_W + self.spike_w + ev_w
            self.controller.on_meter(
                "site", [Reading("site", "power_w", datetime.now(UTC), total)]
            )
            self.updates += 1
            self.history.append((total, ev_w, self.spike_w))


@asynccontextmanager
async def rig(
    tmp_path: Path, procs: Procs, version: str, via: Any = None
) -> AsyncIterator[tuple[OcppServer, Controller, SiteMeter, list[tuple[str, Any]]]]:
    config = edge_config(tmp_path)
    outbox = Outbox.open(config.outbox.path)
    await outbox.start()
    server = OcppServer(
        config.ocpp,
        config.chargers,
        outbox,
        transactions_path=store_path_beside(config.outbox.path),
    )
    posted: list[tuple[str, Any]] = []
    controller = Controller(
        config,
        server,
        post=lambda leaf, payload, key: posted.append((leaf, payload)),
        lease_path=tmp_path / "lease.msgpack",
        tick_s=0.5,
    )
    await server.start()
    meter = SiteMeter(controller, server)
    tasks = [asyncio.create_task(controller.run()), asyncio.create_task(meter.run())]
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            [
                {"at": 0.5, "action": "plug", "connector": 1},
                {"at": 1, "action": "start", "connector": 1, "id_tag": "TAG1"},
                {"at": 900, "action": "stop", "connector": 1},
            ]
        )
    )
    url = f"ws://127.0.0.1:{server.port}/ocpp"
    if via is not None:  # a TCP proxy between the charger and the edge
        proxy = via(url)
        url = proxy.url_for(url)
    procs.start(
        [
            "fusebox",
            "sim",
            "charger",
            "--url",
            url,
            "--id",
            "CP1",
            "--password",
            PASSWORD,
            "--ocpp",
            version,
            "--meter-interval",
            "0.5",
            "--phases",
            "1",
            "--ev-max-kw",
            "11",
            "--ev-battery-kwh",
            "200",
            "--scenario",
            str(scenario),
            "--state",
            str(tmp_path / "cp1.json"),
        ],
        name=f"charger-{version}",
    )
    try:
        yield server, controller, meter, posted
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()
        await outbox.close()


def power(server: OcppServer) -> float:
    state = server.chargers.get("CP1")
    return (state.power_w or 0.0) if state else 0.0


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_fuse_guard_throttles_on_a_spike_and_restores_the_plan(
    tmp_path: Path, procs: Procs, version: str
) -> None:
    async with rig(tmp_path, procs, version) as (server, controller, meter, posted):
        assert controller.accept_lease(lease_for(7360.0))

        async def following_plan() -> bool:
            d = controller.decisions.get("CP1")
            return bool(d and d.state == "applied" and power(server) > 7000)

        await eventually(
            following_plan, timeout_s=timeout(15), message="charging at the plan's 32 A"
        )

        # the fail-safe default went to the charger as soon as it was known: the
        # simulated charger keeps its installed profiles in its state file
        def failsafe() -> list[Any]:
            data = json.loads((tmp_path / "cp1.json").read_text())
            return [
                item
                for item in data["profiles"]
                if item["connector"] == 0
                and item["profile"]["chargingProfilePurpose"] == "TxDefaultProfile"
                and item["profile"]["stackLevel"] == 0
            ]

        (installed,) = await eventually(
            failsafe, timeout_s=timeout(5), message="fail-safe default installed"
        )
        schedule = installed["profile"]["chargingSchedule"]
        schedule = schedule[0] if isinstance(schedule, list) else schedule
        assert schedule["chargingSchedulePeriod"][0]["limit"] == pytest.approx(10.0)

        # +8 kW in the house: 1 + 8 kW of house leaves 58 A - 39.1 A = 18.9 A
        start = meter.updates
        meter.spike_w = SPIKE_W

        def throttled() -> bool:
            d = controller.decisions.get("CP1")
            applied = controller._runtime["CP1"].applied
            return bool(
                d
                and d.state == "fuse_limited"
                and applied is not None
                and applied.limit_a <= FUSE_A - MARGIN_A - (HOUSE_W + SPIKE_W) / VOLTS
            )

        await eventually(
            throttled, timeout_s=timeout(10), message="throttled", interval_s=0.05
        )
        assert meter.updates - start <= 2, "throttled within two meter updates"
        expected_a = FUSE_A - MARGIN_A - (HOUSE_W + SPIKE_W) / VOLTS
        assert controller.decisions["CP1"].limit_a == pytest.approx(
            expected_a, abs=0.15
        )

        async def drawing_less() -> bool:
            return 0 < power(server) <= expected_a * VOLTS + 50

        await eventually(drawing_less, timeout_s=timeout(10), message="EV follows")
        seen = len(meter.history)
        await asyncio.sleep(3 * METER_S)
        # from then on the site stays under the fuse
        for total, _, _ in meter.history[seen:]:
            assert total <= FUSE_A * VOLTS, meter.history

        # the meter goes silent: the safe current
        meter.running = False

        def safe() -> bool:
            d = controller.decisions.get("CP1")
            applied = controller._runtime["CP1"].applied
            return bool(
                d and d.state == "safe_current" and applied and applied.limit_a == 8
            )

        await eventually(safe, timeout_s=timeout(STALE_S + 6), message="safe current")

        # the meter is back without the spike: the plan returns (after the hold)
        meter.spike_w = 0.0
        meter.running = True

        def restored() -> bool:
            d = controller.decisions.get("CP1")
            applied = controller._runtime["CP1"].applied
            return bool(
                d and d.state == "applied" and applied and applied.limit_a >= 31.9
            )

        await eventually(restored, timeout_s=timeout(15), message="plan restored")
        await eventually(
            lambda: power(server) > 7000, timeout_s=timeout(10), message="full power"
        )
        states = [leaf for leaf, _ in posted if leaf == "up/schedule_status"]
        assert len(states) >= 4  # applied, fuse_limited, safe_current, applied


async def test_boost_overrides_the_plan_under_the_fuse_and_ends_with_cancel(
    tmp_path: Path, procs: Procs
) -> None:
    async with rig(tmp_path, procs, "2.0.1") as (server, controller, meter, posted):
        assert controller.accept_lease(lease_for(0.0))  # planned: not now

        async def waiting() -> bool:
            d = controller.decisions.get("CP1")
            return bool(d and d.state == "applied" and d.limit_a == 0)

        await eventually(waiting, timeout_s=timeout(15), message="plan says wait")
        command = {
            "v": 1,
            "type": "cmd",
            "id": "boost-1",
            "gw": "gw-ctl",
            "action": "boost",
            "charger_id": "CP1",
            "issued_ms": int(datetime.now(UTC).timestamp() * 1000),
        }
        await controller.on_down("down/cmd", pack(command))

        async def boosting() -> bool:
            d = controller.decisions.get("CP1")
            return bool(d and d.state == "boost" and power(server) > 7000)

        await eventually(boosting, timeout_s=timeout(10), message="boost at 32 A")
        results = [payload for leaf, payload in posted if leaf == "up/cmd_result"]
        assert results
        # a spike still throttles a boost
        meter.spike_w = 12_000.0
        await eventually(
            lambda: controller.decisions["CP1"].state == "fuse_limited",
            timeout_s=timeout(10),
            message="fuse guard over boost",
        )
        meter.spike_w = 0.0
        cancel = {**command, "id": "boost-2", "action": "cancel_boost"}
        await controller.on_down("down/cmd", pack(cancel))
        await eventually(waiting, timeout_s=timeout(15), message="back to the plan")


async def test_older_or_foreign_leases_are_ignored_and_the_lease_survives_restart(
    tmp_path: Path,
) -> None:
    config = edge_config(tmp_path)
    outbox = Outbox.open(config.outbox.path)
    await outbox.start()
    try:
        server = OcppServer(
            config.ocpp,
            config.chargers,
            outbox,
            transactions_path=store_path_beside(config.outbox.path),
        )
        controller = Controller(config, server, lease_path=tmp_path / "lease.msgpack")
        assert controller.accept_lease(lease_for(7360.0, version=5))
        assert not controller.accept_lease(lease_for(1000.0, version=4))
        assert not controller.accept_lease(lease_for(1000.0, version=5))
        assert not controller.accept_lease(b"\x00junk")
        foreign = msgpack.unpackb(lease_for(1.0, version=9))
        foreign["gw"] = "someone-else"
        assert not controller.accept_lease(pack(foreign))
        again = Controller(config, server, lease_path=tmp_path / "lease.msgpack")
        assert again.lease is not None and again.lease.version == 5
    finally:
        await outbox.close()


async def test_profiles_are_reapplied_after_the_charger_reconnects(
    tmp_path: Path, procs: Procs, tcp_proxy_factory: Any
) -> None:
    proxies: list[Any] = []

    def via(url: str) -> Any:
        proxy = tcp_proxy_factory(url)
        proxies.append(proxy)
        return proxy

    async with rig(tmp_path, procs, "1.6", via) as (server, controller, _meter, _):
        assert controller.accept_lease(lease_for(3680.0))  # 16 A

        def applied_on(state: Any) -> bool:
            applied = controller._runtime["CP1"].applied
            return bool(
                applied is not None
                and applied.connection == id(state)
                and applied.limit_a == pytest.approx(16.0)
            )

        await eventually(
            lambda: "CP1" in server.chargers and applied_on(server.chargers["CP1"]),
            timeout_s=timeout(15),
            message="16 A applied on the first connection",
        )
        first = server.chargers["CP1"]
        (proxy,) = proxies
        proxy.pause()
        await eventually(
            lambda: not first.connected, timeout_s=timeout(10), message="link cut"
        )
        proxy.resume()

        def reconnected() -> bool:
            state = server.chargers["CP1"]
            return state is not first and state.connected

        await eventually(reconnected, timeout_s=timeout(20), message="reconnected")
        second = server.chargers["CP1"]
        assert second.transactions == first.transactions  # the same session
        await eventually(
            lambda: applied_on(second),
            timeout_s=timeout(10),
            message="the profile sent again on the new connection",
        )
