"""Commands the edge sends to a connected charger, per OCPP version.

Pure: the request payloads (camelCase, as on the wire) for 1.6 and 2.0.1 and the
reading of the answers; ``OcppServer`` sends them from outside any handler:
smart charging (SetChargingProfile, ClearChargingProfile, GetCompositeSchedule),
remote start/stop (1.6 Remote*Transaction, 2.0.1 Request*Transaction),
configuration (1.6 GetConfiguration/ChangeConfiguration, 2.0.1
GetVariables/SetVariables), TriggerMessage, Reset and ChangeAvailability. The
smart-charging capabilities a charger advertises (``Capabilities``) are read from
the 1.6 keys or the 2.0.1 SmartChargingCtrlr variables.

Errors (in the ``edge.ocpp`` tree, under ``OcppServerError``)::

    ChargerNotConnected   unknown charger, or not connected right now
    CommandFailed         the charger answered with a CALLERROR (.code, .description)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
    to_ocpp16,
    to_ocpp201,
)

__all__ = [
    "CAPABILITY_KEYS_16",
    "CAPABILITY_VARIABLES_201",
    "Capabilities",
    "ChargerNotConnected",
    "CommandFailed",
    "Variable",
    "capabilities_16",
    "capabilities_201",
    "change_availability_request",
    "change_configuration_request",
    "clear_charging_profile_request",
    "composite_answer",
    "configuration_answer",
    "get_composite_schedule_request",
    "get_configuration_request",
    "get_variables_request",
    "remote_start_request",
    "remote_stop_request",
    "reset_request",
    "set_charging_profile_request",
    "set_variables_request",
    "trigger_message_request",
    "variables_answer",
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


# -- remote control -------------------------------------------------------------


def remote_start_request(
    version: str,
    id_tag: str,
    *,
    connector_or_evse_id: int | None = None,
    remote_start_id: int = 1,
    profile: ChargingProfile | None = None,
) -> tuple[str, JsonObject]:
    """(action, payload) for RemoteStartTransaction (1.6) / RequestStartTransaction
    (2.0.1). ``connector_or_evse_id`` None lets the charger choose; ``profile`` must
    be a TxProfile (the charger binds it to the transaction it starts)."""
    if not id_tag or len(id_tag) > (20 if version == "1.6" else 36):
        raise ValueError(f"id_tag {id_tag!r} is empty or too long for OCPP {version}")
    if connector_or_evse_id is not None and connector_or_evse_id <= 0:
        raise ValueError("connector_or_evse_id must be > 0 (or None: any)")
    if profile is not None and profile.purpose != ProfilePurpose.TX:
        raise ValueError("a remote start carries only a TxProfile")
    if profile is not None and profile.transaction_id is not None:
        raise ValueError("the charger binds the profile to the new transaction")
    payload: JsonObject = {}
    if version == "1.6":
        payload["idTag"] = id_tag
        if connector_or_evse_id is not None:
            payload["connectorId"] = connector_or_evse_id
        if profile is not None:
            payload["chargingProfile"] = to_ocpp16(profile)
        return "RemoteStartTransaction", payload
    payload["idToken"] = {"idToken": id_tag, "type": "Central"}
    payload["remoteStartId"] = remote_start_id
    if connector_or_evse_id is not None:
        payload["evseId"] = connector_or_evse_id
    if profile is not None:
        payload["chargingProfile"] = to_ocpp201(profile)
    return "RequestStartTransaction", payload


def remote_stop_request(
    version: str, transaction_id: int | str
) -> tuple[str, JsonObject]:
    """(action, payload) for RemoteStopTransaction (1.6, integer id) /
    RequestStopTransaction (2.0.1, string id)."""
    if version == "1.6":
        try:
            tx16 = int(transaction_id)
        except ValueError:
            raise ValueError(
                f"an OCPP 1.6 transaction id is an integer, not {transaction_id!r}"
            ) from None
        return "RemoteStopTransaction", {"transactionId": tx16}
    return "RequestStopTransaction", {"transactionId": str(transaction_id)}


def trigger_message_request(
    version: str, requested: str, connector_or_evse_id: int | None = None
) -> tuple[str, JsonObject]:
    """(action, payload) for TriggerMessage: ``requested`` is the message name
    (BootNotification, Heartbeat, StatusNotification, MeterValues, ...)."""
    payload: JsonObject = {"requestedMessage": requested}
    if connector_or_evse_id is not None:
        if version == "1.6":
            payload["connectorId"] = connector_or_evse_id
        else:
            payload["evse"] = {"id": connector_or_evse_id}
    return "TriggerMessage", payload


_RESET = {
    "1.6": {"soft": "Soft", "hard": "Hard"},
    "2.0.1": {"soft": "OnIdle", "hard": "Immediate"},
}


def reset_request(version: str, kind: str) -> tuple[str, JsonObject]:
    """(action, payload) for Reset: ``kind`` "soft" (1.6 Soft, 2.0.1 OnIdle: after
    the running transactions) or "hard" (1.6 Hard, 2.0.1 Immediate)."""
    table = _RESET["1.6" if version == "1.6" else "2.0.1"]
    if kind not in table:
        raise ValueError(f"reset kind must be 'soft' or 'hard', not {kind!r}")
    return "Reset", {"type": table[kind]}


def change_availability_request(
    version: str, connector_or_evse_id: int, operative: bool
) -> tuple[str, JsonObject]:
    """(action, payload) for ChangeAvailability; target 0 is the whole charger."""
    if connector_or_evse_id < 0:
        raise ValueError("connector_or_evse_id must be >= 0 (0: the whole charger)")
    state = "Operative" if operative else "Inoperative"
    if version == "1.6":
        return "ChangeAvailability", {
            "connectorId": connector_or_evse_id,
            "type": state,
        }
    payload: JsonObject = {"operationalStatus": state}
    if connector_or_evse_id:
        payload["evse"] = {"id": connector_or_evse_id}
    return "ChangeAvailability", payload


# -- configuration ----------------------------------------------------------------


def get_configuration_request(
    keys: Sequence[str] | None = None,
) -> tuple[str, JsonObject]:
    """(action, payload) for 1.6 GetConfiguration; no keys: every key (some
    chargers answer that badly, so discovery always names its keys)."""
    return "GetConfiguration", ({"key": list(keys)} if keys else {})


def configuration_answer(
    answer: dict[str, Any],
) -> tuple[dict[str, str | None], list[str]]:
    """A GetConfiguration answer as ({key: value or None}, unknown keys). Values
    longer than 500 characters (a known quirk) are kept as sent."""
    known: dict[str, str | None] = {}
    for entry in answer.get("configuration_key") or ():
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            value = entry.get("value")
            known[entry["key"]] = None if value is None else str(value)
    unknown = [str(k) for k in answer.get("unknown_key") or () if isinstance(k, str)]
    return known, unknown


def change_configuration_request(key: str, value: str) -> tuple[str, JsonObject]:
    """(action, payload) for 1.6 ChangeConfiguration."""
    if not key or len(key) > 50:
        raise ValueError(f"configuration key {key!r} is empty or over 50 characters")
    if len(value) > 500:
        raise ValueError("a configuration value has at most 500 characters")
    return "ChangeConfiguration", {"key": key, "value": value}


def authorization_key_16(password: str) -> str:
    """The 1.6 ``AuthorizationKey`` value for ``password``: the hex representation
    of the key bytes (security whitepaper: write-only, 16-20 bytes). A password
    that is itself an even-length hex string names those bytes; any other is
    sent as the hex of its UTF-8 text. Either way every form the charger may then
    send (the raw bytes or the hex string) passes ``auth.check_basic_auth``."""
    if len(password) % 2 == 0:
        try:
            bytes.fromhex(password)
        except ValueError:
            pass
        else:
            return password
    return password.encode("utf-8").hex()


@dataclass(frozen=True, slots=True)
class Variable:
    """A 2.0.1 device-model variable: component, variable (and optional instances)."""

    component: str
    variable: str
    component_instance: str | None = None
    variable_instance: str | None = None

    def wire(self) -> JsonObject:
        """The variable as a 2.0.1 ``{component, variable}`` request object."""
        component: JsonObject = {"name": self.component}
        if self.component_instance is not None:
            component["instance"] = self.component_instance
        variable: JsonObject = {"name": self.variable}
        if self.variable_instance is not None:
            variable["instance"] = self.variable_instance
        return {"component": component, "variable": variable}

    @property
    def name(self) -> str:
        """The key of this variable in a GetVariables/SetVariables answer."""
        return f"{self.component}.{self.variable}"


def get_variables_request(variables: Sequence[Variable]) -> tuple[str, JsonObject]:
    """(action, payload) for 2.0.1 GetVariables (Actual attribute)."""
    if not variables:
        raise ValueError("name at least one variable")
    return "GetVariables", {"getVariableData": [v.wire() for v in variables]}


def set_variables_request(
    values: Sequence[tuple[Variable, str]],
) -> tuple[str, JsonObject]:
    """(action, payload) for 2.0.1 SetVariables (Actual attribute)."""
    if not values:
        raise ValueError("name at least one variable")
    for _, value in values:
        if len(value) > 1000:
            raise ValueError("a variable value has at most 1000 characters")
    return "SetVariables", {
        "setVariableData": [
            {**v.wire(), "attributeValue": value} for v, value in values
        ]
    }


def variables_answer(
    answer: dict[str, Any], key: str
) -> dict[str, tuple[str, str | None]]:
    """A GetVariables/SetVariables answer (``key``: get_variable_result or
    set_variable_result) as {"Component.variable": (status, value or None)}."""
    out: dict[str, tuple[str, str | None]] = {}
    for entry in answer.get(key) or ():
        if not isinstance(entry, dict):
            continue
        component = _opt_dict(entry.get("component")).get("name")
        variable = _opt_dict(entry.get("variable")).get("name")
        value = entry.get("attribute_value")
        out[f"{component}.{variable}"] = (
            str(entry.get("attribute_status")),
            None if value is None else str(value),
        )
    return out


def _opt_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- smart-charging capabilities ---------------------------------------------------

CAPABILITY_KEYS_16: tuple[str, ...] = (
    "SupportedFeatureProfiles",
    "ChargeProfileMaxStackLevel",
    "ChargingScheduleMaxPeriods",
    "ChargingScheduleAllowedChargingRateUnit",
    "MaxChargingProfilesInstalled",
    "NumberOfConnectors",
)
CAPABILITY_VARIABLES_201: tuple[Variable, ...] = (
    Variable("SmartChargingCtrlr", "Enabled"),
    Variable("SmartChargingCtrlr", "ProfileStackLevel"),
    Variable("SmartChargingCtrlr", "PeriodsPerSchedule"),
    Variable("SmartChargingCtrlr", "RateUnit"),
    Variable("SmartChargingCtrlr", "Entries"),
    Variable("EVSE", "Count"),
)
# 2.0.1 Basic auth password (write-only, 16-40 characters, sent as UTF-8 text)
BASIC_AUTH_PASSWORD_201 = Variable("SecurityCtrlr", "BasicAuthPassword")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a charger says about its smart charging (None: it did not say).

    ``rate_units`` is a subset of {"A", "W"}; when a charger names neither, the
    controller should assume "A" (every 1.6 smart-charging charger takes A)."""

    smart_charging: bool | None
    max_stack_level: int | None
    max_periods: int | None
    rate_units: frozenset[str]
    max_profiles: int | None
    connectors: int | None
    raw: dict[str, str | None] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The capabilities as stored in a ``capabilities`` event."""
        return {
            "smart_charging": self.smart_charging,
            "max_stack_level": self.max_stack_level,
            "max_periods": self.max_periods,
            "rate_units": sorted(self.rate_units),
            "max_profiles": self.max_profiles,
            "connectors": self.connectors,
            "raw": dict(self.raw),
        }


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip().strip("'\""))
    except ValueError:
        return None
    return number if number >= 0 else None


def _units(value: str | None) -> frozenset[str]:
    # "Current,Power" per 1.6, "A,W" per 2.0.1; seen in the field: "A", "W",
    # lower case, spaces, ";" separators
    units = set()
    for part in (value or "").replace(";", ",").split(","):
        word = part.strip().strip("'\"").casefold()
        if word in ("current", "a", "amp", "amps", "ampere"):
            units.add("A")
        elif word in ("power", "w", "watt", "watts"):
            units.add("W")
    return frozenset(units)


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    word = value.strip().casefold()
    return True if word == "true" else False if word == "false" else None


def capabilities_16(values: dict[str, str | None]) -> Capabilities:
    """Capabilities from 1.6 configuration keys (GetConfiguration answer)."""
    features = values.get("SupportedFeatureProfiles")
    smart: bool | None = None
    if features is not None:
        names = {f.strip().casefold() for f in features.replace(";", ",").split(",")}
        smart = "smartcharging" in names
    return Capabilities(
        smart_charging=smart,
        max_stack_level=_int(values.get("ChargeProfileMaxStackLevel")),
        max_periods=_int(values.get("ChargingScheduleMaxPeriods")),
        rate_units=_units(values.get("ChargingScheduleAllowedChargingRateUnit")),
        max_profiles=_int(values.get("MaxChargingProfilesInstalled")),
        connectors=_int(values.get("NumberOfConnectors")),
        raw=dict(values),
    )


def capabilities_201(results: dict[str, tuple[str, str | None]]) -> Capabilities:
    """Capabilities from 2.0.1 SmartChargingCtrlr variables (GetVariables answer)."""
    values = {
        name: value for name, (status, value) in results.items() if status == "Accepted"
    }
    smart = _bool(values.get("SmartChargingCtrlr.Enabled"))
    if smart is None and any(k.startswith("SmartChargingCtrlr.") for k in values):
        smart = True  # the controller exists and answers
    return Capabilities(
        smart_charging=smart,
        max_stack_level=_int(values.get("SmartChargingCtrlr.ProfileStackLevel")),
        max_periods=_int(values.get("SmartChargingCtrlr.PeriodsPerSchedule")),
        rate_units=_units(values.get("SmartChargingCtrlr.RateUnit")),
        max_profiles=_int(values.get("SmartChargingCtrlr.Entries")),
        connectors=_int(values.get("EVSE.Count")),
        raw=dict(values),
    )
