"""Smart-charging commands from the edge's OCPP server to a simulated charger
(``fusebox sim charger`` as a process), 1.6 and 2.0.1, into a real outbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from edge.ocpp.commands import ChargerNotConnected
from edge.ocpp.config import ChargerConfig, IdTagConfig, OcppServerConfig
from edge.ocpp.server import OcppServer
from edge.ocpp.transactions import store_path_beside
from edge.outbox import Outbox
from protocols.ocpp import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
)
from tests.harness.procs import Procs
from tests.harness.timing import eventually, timeout

PASSWORD = "s3cret-password-16"
LIMIT_W = 3680.0
TOLERANCE_W = 50.0


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.db")
    await box.start()
    yield box
    await box.close()


@asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[OcppServer]:
    config = OcppServerConfig(
        host="127.0.0.1", port=0, security_profile=1, id_tags=[IdTagConfig(id="TAG1")]
    )
    server = OcppServer(
        config,
        [ChargerConfig(id="CP1", password=SecretStr(PASSWORD))],
        outbox,
        transactions_path=store_path_beside(outbox.store.path),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def power_readings(outbox: Outbox, charger: str) -> list[tuple[int, float]]:
    """(outbox seq, power_w) of the charger's readings, oldest first."""
    out = []
    for row in await outbox.read(1, None, 100_000):
        if row.data is not None or row.value is None:
            continue
        source, name = await outbox.call(outbox.store.stream_name, row.stream)
        if source == charger and name == "power_w":
            out.append((row.seq, row.value))
    return out


def tx_default(limit_w: float) -> ChargingProfile:
    return ChargingProfile(
        id=7,
        stack_level=1,
        purpose=ProfilePurpose.TX_DEFAULT,
        kind=ProfileKind.ABSOLUTE,
        schedules=(
            ChargingSchedule(
                rate_unit=RateUnit.W,
                periods=(SchedulePeriod(0, limit_w),),
                start_schedule=datetime.now(UTC) - timedelta(minutes=1),
            ),
        ),
    )


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_profile_limits_power_and_clear_lifts_it(
    outbox: Outbox, procs: Procs, tmp_path: Path, version: str
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            [
                {"at": 0.5, "action": "plug", "connector": 1},
                {"at": 1, "action": "start", "connector": 1, "id_tag": "TAG1"},
                {"at": 600, "action": "stop", "connector": 1},
            ]
        ),
        encoding="utf-8",
    )
    async with running(outbox) as server:
        procs.start(
            [
                "fusebox",
                "sim",
                "charger",
                "--url",
                f"ws://127.0.0.1:{server.port}/ocpp",
                "--id",
                "CP1",
                "--password",
                PASSWORD,
                "--ocpp",
                version,
                "--meter-interval",
                "1",
                # 3680 W is 16 A on one phase (on three it would be 5.3 A, below
                # the 6 A an EV needs: it would stop drawing)
                "--phases",
                "1",
                "--scenario",
                str(scenario),
                "--state",
                str(tmp_path / "cp1.state.json"),
            ],
            name=f"charger-{version}",
        )

        async def charging() -> bool:
            state = server.chargers.get("CP1")
            if state is None or not state.connected:
                return False
            readings = await power_readings(outbox, "CP1")
            return any(value > LIMIT_W + TOLERANCE_W for _, value in readings)

        await eventually(
            charging,
            timeout_s=timeout(10),
            message="CP1 connected and charging above the limit-to-be",
        )
        assert server.chargers["CP1"].ocpp_version == version

        status = await server.set_charging_profile("CP1", 1, tx_default(LIMIT_W))
        assert status == "Accepted"

        composite = await server.get_composite_schedule("CP1", 1, 300, "W")
        assert composite["status"] == "Accepted"
        assert composite["rate_unit"] == "W"
        assert composite["periods"]
        assert composite["periods"][0]["limit"] == pytest.approx(LIMIT_W)

        mark = max((seq for seq, _ in await power_readings(outbox, "CP1")), default=0)

        async def limited() -> list[float]:
            after = [v for s, v in await power_readings(outbox, "CP1") if s > mark]
            # the first one may have been sampled before the profile arrived
            return after[1:3] if len(after) >= 3 else []

        values = await eventually(
            limited, timeout_s=timeout(8), message="meter values after the profile"
        )
        assert all(0 < v <= LIMIT_W + TOLERANCE_W for v in values), values

        assert await server.clear_charging_profile("CP1", profile_id=7) == "Accepted"
        mark = max(seq for seq, _ in await power_readings(outbox, "CP1"))

        async def lifted() -> bool:
            after = [v for s, v in await power_readings(outbox, "CP1") if s > mark]
            return any(v > LIMIT_W + TOLERANCE_W for v in after)

        await eventually(
            lifted, timeout_s=timeout(8), message="power rises after the clear"
        )


async def test_command_to_an_absent_charger_raises(outbox: Outbox) -> None:
    async with running(outbox) as server:
        with pytest.raises(ChargerNotConnected):
            await server.set_charging_profile("CP1", 1, tx_default(LIMIT_W))
        with pytest.raises(ChargerNotConnected):
            await server.set_charging_profile("NOPE", 1, tx_default(LIMIT_W))
        with pytest.raises(ChargerNotConnected):
            await server.get_composite_schedule("NOPE", 1, 60)
