"""Commands the edge sends to a connected charger (smart charging), per OCPP version.

Pure: the request payloads (camelCase, as on the wire) for 1.6 and 2.0.1 and the
reading of the answers; ``OcppServer`` sends them (``set_charging_profile``,
``clear_charging_profile``, ``get_composite_schedule``) from outside any handler.

Errors (in the ``edge.ocpp`` tree, under ``OcppServerError``)::

    ChargerNotConnected   unknown charger, or not connected right now
    CommandFailed         the charger answered with a CALLERROR (.code, .description)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from edge.ocpp import OcppServerError
from protocols.ocpp import (
    ChargingProfile,
    JsonObject,
    ProfilePurpose,
    RateUnit,
    set_charging_profile_16,
    set_charging_profile_201,
)

__all__ = [
    "ChargerNotConnected",
    "CommandFailed",
    "clear_charging_profile_request",
    "composite_answer",
    "get_composite_schedule_request",
    "set_charging_profile_request",
]

_PURPOSE_16 = {
    ProfilePurpose.STATION_MAX: "ChargePointMaxProfile",
    ProfilePurpose.TX_DEFAULT: "TxDefaultProfile",
    ProfilePurpose.TX: "TxProfile",
}
_PURPOSE_201 = {
    ProfilePurpose.STATION_MAX: "ChargingStationMaxProfile",
    ProfilePurpose.TX_DEFAULT: "TxDefaultProfile",
    ProfilePurpose.TX: "TxProfile",
    ProfilePurpose.EXTERNAL_CONSTRAINTS: "ChargingStationExternalConstraints",
}


class ChargerNotConnected(OcppServerError):
    """The charger is unknown to the server or not connected now: nothing was sent."""

    def __init__(self, charger_id: str) -> None:
        super().__init__(f"charger {charger_id!r} is not connected")
        self.charger_id = charger_id


class CommandFailed(OcppServerError):
    """The charger answered the command with a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"charger answered CALLERROR {code}: {description}")
        self.code = code
        self.description = description


def set_charging_profile_request(
    version: str, target: int, profile: ChargingProfile
) -> tuple[str, JsonObject]:
    """(action, payload) for SetChargingProfile; ``target`` is the 1.6 connector id
    or the 2.0.1 EVSE id. ``ProfileError`` if the profile does not fit the target."""
    if version == "1.6":
        return "SetChargingProfile", set_charging_profile_16(target, profile)
    return "SetChargingProfile", set_charging_profile_201(target, profile)


def clear_charging_profile_request(
    version: str,
    *,
    profile_id: int | None = None,
    connector_or_evse_id: int | None = None,
    purpose: ProfilePurpose | str | None = None,
    stack_level: int | None = None,
) -> tuple[str, JsonObject]:
    """(action, payload) for ClearChargingProfile; no criteria clears everything."""
    wire_purpose: str | None = None
    if purpose is not None:
        table = _PURPOSE_16 if version == "1.6" else _PURPOSE_201
        purpose = ProfilePurpose(purpose)
        if purpose not in table:
            raise ValueError(f"purpose {purpose} does not exist in OCPP {version}")
        wire_purpose = table[purpose]
    payload: JsonObject = {}
    if version == "1.6":
        for key, value in (
            ("id", profile_id),
            ("connectorId", connector_or_evse_id),
            ("chargingProfilePurpose", wire_purpose),
            ("stackLevel", stack_level),
        ):
            if value is not None:
                payload[key] = value
        return "ClearChargingProfile", payload
    criteria: JsonObject = {}
    for key, value in (
        ("evseId", connector_or_evse_id),
        ("chargingProfilePurpose", wire_purpose),
        ("stackLevel", stack_level),
    ):
        if value is not None:
            criteria[key] = value
    if profile_id is not None:
        payload["chargingProfileId"] = profile_id
    if criteria:
        payload["chargingProfileCriteria"] = criteria
    return "ClearChargingProfile", payload


def get_composite_schedule_request(
    version: str,
    connector_or_evse_id: int,
    duration_s: int,
    rate_unit: RateUnit | str = RateUnit.W,
) -> tuple[str, JsonObject]:
    """(action, payload) for GetCompositeSchedule."""
    if duration_s <= 0:
        raise ValueError("duration_s must be > 0")
    unit = str(RateUnit(rate_unit))
    key = "connectorId" if version == "1.6" else "evseId"
    return "GetCompositeSchedule", {
        key: connector_or_evse_id,
        "duration": int(duration_s),
        "chargingRateUnit": unit,
    }


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def composite_answer(version: str, answer: dict[str, Any]) -> dict[str, Any]:
    """A GetCompositeSchedule answer (snake_case keys) as a plain dict::

    {"status", "connector_or_evse_id", "schedule_start", "duration_s", "rate_unit",
     "periods": [{"start_period_s", "limit", "number_phases"}, ...]}

    The schedule fields are None (periods empty) when the charger sent none.
    """
    if version == "1.6":
        schedule = answer.get("charging_schedule")
        target = answer.get("connector_id")
        start = answer.get("schedule_start")
    else:
        schedule = answer.get("schedule")
        target = schedule.get("evse_id") if isinstance(schedule, dict) else None
        start = schedule.get("schedule_start") if isinstance(schedule, dict) else None
    schedule = schedule if isinstance(schedule, dict) else {}
    if start is None:
        start = schedule.get("start_schedule")
    periods = []
    for period in schedule.get("charging_schedule_period") or ():
        if not isinstance(period, dict):
            continue
        periods.append(
            {
                "start_period_s": period.get("start_period"),
                "limit": _number(period.get("limit")),
                "number_phases": period.get("number_phases"),
            }
        )
    return {
        "status": str(answer.get("status")),
        "connector_or_evse_id": target,
        "schedule_start": start,
        "duration_s": schedule.get("duration"),
        "rate_unit": schedule.get("charging_rate_unit"),
        "periods": periods,
    }
