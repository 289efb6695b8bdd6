"""The composite schedule: the effective limit of a set of installed profiles.

``limit_at`` answers "what may this connector draw at instant ``t``";
``composite_schedule`` answers it for every instant of ``[now, now + duration)``
as a list of periods, the way a charger answers GetCompositeSchedule. Both are
pure: ``now``/``t`` and the transaction facts are parameters.

How the limit at an instant is found (OCPP 1.6 §3.13, 2.0.1 K08):

1. A profile is *in effect* at ``t`` when ``valid_from <= t < valid_to`` and its
   (first) schedule is running: Absolute from ``start_schedule``; Recurring from
   the latest ``start_schedule + k * 24 h`` (Daily) or ``* 7 d`` (Weekly) at or
   before ``t`` (``k`` may be negative: ``start_schedule`` anchors the recurrence,
   validity is what bounds it); Relative from ``transaction_start``. A schedule
   ends after ``duration_s`` (or, Recurring, at the next repetition); without a
   duration its last period holds.
2. Within one purpose the in-effect profile with the highest stack level wins; a
   profile that is not in effect lets the next lower level through.
3. Per connector ``c > 0``: the station maximum (profiles on connector 0),
   external constraints on 0 and on ``c`` (2.0.1), and the transaction limit:
   the TxProfile on ``c`` when a transaction is active and one is in effect, else
   the TxDefaultProfile (on ``c`` or on 0; at equal stack level ``c`` wins, as a
   connector-specific default replaces the station-wide one). TxProfile overrules
   TxDefault rather than being combined with it (1.6 §3.13.2). For ``c == 0`` only
   the station-wide purposes (station maximum, external constraints on 0) count.
4. The effective limit is the minimum of those (and ``charger_max``).

Units. Each limit has its own unit and phase count (absent: ``default_phases``).
The effective phase count is the smallest phase count among the applicable limits.
Each limit is converted into the requested unit at that phase count (``A`` is per
phase, ``W`` is total) before taking the minimum, then rounded DOWN to one decimal.
``charger_max`` is in the requested unit. Without any applicable limit (and no
``charger_max``) the connector is unconstrained: ``limit_at`` returns ``None`` and
the composite period has ``limit=None``.

2.0.1 profiles with several schedules (ISO 15118 offers) use the first one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from protocols.ocpp.profiles import (
    DEFAULT_NUMBER_PHASES,
    DEFAULT_VOLTAGE_V,
    ChargingProfile,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    RecurrencyKind,
    floor_tenth,
)

__all__ = [
    "CompositePeriod",
    "CompositeSchedule",
    "EffectiveLimit",
    "InstalledProfile",
    "composite_schedule",
    "limit_at",
]

_RECURRENCE: Final = {
    RecurrencyKind.DAILY: timedelta(days=1),
    RecurrencyKind.WEEKLY: timedelta(days=7),
}


@dataclass(frozen=True, slots=True)
class InstalledProfile:
    """A profile as installed on a charger: on ``connector_id`` (1.6) / EVSE (2.0.1).

    Connector 0 means station-wide (ChargePointMax, TxDefault for all connectors).
    """

    connector_id: int
    profile: ChargingProfile

    def __post_init__(self) -> None:
        if isinstance(self.connector_id, bool) or self.connector_id < 0:
            raise ValueError(f"connector_id must be >= 0, got {self.connector_id}")


@dataclass(frozen=True, slots=True)
class EffectiveLimit:
    """The limit in force at one instant, in the requested unit."""

    limit: float
    number_phases: int


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    """``[start, end)`` with one effective limit (``None``: unconstrained).

    ``start_s`` is the offset from the schedule start in seconds (fractional only
    when an input time had a fraction of a second).
    """

    start_s: float
    start: datetime
    end: datetime
    limit: float | None
    number_phases: int


@dataclass(frozen=True, slots=True)
class CompositeSchedule:
    """The effective limits over ``[start, start + duration_s)``, in ``rate_unit``.

    ``periods`` are contiguous, cover the whole window, and no two neighbours have
    the same limit and phase count.
    """

    start: datetime
    duration_s: int
    rate_unit: RateUnit
    periods: tuple[CompositePeriod, ...]

    def period_at(self, t: datetime) -> CompositePeriod:
        """The period containing ``t``; ``ValueError`` outside the window."""
        for period in self.periods:
            if period.start <= t < period.end:
                return period
        raise ValueError(f"{t} is outside [{self.start}, +{self.duration_s} s)")


# ---------------------------------------------------------------- one profile at t


@dataclass(frozen=True, slots=True)
class _Rate:
    value: Decimal
    unit: RateUnit
    phases: int | None


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value}")
    return value


def _is_valid(profile: ChargingProfile, t: datetime) -> bool:
    if profile.valid_from is not None and t < profile.valid_from:
        return False
    return profile.valid_to is None or t < profile.valid_to


def _schedule_start(
    profile: ChargingProfile, t: datetime, relative_start: datetime
) -> datetime | None:
    """Start of the run of the schedule that covers ``t`` (None: not started)."""
    schedule = profile.schedule
    if profile.kind is ProfileKind.RELATIVE:
        start = relative_start
    else:
        assert schedule.start_schedule is not None  # the model guarantees it
        start = schedule.start_schedule
        if profile.kind is ProfileKind.RECURRING:
            assert profile.recurrency is not None
            every = _RECURRENCE[profile.recurrency]
            return start + ((t - start) // every) * every
    return start if start <= t else None


def _rate_in_effect(
    profile: ChargingProfile, t: datetime, relative_start: datetime
) -> _Rate | None:
    if not _is_valid(profile, t):
        return None
    start = _schedule_start(profile, t, relative_start)
    if start is None:
        return None
    schedule = profile.schedule
    elapsed = t - start
    if schedule.duration_s is not None and elapsed >= timedelta(
        seconds=schedule.duration_s
    ):
        return None
    current = schedule.periods[0]
    for period in schedule.periods[1:]:
        if timedelta(seconds=period.start_period_s) > elapsed:
            break
        current = period
    return _Rate(
        Decimal(repr(current.limit)), schedule.rate_unit, current.number_phases
    )


def _prevailing(
    candidates: Sequence[InstalledProfile],
    t: datetime,
    relative_start: datetime,
    preferred_connector: int,
) -> _Rate | None:
    """Highest stack level in effect; ties: the preferred connector, then higher id."""
    best: tuple[tuple[int, bool, int], _Rate] | None = None
    for installed in candidates:
        rate = _rate_in_effect(installed.profile, t, relative_start)
        if rate is None:
            continue
        key = (
            installed.profile.stack_level,
            installed.connector_id == preferred_connector,
            installed.profile.id,
        )
        if best is None or key > best[0]:
            best = (key, rate)
    return None if best is None else best[1]


# ------------------------------------------------------------------ selection


@dataclass(frozen=True, slots=True)
class _Groups:
    """The installed profiles that can matter for one connector, by role."""

    station: tuple[InstalledProfile, ...]
    external: tuple[tuple[InstalledProfile, ...], ...]
    tx: tuple[InstalledProfile, ...]
    tx_default: tuple[InstalledProfile, ...]

    def all(self) -> tuple[InstalledProfile, ...]:
        out = self.station + self.tx + self.tx_default
        for group in self.external:
            out += group
        return out


def _group(
    profiles: Iterable[InstalledProfile],
    *,
    connector_id: int,
    transaction_active: bool,
    transaction_id: int | str | None,
) -> _Groups:
    if isinstance(connector_id, bool) or connector_id < 0:
        raise ValueError(f"connector_id must be >= 0, got {connector_id}")
    station: list[InstalledProfile] = []
    external_0: list[InstalledProfile] = []
    external_c: list[InstalledProfile] = []
    tx: list[InstalledProfile] = []
    tx_default: list[InstalledProfile] = []
    for installed in profiles:
        if not isinstance(installed, InstalledProfile):
            raise TypeError(f"expected InstalledProfile, got {type(installed)!r}")
        purpose = installed.profile.purpose
        on_zero = installed.connector_id == 0
        on_this = connector_id > 0 and installed.connector_id == connector_id
        if purpose is ProfilePurpose.STATION_MAX:
            if on_zero:
                station.append(installed)
        elif purpose is ProfilePurpose.EXTERNAL_CONSTRAINTS:
            if on_zero:
                external_0.append(installed)
            elif on_this:
                external_c.append(installed)
        elif connector_id == 0:
            continue  # Tx/TxDefault are per connector; connector 0 is station-wide
        elif purpose is ProfilePurpose.TX:
            tid = installed.profile.transaction_id
            if (
                on_this
                and transaction_active
                and (tid is None or transaction_id is None or tid == transaction_id)
            ):
                tx.append(installed)
        elif on_zero or on_this:
            tx_default.append(installed)
    return _Groups(
        station=tuple(station),
        external=(tuple(external_0), tuple(external_c)),
        tx=tuple(tx),
        tx_default=tuple(tx_default),
    )


@dataclass(frozen=True, slots=True)
class _Settings:
    connector_id: int
    rate_unit: RateUnit
    voltage_v: Decimal
    default_phases: int
    charger_max: Decimal | None


def _settings(
    *,
    connector_id: int,
    rate_unit: RateUnit | str,
    voltage_v: float,
    default_phases: int,
    charger_max: float | None,
) -> _Settings:
    if voltage_v <= 0:
        raise ValueError(f"voltage_v must be positive, got {voltage_v}")
    if default_phases not in (1, 2, 3):
        raise ValueError(f"default_phases must be 1, 2 or 3, got {default_phases}")
    if charger_max is not None and charger_max < 0:
        raise ValueError(f"charger_max must not be negative, got {charger_max}")
    return _Settings(
        connector_id=connector_id,
        rate_unit=RateUnit(rate_unit),
        voltage_v=Decimal(repr(float(voltage_v))),
        default_phases=default_phases,
        charger_max=None if charger_max is None else Decimal(repr(charger_max)),
    )


def _convert(rate: _Rate, phases: int, settings: _Settings) -> Decimal:
    if rate.unit is settings.rate_unit:
        return rate.value
    watts_per_amp = settings.voltage_v * phases
    if settings.rate_unit is RateUnit.W:
        return rate.value * watts_per_amp
    return rate.value / watts_per_amp


def _effective(
    groups: _Groups, t: datetime, relative_start: datetime, settings: _Settings
) -> EffectiveLimit | None:
    connector = settings.connector_id
    rates = [
        _prevailing(groups.station, t, relative_start, 0),
        *(_prevailing(g, t, relative_start, connector) for g in groups.external),
    ]
    if connector > 0:
        tx = _prevailing(groups.tx, t, relative_start, connector)
        if tx is None:
            tx = _prevailing(groups.tx_default, t, relative_start, connector)
        rates.append(tx)
    applicable = [r for r in rates if r is not None]
    if not applicable and settings.charger_max is None:
        return None
    phases = min(
        (settings.default_phases if r.phases is None else r.phases for r in applicable),
        default=settings.default_phases,
    )
    values = [_convert(r, phases, settings) for r in applicable]
    if settings.charger_max is not None:
        values.append(settings.charger_max)
    return EffectiveLimit(limit=floor_tenth(min(values)), number_phases=phases)


# ------------------------------------------------------------------ public API


def limit_at(
    profiles: Iterable[InstalledProfile],
    t: datetime,
    *,
    connector_id: int,
    transaction_active: bool,
    rate_unit: RateUnit | str,
    transaction_start: datetime | None = None,
    transaction_id: int | str | None = None,
    voltage_v: float = DEFAULT_VOLTAGE_V,
    default_phases: int = DEFAULT_NUMBER_PHASES,
    charger_max: float | None = None,
) -> EffectiveLimit | None:
    """The effective limit on ``connector_id`` at instant ``t`` (``None``: no limit).

    TxProfiles count only with ``transaction_active`` (and, when
    ``transaction_id`` is given, only those for that transaction or for none).
    Relative profiles run from ``transaction_start``; without it, from ``t``
    ("if charging started now"). See the module docstring for the rules.
    """
    _aware(t, "t")
    relative_start = t if transaction_start is None else transaction_start
    _aware(relative_start, "transaction_start")
    settings, groups = _settings_and_groups(
        profiles, connector_id, transaction_active, rate_unit, transaction_id,
        voltage_v, default_phases, charger_max,
    )  # fmt: skip
    return _effective(groups, t, relative_start, settings)


def _settings_and_groups(
    profiles: Iterable[InstalledProfile],
    connector_id: int,
    transaction_active: bool,
    rate_unit: RateUnit | str,
    transaction_id: int | str | None,
    voltage_v: float,
    default_phases: int,
    charger_max: float | None,
) -> tuple[_Settings, _Groups]:
    """What ``limit_at`` and ``composite_schedule`` both start from: the checked
    settings and the profiles that count, by purpose and stack level."""
    settings = _settings(
        connector_id=connector_id,
        rate_unit=rate_unit,
        voltage_v=voltage_v,
        default_phases=default_phases,
        charger_max=charger_max,
    )
    groups = _group(
        profiles,
        connector_id=connector_id,
        transaction_active=transaction_active,
        transaction_id=transaction_id,
    )
    return settings, groups


def _boundaries(
    profile: ChargingProfile,
    window_start: datetime,
    window_end: datetime,
    relative_start: datetime,
) -> Iterable[datetime]:
    """Every instant at which this profile's contribution may change (superset)."""
    if profile.valid_from is not None:
        yield profile.valid_from
    if profile.valid_to is not None:
        yield profile.valid_to
    schedule = profile.schedule
    offsets = [timedelta(seconds=p.start_period_s) for p in schedule.periods]
    if schedule.duration_s is not None:
        offsets.append(timedelta(seconds=schedule.duration_s))
    if profile.kind is ProfileKind.RELATIVE:
        runs = [relative_start]
    else:
        assert schedule.start_schedule is not None
        anchor = schedule.start_schedule
        if profile.kind is ProfileKind.ABSOLUTE:
            runs = [anchor]
        else:
            assert profile.recurrency is not None
            every = _RECURRENCE[profile.recurrency]
            first = (window_start - anchor) // every
            last = (window_end - anchor) // every
            runs = [anchor + k * every for k in range(first, last + 1)]
    for run in runs:
        for offset in offsets:
            yield run + offset


def composite_schedule(
    profiles: Iterable[InstalledProfile],
    *,
    now: datetime,
    duration_s: int,
    connector_id: int,
    transaction_active: bool,
    rate_unit: RateUnit | str,
    transaction_start: datetime | None = None,
    transaction_id: int | str | None = None,
    voltage_v: float = DEFAULT_VOLTAGE_V,
    default_phases: int = DEFAULT_NUMBER_PHASES,
    charger_max: float | None = None,
) -> CompositeSchedule:
    """The effective limits on ``connector_id`` over ``[now, now + duration_s)``.

    Same rules and parameters as ``limit_at``; Relative profiles run from
    ``transaction_start`` or, without it, from ``now``. For every ``t`` in the
    window ``period_at(t)`` agrees with ``limit_at(..., t,
    transaction_start=transaction_start or now)``.
    """
    _aware(now, "now")
    if isinstance(duration_s, bool) or not isinstance(duration_s, int):
        raise ValueError(f"duration_s must be an integer, got {duration_s!r}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    relative_start = now if transaction_start is None else transaction_start
    _aware(relative_start, "transaction_start")
    settings, groups = _settings_and_groups(
        profiles, connector_id, transaction_active, rate_unit, transaction_id,
        voltage_v, default_phases, charger_max,
    )  # fmt: skip
    end = now + timedelta(seconds=duration_s)
    points = {now}
    for installed in groups.all():
        for instant in _boundaries(installed.profile, now, end, relative_start):
            if now < instant < end:
                points.add(instant)
    starts = sorted(points)
    periods: list[CompositePeriod] = []
    for start, stop in zip(starts, [*starts[1:], end], strict=True):
        effective = _effective(groups, start, relative_start, settings)
        limit = None if effective is None else effective.limit
        phases = (
            settings.default_phases if effective is None else effective.number_phases
        )
        if (
            periods
            and periods[-1].limit == limit
            and periods[-1].number_phases == phases
        ):
            last = periods[-1]
            periods[-1] = CompositePeriod(
                start_s=last.start_s,
                start=last.start,
                end=stop,
                limit=limit,
                number_phases=phases,
            )
            continue
        periods.append(
            CompositePeriod(
                start_s=(start - now).total_seconds(),
                start=start,
                end=stop,
                limit=limit,
                number_phases=phases,
            )
        )
    return CompositeSchedule(
        start=now,
        duration_s=duration_s,
        rate_unit=settings.rate_unit,
        periods=tuple(periods),
    )
