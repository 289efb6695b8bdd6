"""Charging profiles: one version-neutral model, exact OCPP 1.6 / 2.0.1 payloads.

Build a ``ChargingProfile`` once, then turn it into the JSON object a charger
expects with ``to_ocpp16`` / ``to_ocpp201`` (or the whole SetChargingProfile
request with ``set_charging_profile_16`` / ``set_charging_profile_201``); read a
profile a charger reports with ``from_ocpp16`` / ``from_ocpp201``.

Normalisation happens when the model is built, so what the model holds is exactly
what goes on the wire and what ``protocols.ocpp.composite`` computes with:

* ``limit`` and ``min_charging_rate`` are rounded DOWN to one decimal. The 1.6
  schema declares ``multipleOf: 0.1`` (a strict charger, and the ``ocpp`` library,
  refuse ``16.25``); rounding down rather than to nearest means a limit we send is
  never above the one we meant. 2.0.1 has no such constraint but gets the same
  treatment so that both versions carry identical numbers.
* Timestamps must be timezone-aware and are converted to UTC; they are written as
  ISO 8601 with ``Z`` (whole seconds when there is no fraction).

Units: ``A`` limits are amps PER PHASE, ``W`` limits are TOTAL watts across the
phases in use; a period without ``number_phases`` means 3 phases (OCPP 1.6
§7.13 and 2.0.1 ``ChargingSchedulePeriodType``). ``amps_to_watts`` and
``watts_to_amps`` convert with that convention.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any, Final, TypeVar

__all__ = [
    "DEFAULT_NUMBER_PHASES",
    "DEFAULT_VOLTAGE_V",
    "MAX_SCHEDULES_201",
    "ChargingProfile",
    "ChargingSchedule",
    "JsonObject",
    "ProfileError",
    "ProfileKind",
    "ProfilePurpose",
    "RateUnit",
    "RecurrencyKind",
    "SchedulePeriod",
    "amps_to_watts",
    "floor_tenth",
    "format_utc",
    "from_ocpp16",
    "from_ocpp201",
    "parse_set_charging_profile_16",
    "parse_set_charging_profile_201",
    "parse_utc",
    "set_charging_profile_16",
    "set_charging_profile_201",
    "to_ocpp16",
    "to_ocpp201",
    "watts_to_amps",
]

JsonObject = dict[str, Any]

DEFAULT_NUMBER_PHASES: Final = 3
"""Phases assumed when a period has no ``numberPhases`` (OCPP: "3 SHALL be assumed")."""
DEFAULT_VOLTAGE_V: Final = 230.0
"""Nominal line-to-neutral voltage used for A <-> W conversion."""
MAX_SCHEDULES_201: Final = 3
"""2.0.1 allows up to three schedules per profile (ISO 15118 offers to the EV)."""
_MAX_TRANSACTION_ID_201_CHARS: Final = 36


class ProfileError(ValueError):
    """A charging profile is invalid, or not valid for this version or target.

    ``field`` names the offending field (model name or wire name) when known.
    Not retryable: the same input fails the same way.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ProfilePurpose(StrEnum):
    """Why a profile exists; the wire names differ per version."""

    STATION_MAX = "StationMax"
    """1.6 ``ChargePointMaxProfile`` / 2.0.1 ``ChargingStationMaxProfile``."""
    TX_DEFAULT = "TxDefault"
    """``TxDefaultProfile``: default for (new and running) transactions."""
    TX = "Tx"
    """``TxProfile``: one transaction only; overrules TxDefault while it applies."""
    EXTERNAL_CONSTRAINTS = "ExternalConstraints"
    """2.0.1 only: ``ChargingStationExternalConstraints`` (EMS, DSO...)."""


class ProfileKind(StrEnum):
    """``chargingProfileKind`` (same wire names in both versions)."""

    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"


class RecurrencyKind(StrEnum):
    """``recurrencyKind``, only with ``ProfileKind.RECURRING``."""

    DAILY = "Daily"
    WEEKLY = "Weekly"


class RateUnit(StrEnum):
    """``chargingRateUnit``: amps per phase or total watts."""

    A = "A"
    W = "W"


_PURPOSE_16: Final[dict[ProfilePurpose, str]] = {
    ProfilePurpose.STATION_MAX: "ChargePointMaxProfile",
    ProfilePurpose.TX_DEFAULT: "TxDefaultProfile",
    ProfilePurpose.TX: "TxProfile",
}
_PURPOSE_201: Final[dict[ProfilePurpose, str]] = {
    ProfilePurpose.STATION_MAX: "ChargingStationMaxProfile",
    ProfilePurpose.TX_DEFAULT: "TxDefaultProfile",
    ProfilePurpose.TX: "TxProfile",
    ProfilePurpose.EXTERNAL_CONSTRAINTS: "ChargingStationExternalConstraints",
}
_PURPOSE_FROM_16: Final = {v: k for k, v in _PURPOSE_16.items()}
_PURPOSE_FROM_201: Final = {v: k for k, v in _PURPOSE_201.items()}

_TENTH: Final = Decimal("0.1")
_MAX_RATE: Final = 1_000_000_000  # 1 GW / 1 GA: anything above is a bug, not a limit
_E = TypeVar("_E", bound=StrEnum)


# --------------------------------------------------------------------------- numbers


def floor_tenth(value: float | int | Decimal) -> float:
    """Round ``value`` down to one decimal, exactly (``16.29 -> 16.2``).

    Works on the decimal text of the number, so binary float noise never pushes a
    value that is already on the 0.1 grid down a step.
    """
    exact = value if isinstance(value, Decimal) else Decimal(repr(value))
    return float(exact.quantize(_TENTH, rounding=ROUND_FLOOR))


def _as_rate(value: object, *, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ProfileError(f"{field} must be a number, got {value!r}", field=field)
    finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
    if not finite:
        raise ProfileError(f"{field} must be finite, got {value!r}", field=field)
    if not 0 <= value <= _MAX_RATE:
        raise ProfileError(
            f"{field} must be between 0 and {_MAX_RATE}, got {value!r}", field=field
        )
    return floor_tenth(value)


def _enum(cls: type[_E], value: object, *, field: str) -> _E:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in cls)
        raise ProfileError(
            f"{field} must be one of {choices}, got {value!r}", field=field
        ) from None


def _check_int(value: object, *, field: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{field} must be an integer, got {value!r}", field=field)
    if minimum is not None and value < minimum:
        raise ProfileError(f"{field} must be >= {minimum}, got {value}", field=field)
    return value


def _check_phases(value: int, *, field: str) -> None:
    if value not in (1, 2, 3):
        raise ProfileError(f"{field} must be 1, 2 or 3, got {value}", field=field)


def amps_to_watts(
    current_a: float, phases: int | None = None, voltage_v: float = DEFAULT_VOLTAGE_V
) -> float:
    """Total power of ``current_a`` amps per phase on ``phases`` phases.

    ``phases=None`` means 3 (the OCPP default when ``numberPhases`` is absent).
    """
    n = DEFAULT_NUMBER_PHASES if phases is None else phases
    _check_phases(n, field="phases")
    return current_a * n * voltage_v


def watts_to_amps(
    power_w: float, phases: int | None = None, voltage_v: float = DEFAULT_VOLTAGE_V
) -> float:
    """Current per phase that draws ``power_w`` total over ``phases`` phases.

    ``phases=None`` means 3 (the OCPP default when ``numberPhases`` is absent).
    """
    n = DEFAULT_NUMBER_PHASES if phases is None else phases
    _check_phases(n, field="phases")
    if voltage_v <= 0:
        raise ValueError(f"voltage_v must be positive, got {voltage_v}")
    return power_w / (n * voltage_v)


# ----------------------------------------------------------------------------- times


def _check_time(value: object, *, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise ProfileError(f"{field} must be a datetime, got {value!r}", field=field)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ProfileError(f"{field} must be timezone-aware, got {value}", field=field)
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """``2024-01-01T08:00:00Z``; a fraction is kept to the millisecond (truncated):
    OCPP-J 2.0.1 allows no more than three decimals."""
    utc = _check_time(value, field="timestamp")
    base = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond < 1000:
        return base + "Z"
    return f"{base}.{utc.microsecond // 1000:03d}Z"


def parse_utc(text: object, *, field: str = "timestamp") -> datetime:
    """Parse an ISO 8601 timestamp that carries an offset (``Z`` or ``+hh:mm``).

    A timestamp without an offset is refused: a charger's local time would shift
    every limit by hours.
    """
    if not isinstance(text, str):
        raise ProfileError(f"{field} must be a string, got {text!r}", field=field)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ProfileError(
            f"{field} is not an ISO 8601 timestamp: {text!r}", field=field
        ) from None
    if parsed.tzinfo is None:
        raise ProfileError(
            f"{field} has no UTC offset (expected a trailing 'Z'): {text!r}",
            field=field,
        )
    return parsed.astimezone(UTC)


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class SchedulePeriod:
    """One ``chargingSchedulePeriod``.

    ``start_period_s`` counts from the start of the schedule. ``limit`` is in the
    schedule's ``rate_unit`` and is rounded down to one decimal on construction.
    ``phase_to_use`` (2.0.1 only, 1..3) requires ``number_phases == 1``.
    """

    start_period_s: int
    limit: float
    number_phases: int | None = None
    phase_to_use: int | None = None

    def __post_init__(self) -> None:
        _check_int(self.start_period_s, field="start_period_s", minimum=0)
        object.__setattr__(self, "limit", _as_rate(self.limit, field="limit"))
        if self.number_phases is not None:
            _check_int(self.number_phases, field="number_phases")
            _check_phases(self.number_phases, field="number_phases")
        if self.phase_to_use is not None:
            _check_int(self.phase_to_use, field="phase_to_use")
            if self.phase_to_use not in (1, 2, 3):
                raise ProfileError(
                    f"phase_to_use must be 1, 2 or 3, got {self.phase_to_use}",
                    field="phase_to_use",
                )
            if self.number_phases != 1:
                raise ProfileError(
                    "phase_to_use is only allowed with number_phases=1",
                    field="phase_to_use",
                )


@dataclass(frozen=True, slots=True)
class ChargingSchedule:
    """One ``chargingSchedule``.

    ``periods`` must start at 0 s and strictly increase. Without ``duration_s``
    the last period lasts for ever; with it, the schedule ends after that many
    seconds and a lower stack level (or no limit) takes over. ``schedule_id`` is
    2.0.1's ``ChargingScheduleType.id`` (1.6 has none; ``to_ocpp201`` uses the
    1-based position when it is ``None``).
    """

    rate_unit: RateUnit
    periods: tuple[SchedulePeriod, ...]
    start_schedule: datetime | None = None
    duration_s: int | None = None
    min_charging_rate: float | None = None
    schedule_id: int | None = None

    def __post_init__(self) -> None:
        unit = _enum(RateUnit, self.rate_unit, field="rate_unit")
        object.__setattr__(self, "rate_unit", unit)
        periods = tuple(self.periods)
        object.__setattr__(self, "periods", periods)
        if not periods:
            raise ProfileError("a schedule needs at least one period", field="periods")
        if not all(isinstance(p, SchedulePeriod) for p in periods):
            raise ProfileError(
                "periods must be SchedulePeriod objects", field="periods"
            )
        if periods[0].start_period_s != 0:
            raise ProfileError(
                "the first period must have start_period_s 0, got "
                f"{periods[0].start_period_s}",
                field="start_period_s",
            )
        for before, after in itertools.pairwise(periods):
            if after.start_period_s <= before.start_period_s:
                raise ProfileError(
                    "period starts must strictly increase, got "
                    f"{before.start_period_s} then {after.start_period_s}",
                    field="start_period_s",
                )
        if self.start_schedule is not None:
            object.__setattr__(
                self,
                "start_schedule",
                _check_time(self.start_schedule, field="start_schedule"),
            )
        if self.duration_s is not None:
            _check_int(self.duration_s, field="duration_s", minimum=1)
        if self.min_charging_rate is not None:
            object.__setattr__(
                self,
                "min_charging_rate",
                _as_rate(self.min_charging_rate, field="min_charging_rate"),
            )
        if self.schedule_id is not None:
            _check_int(self.schedule_id, field="schedule_id")


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    """A version-neutral charging profile (the target connector/EVSE is separate).

    Rules checked here hold for both versions: stack level >= 0, 1..3 schedules,
    ``recurrency`` exactly with ``RECURRING``, a ``start_schedule`` on every
    schedule of an Absolute or Recurring profile and on none of a Relative one
    (2.0.1 K01.FR.40/41), ``valid_from < valid_to``, and ``transaction_id`` only
    on a TxProfile. Version- and target-specific rules are checked when building
    or reading a payload. ``transaction_id`` is an ``int`` for 1.6 and a ``str``
    (<= 36 characters) for 2.0.1.
    """

    id: int
    stack_level: int
    purpose: ProfilePurpose
    kind: ProfileKind
    schedules: tuple[ChargingSchedule, ...]
    recurrency: RecurrencyKind | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: int | str | None = None

    def __post_init__(self) -> None:
        _check_int(self.id, field="id")
        _check_int(self.stack_level, field="stack_level", minimum=0)
        purpose = _enum(ProfilePurpose, self.purpose, field="purpose")
        object.__setattr__(self, "purpose", purpose)
        object.__setattr__(self, "kind", _enum(ProfileKind, self.kind, field="kind"))
        if self.recurrency is not None:
            recurrency = _enum(RecurrencyKind, self.recurrency, field="recurrency")
            object.__setattr__(self, "recurrency", recurrency)
        schedules = tuple(self.schedules)
        object.__setattr__(self, "schedules", schedules)
        if not 1 <= len(schedules) <= MAX_SCHEDULES_201:
            raise ProfileError(
                f"a profile needs 1 to {MAX_SCHEDULES_201} schedules, "
                f"got {len(schedules)}",
                field="schedules",
            )
        if not all(isinstance(s, ChargingSchedule) for s in schedules):
            raise ProfileError(
                "schedules must be ChargingSchedule objects", field="schedules"
            )
        if (self.kind is ProfileKind.RECURRING) != (self.recurrency is not None):
            raise ProfileError(
                "recurrency is required with kind Recurring and forbidden otherwise",
                field="recurrency",
            )
        for schedule in schedules:
            if self.kind is ProfileKind.RELATIVE:
                if schedule.start_schedule is not None:
                    raise ProfileError(
                        "a Relative profile must not have a start_schedule",
                        field="start_schedule",
                    )
            elif schedule.start_schedule is None:
                raise ProfileError(
                    f"an {self.kind.value} profile needs a start_schedule",
                    field="start_schedule",
                )
        for name in ("valid_from", "valid_to"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_time(value, field=name))
        if (
            self.valid_from is not None
            and self.valid_to is not None
            and self.valid_from >= self.valid_to
        ):
            raise ProfileError("valid_from must be before valid_to", field="valid_to")
        if self.transaction_id is not None:
            if self.purpose is not ProfilePurpose.TX:
                raise ProfileError(
                    "transaction_id is only allowed on a TxProfile",
                    field="transaction_id",
                )
            tid = self.transaction_id
            if isinstance(tid, bool) or not isinstance(tid, int | str):
                raise ProfileError(
                    "transaction_id must be an int (1.6) or a str (2.0.1), "
                    f"got {tid!r}",
                    field="transaction_id",
                )
            if isinstance(tid, str) and not 1 <= len(tid) <= 36:
                raise ProfileError(
                    "a 2.0.1 transaction_id has 1 to 36 characters",
                    field="transaction_id",
                )

    @property
    def schedule(self) -> ChargingSchedule:
        """The first (for 1.6: the only) schedule; the one the composite uses."""
        return self.schedules[0]


# ------------------------------------------------------------------------ 1.6 wire


def _period_to_wire(period: SchedulePeriod, *, v201: bool) -> JsonObject:
    out: JsonObject = {"startPeriod": period.start_period_s, "limit": period.limit}
    if period.number_phases is not None:
        out["numberPhases"] = period.number_phases
    if period.phase_to_use is not None:
        if not v201:
            raise ProfileError(
                "phaseToUse does not exist in OCPP 1.6", field="phase_to_use"
            )
        out["phaseToUse"] = period.phase_to_use
    return out


def to_ocpp16(profile: ChargingProfile) -> JsonObject:
    """The 1.6 ``ChargingProfile`` object (``csChargingProfiles``).

    Refuses what 1.6 cannot carry: ExternalConstraints, several schedules,
    ``phase_to_use``, a string ``transaction_id``. ``schedule_id`` is dropped.
    A TxProfile without ``transaction_id`` is allowed here because
    RemoteStartTransaction must not carry one (errata 3.41); the SetChargingProfile
    builder insists on it.
    """
    if profile.purpose not in _PURPOSE_16:
        raise ProfileError(
            f"purpose {profile.purpose.value} does not exist in OCPP 1.6",
            field="purpose",
        )
    if len(profile.schedules) != 1:
        raise ProfileError(
            "OCPP 1.6 carries exactly one schedule per profile", field="schedules"
        )
    if isinstance(profile.transaction_id, str):
        raise ProfileError("a 1.6 transactionId is an integer", field="transaction_id")
    out: JsonObject = {"chargingProfileId": profile.id}
    if profile.transaction_id is not None:
        out["transactionId"] = profile.transaction_id
    out["stackLevel"] = profile.stack_level
    out["chargingProfilePurpose"] = _PURPOSE_16[profile.purpose]
    out["chargingProfileKind"] = profile.kind.value
    if profile.recurrency is not None:
        out["recurrencyKind"] = profile.recurrency.value
    if profile.valid_from is not None:
        out["validFrom"] = format_utc(profile.valid_from)
    if profile.valid_to is not None:
        out["validTo"] = format_utc(profile.valid_to)
    schedule = profile.schedule
    sched: JsonObject = {}
    if schedule.duration_s is not None:
        sched["duration"] = schedule.duration_s
    if schedule.start_schedule is not None:
        sched["startSchedule"] = format_utc(schedule.start_schedule)
    sched["chargingRateUnit"] = schedule.rate_unit.value
    sched["chargingSchedulePeriod"] = [
        _period_to_wire(p, v201=False) for p in schedule.periods
    ]
    if schedule.min_charging_rate is not None:
        sched["minChargingRate"] = schedule.min_charging_rate
    out["chargingSchedule"] = sched
    return out


def _check_target_16(connector_id: int, profile: ChargingProfile) -> None:
    _check_int(connector_id, field="connectorId", minimum=0)
    if profile.purpose is ProfilePurpose.STATION_MAX and connector_id != 0:
        raise ProfileError(
            f"ChargePointMaxProfile is only allowed on connector 0, got {connector_id}",
            field="connectorId",
        )
    if profile.purpose is ProfilePurpose.TX:
        if connector_id == 0:
            raise ProfileError(
                "TxProfile needs a connector > 0, got connector 0",
                field="connectorId",
            )
        if profile.transaction_id is None:
            raise ProfileError(
                "TxProfile in SetChargingProfile needs a transaction_id",
                field="transaction_id",
            )


def set_charging_profile_16(connector_id: int, profile: ChargingProfile) -> JsonObject:
    """The 1.6 SetChargingProfile.req payload ``{connectorId, csChargingProfiles}``.

    ChargePointMaxProfile only on connector 0; TxProfile only on a connector > 0
    and with a ``transaction_id``; TxDefaultProfile anywhere (0 = all connectors).
    """
    _check_target_16(connector_id, profile)
    return {"connectorId": connector_id, "csChargingProfiles": to_ocpp16(profile)}


# ---------------------------------------------------------------------- 2.0.1 wire


def to_ocpp201(profile: ChargingProfile) -> JsonObject:
    """The 2.0.1 ``ChargingProfileType`` object (``chargingProfile``).

    ``chargingSchedule`` is a list (1..3); a schedule without ``schedule_id`` gets
    its 1-based position as ``id`` (required by the schema). Refuses an integer
    ``transaction_id`` (2.0.1 uses strings) and a Relative ChargingStationMaxProfile
    (K01.FR.38).
    """
    if isinstance(profile.transaction_id, int):
        raise ProfileError("a 2.0.1 transactionId is a string", field="transaction_id")
    if (
        profile.purpose is ProfilePurpose.STATION_MAX
        and profile.kind is ProfileKind.RELATIVE
    ):
        raise ProfileError(
            "ChargingStationMaxProfile cannot be Relative (K01.FR.38)", field="kind"
        )
    out: JsonObject = {
        "id": profile.id,
        "stackLevel": profile.stack_level,
        "chargingProfilePurpose": _PURPOSE_201[profile.purpose],
        "chargingProfileKind": profile.kind.value,
    }
    if profile.recurrency is not None:
        out["recurrencyKind"] = profile.recurrency.value
    if profile.valid_from is not None:
        out["validFrom"] = format_utc(profile.valid_from)
    if profile.valid_to is not None:
        out["validTo"] = format_utc(profile.valid_to)
    if profile.transaction_id is not None:
        out["transactionId"] = profile.transaction_id
    schedules: list[JsonObject] = []
    for position, schedule in enumerate(profile.schedules, start=1):
        sched: JsonObject = {
            "id": position if schedule.schedule_id is None else schedule.schedule_id
        }
        if schedule.start_schedule is not None:
            sched["startSchedule"] = format_utc(schedule.start_schedule)
        if schedule.duration_s is not None:
            sched["duration"] = schedule.duration_s
        sched["chargingRateUnit"] = schedule.rate_unit.value
        sched["chargingSchedulePeriod"] = [
            _period_to_wire(p, v201=True) for p in schedule.periods
        ]
        if schedule.min_charging_rate is not None:
            sched["minChargingRate"] = schedule.min_charging_rate
        schedules.append(sched)
    out["chargingSchedule"] = schedules
    return out


def _check_target_201(evse_id: int, profile: ChargingProfile) -> None:
    _check_int(evse_id, field="evseId", minimum=0)
    if profile.purpose is ProfilePurpose.STATION_MAX and evse_id != 0:
        raise ProfileError(
            f"ChargingStationMaxProfile is only allowed on evseId 0, got {evse_id}",
            field="evseId",
        )
    if profile.purpose is ProfilePurpose.TX:
        if evse_id == 0:
            raise ProfileError(
                "TxProfile needs an evseId > 0, got 0 (K01.FR.16)", field="evseId"
            )
        if profile.transaction_id is None:
            raise ProfileError(
                "TxProfile in SetChargingProfile needs a transaction_id (K01.FR.03)",
                field="transaction_id",
            )


def set_charging_profile_201(evse_id: int, profile: ChargingProfile) -> JsonObject:
    """The 2.0.1 SetChargingProfileRequest payload ``{evseId, chargingProfile}``.

    ChargingStationMaxProfile only on EVSE 0; TxProfile only on an EVSE > 0 and
    with a ``transaction_id``; TxDefaultProfile and ExternalConstraints anywhere.
    """
    _check_target_201(evse_id, profile)
    return {"evseId": evse_id, "chargingProfile": to_ocpp201(profile)}


# --------------------------------------------------------------------------- reading


class _Reader:
    """Typed access to one JSON object with errors that name the wire field."""

    def __init__(self, obj: object, *, where: str, allowed: frozenset[str]) -> None:
        if not isinstance(obj, Mapping):
            raise ProfileError(
                f"{where} must be a JSON object, got {obj!r}", field=where
            )
        unknown = sorted(str(k) for k in obj if k not in allowed)
        if unknown:
            raise ProfileError(
                f"{where} has unknown field(s): {', '.join(unknown)}", field=unknown[0]
            )
        self._obj: Mapping[str, object] = obj
        self._where = where

    def raw(self, key: str, *, required: bool = False) -> object:
        if key not in self._obj:
            if required:
                raise ProfileError(f"{self._where} lacks {key}", field=key)
            return None
        return self._obj[key]

    def integer(self, key: str, *, required: bool = False) -> int | None:
        value = self.raw(key, required=required)
        return None if value is None else _check_int(value, field=key)

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ProfileError(f"{key} must be a string, got {value!r}", field=key)
        return value

    def time(self, key: str) -> datetime | None:
        value = self.raw(key)
        return None if value is None else parse_utc(value, field=key)

    def enum_value(self, key: str, table: Mapping[str, Any], *, required: bool) -> Any:
        value = self.string(key, required=required)
        if value is None:
            return None
        if value not in table:
            raise ProfileError(
                f"{key} must be one of {', '.join(table)}, got {value!r}", field=key
            )
        return table[value]


_KINDS: Final = {k.value: k for k in ProfileKind}
_RECURRENCIES: Final = {k.value: k for k in RecurrencyKind}
_UNITS: Final = {u.value: u for u in RateUnit}
_CUSTOM_DATA: Final = "customData"  # 2.0.1's extension point: accepted, ignored


def _read_periods(value: object, *, v201: bool) -> tuple[SchedulePeriod, ...]:
    if not isinstance(value, list) or not value:
        raise ProfileError(
            "chargingSchedulePeriod must be a non-empty list",
            field="chargingSchedulePeriod",
        )
    allowed = {"startPeriod", "limit", "numberPhases"}
    if v201:
        allowed |= {"phaseToUse", _CUSTOM_DATA}
    periods = []
    for item in value:
        r = _Reader(item, where="chargingSchedulePeriod", allowed=frozenset(allowed))
        start = r.integer("startPeriod", required=True)
        assert start is not None
        periods.append(
            SchedulePeriod(
                start_period_s=start,
                limit=_as_rate(r.raw("limit", required=True), field="limit"),
                number_phases=r.integer("numberPhases"),
                phase_to_use=r.integer("phaseToUse") if v201 else None,
            )
        )
    return tuple(periods)


def _read_schedule(value: object, *, v201: bool) -> ChargingSchedule:
    allowed = {
        "duration",
        "startSchedule",
        "chargingRateUnit",
        "chargingSchedulePeriod",
        "minChargingRate",
    }
    if v201:
        # salesTariff is ISO 15118 information for the EV, not a limit: not modelled.
        allowed |= {"id", _CUSTOM_DATA, "salesTariff"}
    r = _Reader(value, where="chargingSchedule", allowed=frozenset(allowed))
    min_rate = r.raw("minChargingRate")
    return ChargingSchedule(
        rate_unit=r.enum_value("chargingRateUnit", _UNITS, required=True),
        periods=_read_periods(
            r.raw("chargingSchedulePeriod", required=True), v201=v201
        ),
        start_schedule=r.time("startSchedule"),
        duration_s=r.integer("duration"),
        min_charging_rate=(
            None if min_rate is None else _as_rate(min_rate, field="minChargingRate")
        ),
        schedule_id=r.integer("id", required=True) if v201 else None,
    )


_PROFILE_FIELDS_16: Final = frozenset(
    {
        "chargingProfileId",
        "transactionId",
        "stackLevel",
        "chargingProfilePurpose",
        "chargingProfileKind",
        "recurrencyKind",
        "validFrom",
        "validTo",
        "chargingSchedule",
    }
)
_PROFILE_FIELDS_201: Final = frozenset(
    {
        "id",
        "stackLevel",
        "chargingProfilePurpose",
        "chargingProfileKind",
        "recurrencyKind",
        "validFrom",
        "validTo",
        "transactionId",
        "chargingSchedule",
        _CUSTOM_DATA,
    }
)


def from_ocpp16(obj: Mapping[str, object]) -> ChargingProfile:
    """Read a 1.6 ``ChargingProfile`` object (as built by ``to_ocpp16`` or received).

    Limits may be ``float``, ``int`` or ``Decimal`` (the ``ocpp`` library parses
    1.6 smart-charging payloads with ``Decimal``); they are rounded down to one
    decimal. Unknown fields are refused (the 1.6 schemas are closed).
    """
    r = _Reader(obj, where="chargingProfile", allowed=_PROFILE_FIELDS_16)
    profile_id = r.integer("chargingProfileId", required=True)
    stack_level = r.integer("stackLevel", required=True)
    assert profile_id is not None and stack_level is not None
    return ChargingProfile(
        id=profile_id,
        stack_level=stack_level,
        purpose=r.enum_value("chargingProfilePurpose", _PURPOSE_FROM_16, required=True),
        kind=r.enum_value("chargingProfileKind", _KINDS, required=True),
        recurrency=r.enum_value("recurrencyKind", _RECURRENCIES, required=False),
        valid_from=r.time("validFrom"),
        valid_to=r.time("validTo"),
        transaction_id=r.integer("transactionId"),
        schedules=(
            _read_schedule(r.raw("chargingSchedule", required=True), v201=False),
        ),
    )


def from_ocpp201(obj: Mapping[str, object]) -> ChargingProfile:
    """Read a 2.0.1 ``ChargingProfileType`` object.

    ``customData`` and a schedule's ``salesTariff`` are accepted and dropped; any
    other unknown field is refused.
    """
    r = _Reader(obj, where="chargingProfile", allowed=_PROFILE_FIELDS_201)
    profile_id = r.integer("id", required=True)
    stack_level = r.integer("stackLevel", required=True)
    assert profile_id is not None and stack_level is not None
    raw_schedules = r.raw("chargingSchedule", required=True)
    if not isinstance(raw_schedules, list) or not raw_schedules:
        raise ProfileError(
            "chargingSchedule must be a non-empty list in 2.0.1",
            field="chargingSchedule",
        )
    return ChargingProfile(
        id=profile_id,
        stack_level=stack_level,
        purpose=r.enum_value(
            "chargingProfilePurpose", _PURPOSE_FROM_201, required=True
        ),
        kind=r.enum_value("chargingProfileKind", _KINDS, required=True),
        recurrency=r.enum_value("recurrencyKind", _RECURRENCIES, required=False),
        valid_from=r.time("validFrom"),
        valid_to=r.time("validTo"),
        transaction_id=r.string("transactionId"),
        schedules=tuple(_read_schedule(s, v201=True) for s in raw_schedules),
    )


def parse_set_charging_profile_16(
    payload: Mapping[str, object],
) -> tuple[int, ChargingProfile]:
    """Read a 1.6 SetChargingProfile.req payload into ``(connector_id, profile)``.

    The same purpose/connector rules as ``set_charging_profile_16`` apply.
    """
    r = _Reader(
        payload,
        where="SetChargingProfile",
        allowed=frozenset({"connectorId", "csChargingProfiles"}),
    )
    connector_id = r.integer("connectorId", required=True)
    assert connector_id is not None
    raw = r.raw("csChargingProfiles", required=True)
    if not isinstance(raw, Mapping):
        raise ProfileError(
            "csChargingProfiles must be a JSON object", field="csChargingProfiles"
        )
    profile = from_ocpp16(raw)
    _check_target_16(connector_id, profile)
    return connector_id, profile


def parse_set_charging_profile_201(
    payload: Mapping[str, object],
) -> tuple[int, ChargingProfile]:
    """Read a 2.0.1 SetChargingProfileRequest payload into ``(evse_id, profile)``.

    The same purpose/EVSE rules as ``set_charging_profile_201`` apply.
    """
    r = _Reader(
        payload,
        where="SetChargingProfileRequest",
        allowed=frozenset({"evseId", "chargingProfile", _CUSTOM_DATA}),
    )
    evse_id = r.integer("evseId", required=True)
    assert evse_id is not None
    raw = r.raw("chargingProfile", required=True)
    if not isinstance(raw, Mapping):
        raise ProfileError(
            "chargingProfile must be a JSON object", field="chargingProfile"
        )
    profile = from_ocpp201(raw)
    _check_target_201(evse_id, profile)
    return evse_id, profile
