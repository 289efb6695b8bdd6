"""The lease contract: validation, encoding, the limit at a time."""

from __future__ import annotations

import pytest

from protocols.contract import ContractError, pack
from protocols.lease import (
    SLOT_MS,
    ChargerLease,
    Command,
    Lease,
    LeasePeriod,
    ScheduleStatus,
    down_schedule,
    unpack_command,
    unpack_lease,
    unpack_schedule_status,
    up_schedule_status,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a slot boundary


def lease(**overrides: object) -> dict:
    base: dict = {
        "v": 1,
        "type": "lease",
        "gw": "gw-1",
        "version": 3,
        "issued_ms": T0,
        "valid_until_ms": T0 + 3_600_000,
        "site": {"main_fuse_a": 60, "phases": 1},
        "slots_start_ms": T0,
        "price_p_per_kwh": [10.0, 5.0, 30.0],
        "carbon_g_per_kwh": [100.0, 90.0, 200.0],
        "chargers": [
            {
                "charger_id": "CP1",
                "periods": [
                    {
                        "start_ms": T0 + SLOT_MS,
                        "end_ms": T0 + 2 * SLOT_MS,
                        "limit_w": 7400,
                    }
                ],
                "request": {
                    "energy_needed_kwh": 3.7,
                    "ready_by_ms": T0 + 3 * SLOT_MS,
                    "max_power_w": 7400,
                },
            }
        ],
    }
    base.update(overrides)
    return base


def test_lease_round_trips_and_answers_the_limit() -> None:
    decoded = unpack_lease(pack(Lease.model_validate(lease())))
    assert decoded.version == 3 and decoded.slots_end_ms == T0 + 3 * SLOT_MS
    cp1 = decoded.charger("CP1")
    assert cp1 is not None and decoded.charger("CP2") is None
    assert cp1.limit_at(T0) == 0.0  # before the period: planned off
    assert cp1.limit_at(T0 + SLOT_MS) == 7400
    assert cp1.limit_at(T0 + 2 * SLOT_MS) is None  # past the plan: not said
    assert down_schedule("gw-1") == "fusebox/v1/gw/gw-1/down/schedule"
    assert up_schedule_status("gw-1") == "fusebox/v1/gw/gw-1/up/schedule_status"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"valid_until_ms": T0}, "valid_until_ms"),
        ({"slots_start_ms": T0 + 1}, "half-hour"),
        ({"carbon_g_per_kwh": [1.0]}, "one value per price slot"),
        ({"chargers": [{"charger_id": "CP1"}, {"charger_id": "CP1"}]}, "twice"),
        ({"chargers": [{"charger_id": "bad id!"}]}, "chargers.0.charger_id"),
        ({"v": 2}, "contract version"),
    ],
)
def test_bad_leases_are_refused_with_a_reason(overrides: dict, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        unpack_lease(pack(lease(**overrides)))


def test_overlapping_or_inverted_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="end_ms"):
        LeasePeriod(start_ms=T0, end_ms=T0, limit_w=1)
    with pytest.raises(ValueError, match="overlap"):
        ChargerLease(
            charger_id="CP1",
            periods=[
                LeasePeriod(start_ms=T0, end_ms=T0 + SLOT_MS, limit_w=1),
                LeasePeriod(start_ms=T0 + 1, end_ms=T0 + 2 * SLOT_MS, limit_w=1),
            ],
        )


def test_commands_and_status_round_trip() -> None:
    cmd = Command(id="c1", gw="gw-1", action="boost", charger_id="CP1", issued_ms=T0)
    assert unpack_command(pack(cmd)) == cmd
    status = ScheduleStatus(
        gw="gw-1",
        charger_id="CP1",
        lease_version=3,
        state="fuse_limited",
        limit_w=1380,
        planned_w=7400,
        at_ms=T0,
    )
    assert unpack_schedule_status(pack(status)) == status
    with pytest.raises(ContractError, match="action"):
        unpack_command(pack({**cmd.model_dump(), "action": "explode"}))
    with pytest.raises(ContractError, match=r"not MessagePack|top level"):
        unpack_command(b"\xc1junk")
