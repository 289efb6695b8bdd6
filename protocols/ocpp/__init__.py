"""OCPP helpers that need no connection: charging profiles and composite schedules.

Pure: no I/O, no clock, no ``ocpp`` library (that stays behind ``edge/ocpp/lib.py``).

Profiles (``protocols.ocpp.profiles``)::

    ChargingProfile(id, stack_level, purpose, kind, schedules, recurrency=None,
                    valid_from=None, valid_to=None, transaction_id=None)
    ChargingSchedule(rate_unit, periods, start_schedule=None, duration_s=None,
                     min_charging_rate=None, schedule_id=None)
    SchedulePeriod(start_period_s, limit, number_phases=None, phase_to_use=None)

    to_ocpp16(profile) -> dict            # csChargingProfiles object
    to_ocpp201(profile) -> dict           # chargingProfile object
    set_charging_profile_16(connector_id, profile) -> dict   # whole request
    set_charging_profile_201(evse_id, profile) -> dict       # whole request
    from_ocpp16(obj) / from_ocpp201(obj) -> ChargingProfile
    parse_set_charging_profile_16(payload) / _201(payload) -> (target, profile)
    amps_to_watts(current_a, phases=3, voltage_v=230)
    watts_to_amps(power_w, phases=3, voltage_v=230)

Limits are rounded DOWN to one decimal when a model is built (the 1.6 schema's
``multipleOf: 0.1``; down so that a limit is never exceeded). ``A`` is per phase,
``W`` is total; a missing ``numberPhases`` means 3.

Composite (``protocols.ocpp.composite``)::

    composite_schedule(installed, *, now, duration_s, connector_id,
                       transaction_active, rate_unit, ...) -> CompositeSchedule
    limit_at(installed, t, *, connector_id, transaction_active, rate_unit, ...)
        -> EffectiveLimit | None      # None: unconstrained

Frames and meter values before the ``ocpp`` library sees them (import the
modules themselves)::

    protocols.ocpp.frames    screen(raw, version) -> Route | Reject | Drop,
                             refuse_while_pending(frame, version)
    protocols.ocpp.salvage   salvage(version, action, payload, rules, *,
                             received_at) -> Salvage: bad sampled values mended
                             (tolerated) or dropped (skipped), with reasons

Errors::

    ValueError
     ├── ProfileError        .field: str | None
     │     an invalid profile, one the target version cannot carry, or a
     │     purpose on the wrong connector/EVSE. Not retryable: fix the input.
     └── (plain ValueError)  caller errors of the composite functions: naive
                             datetimes, duration_s <= 0, bad voltage/phases.
"""

from __future__ import annotations

from protocols.ocpp.composite import (
    CompositePeriod,
    CompositeSchedule,
    EffectiveLimit,
    InstalledProfile,
    composite_schedule,
    limit_at,
)
from protocols.ocpp.profiles import (
    DEFAULT_NUMBER_PHASES,
    DEFAULT_VOLTAGE_V,
    MAX_SCHEDULES_201,
    ChargingProfile,
    ChargingSchedule,
    JsonObject,
    ProfileError,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    RecurrencyKind,
    SchedulePeriod,
    amps_to_watts,
    floor_tenth,
    format_utc,
    from_ocpp16,
    from_ocpp201,
    parse_set_charging_profile_16,
    parse_set_charging_profile_201,
    parse_utc,
    set_charging_profile_16,
    set_charging_profile_201,
    to_ocpp16,
    to_ocpp201,
    watts_to_amps,
)

__all__ = [
    "DEFAULT_NUMBER_PHASES",
    "DEFAULT_VOLTAGE_V",
    "MAX_SCHEDULES_201",
    "ChargingProfile",
    "ChargingSchedule",
    "CompositePeriod",
    "CompositeSchedule",
    "EffectiveLimit",
    "InstalledProfile",
    "JsonObject",
    "ProfileError",
    "ProfileKind",
    "ProfilePurpose",
    "RateUnit",
    "RecurrencyKind",
    "SchedulePeriod",
    "amps_to_watts",
    "composite_schedule",
    "floor_tenth",
    "format_utc",
    "from_ocpp16",
    "from_ocpp201",
    "limit_at",
    "parse_set_charging_profile_16",
    "parse_set_charging_profile_201",
    "parse_utc",
    "set_charging_profile_16",
    "set_charging_profile_201",
    "to_ocpp16",
    "to_ocpp201",
    "watts_to_amps",
]
