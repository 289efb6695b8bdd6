"""Schedules as leases, and the commands and reports around them (sync contract v1).

Topics (under ``fusebox/v1/gw/{gateway_id}/``)::

    down/schedule       cloud -> edge   Lease, retained: the newest plan for the site
    down/cmd            cloud -> edge   Command: boost, cancel boost, set preferences
    up/schedule_status  edge -> cloud   ScheduleStatus: what each charger really got
    up/cmd_result       edge -> cloud   CommandResult

A **lease** is a plan with a shelf life (ARCHITECTURE decision 4). It carries:

* ``version``: rising per gateway; the edge ignores a lease older than the one it
  holds (a retained message can be redelivered after a newer one);
* ``valid_until_ms``: after it, the edge stops following ``periods`` and, if no newer
  lease has come, replans locally with the same planner from what the lease also
  carries: each charger's **request** (energy still needed, ready-by, powers) and the
  **price and carbon curves** of the horizon (``slots_start_ms``, half-hourly);
* ``site``: the main fuse the plan was made under (the edge's own fuse guard still
  applies whatever the lease says).

Every time is milliseconds since the Unix epoch, UTC. Powers are W, currents A.
Encoding is MessagePack, like every contract message (``protocols.contract.pack``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protocols.contract import ContractError, GatewayId, TsMs, gateway_topic
from protocols.contract import _short as _short_error
from protocols.contract import _unpack as _unpack_map

__all__ = [
    "MAX_LEASE_BYTES",
    "SLOT_MS",
    "ChargerLease",
    "ChargerRequest",
    "Command",
    "CommandResult",
    "Lease",
    "LeasePeriod",
    "ScheduleState",
    "ScheduleStatus",
    "SiteInfo",
    "down_cmd",
    "down_schedule",
    "unpack_command",
    "unpack_command_result",
    "unpack_lease",
    "unpack_schedule_status",
    "up_cmd_result",
    "up_schedule_status",
]

SLOT_MS = 30 * 60 * 1000
MAX_LEASE_BYTES = 512 * 1024
_MAX_SLOTS = 7 * 48  # a week of half-hours
_CHARGER_ID = r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$"

ChargerId = Annotated[str, Field(pattern=_CHARGER_ID)]
Watts = Annotated[float, Field(ge=0, le=1_000_000)]


def down_schedule(gateway_id: str) -> str:
    return gateway_topic(gateway_id, "down/schedule")


def down_cmd(gateway_id: str) -> str:
    return gateway_topic(gateway_id, "down/cmd")


def up_schedule_status(gateway_id: str) -> str:
    return gateway_topic(gateway_id, "up/schedule_status")


def up_cmd_result(gateway_id: str) -> str:
    return gateway_topic(gateway_id, "up/cmd_result")


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    v: Literal[1] = 1


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class LeasePeriod(_Part):
    """Charge at most ``limit_w`` from ``start_ms`` (inclusive) to ``end_ms``."""

    start_ms: TsMs
    end_ms: TsMs
    limit_w: Watts

    @model_validator(mode="after")
    def _ordered(self) -> LeasePeriod:
        if self.end_ms <= self.start_ms:
            raise ValueError("end_ms must be after start_ms")
        return self


class ChargerRequest(_Part):
    """What the owner asked for, as the planner needs it to replan offline."""

    energy_needed_kwh: Annotated[float, Field(ge=0, le=1000)]
    ready_by_ms: TsMs
    max_power_w: Annotated[float, Field(gt=0, le=1_000_000)]
    min_power_w: Watts | None = None
    phases: Literal[1, 3] = 1
    # energy the charger's register showed when the request was made, so the edge
    # can tell how much of ``energy_needed_kwh`` is still to come
    register_wh_at_request: Annotated[float, Field(ge=0)] | None = None


class ChargerLease(_Part):
    """One charger's part of the lease. No periods: do not charge (mode off) unless
    a boost says otherwise; the charger's fail-safe profile still applies."""

    charger_id: ChargerId
    connector_id: Annotated[int, Field(ge=1, le=64)] = 1
    mode: Literal["smart", "boost", "off"] = "smart"
    periods: list[LeasePeriod] = Field(default_factory=list, max_length=_MAX_SLOTS)
    request: ChargerRequest | None = None
    feasible: bool = True

    @model_validator(mode="after")
    def _sorted(self) -> ChargerLease:
        for before, after in zip(self.periods, self.periods[1:], strict=False):
            if after.start_ms < before.end_ms:
                raise ValueError("periods must be sorted and must not overlap")
        return self

    def limit_at(self, ts_ms: int) -> float | None:
        """The planned limit at ``ts_ms`` (0 between periods); None past the last
        period's end (the plan does not say)."""
        if not self.periods or ts_ms >= self.periods[-1].end_ms:
            return None
        for period in self.periods:
            if period.start_ms <= ts_ms < period.end_ms:
                return period.limit_w
        return 0.0


class SiteInfo(_Part):
    main_fuse_a: Annotated[float, Field(gt=0, le=2000)]
    phases: Literal[1, 3] = 1
    voltage_v: Annotated[float, Field(gt=0, le=1000)] = 230.0


class Lease(_Msg):
    """The plan for one gateway's chargers, retained on ``down/schedule``."""

    type: Literal["lease"] = "lease"
    gw: GatewayId
    version: Annotated[int, Field(ge=1, lt=2**63)]
    issued_ms: TsMs
    valid_until_ms: TsMs
    site: SiteInfo
    objective: Literal["cost", "carbon", "mix"] = "cost"
    carbon_weight: Annotated[float, Field(ge=0, le=1)] = 0.5
    slots_start_ms: TsMs
    price_p_per_kwh: list[Annotated[float, Field(ge=-1000, le=1000)]] = Field(
        max_length=_MAX_SLOTS
    )
    carbon_g_per_kwh: list[Annotated[float, Field(ge=0, le=5000)]] = Field(
        default_factory=list, max_length=_MAX_SLOTS
    )
    chargers: list[ChargerLease] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _consistent(self) -> Lease:
        if self.valid_until_ms <= self.issued_ms:
            raise ValueError("valid_until_ms must be after issued_ms")
        if self.slots_start_ms % SLOT_MS:
            raise ValueError("slots_start_ms must be a half-hour boundary")
        if self.carbon_g_per_kwh and len(self.carbon_g_per_kwh) != len(
            self.price_p_per_kwh
        ):
            raise ValueError("carbon_g_per_kwh must have one value per price slot")
        ids = [c.charger_id for c in self.chargers]
        if len(ids) != len(set(ids)):
            raise ValueError("a charger appears twice")
        return self

    @property
    def slots_end_ms(self) -> int:
        return self.slots_start_ms + SLOT_MS * len(self.price_p_per_kwh)

    def charger(self, charger_id: str) -> ChargerLease | None:
        return next((c for c in self.chargers if c.charger_id == charger_id), None)


class Command(_Msg):
    """A command for the edge (``down/cmd``), idempotent by ``id``.

    ``boost``: charge ``charger_id`` at full power (under the fuse guard) until
    ``until_ms`` or until the session ends; ``cancel_boost``: back to the plan."""

    type: Literal["cmd"] = "cmd"
    id: Annotated[str, Field(min_length=1, max_length=64)]
    gw: GatewayId
    action: Literal["boost", "cancel_boost"]
    charger_id: ChargerId
    issued_ms: TsMs
    until_ms: TsMs | None = None


class CommandResult(_Msg):
    type: Literal["cmd_result"] = "cmd_result"
    id: Annotated[str, Field(min_length=1, max_length=64)]
    gw: GatewayId
    ok: bool
    detail: Annotated[str, Field(max_length=500)] = ""
    at_ms: TsMs


ScheduleState = Literal[
    "applied",  # the charger accepted the planned limit
    "rejected",  # the charger refused the profile (detail says why)
    "fuse_limited",  # the fuse guard holds it below the plan
    "boost",  # full power on the owner's request (fuse guard still applies)
    "local_plan",  # the lease ran out with the cloud unreachable: replanned here
    "default_window",  # nothing known: the site's off-peak window
    "safe_current",  # meter data stale: the configured safe current
    "not_connected",  # the charger is not connected to the edge
]


class ScheduleStatus(_Msg):
    """What one charger got, sent on every change (``up/schedule_status``)."""

    type: Literal["schedule_status"] = "schedule_status"
    gw: GatewayId
    charger_id: ChargerId
    lease_version: Annotated[int, Field(ge=0)]
    state: ScheduleState
    limit_w: Watts
    planned_w: Watts | None = None
    at_ms: TsMs
    detail: Annotated[str, Field(max_length=500)] = ""


def _decode(payload: bytes, model: type[Any], limit: int) -> Any:
    data = _unpack_map(payload, limit)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ContractError(_short_error(exc)) from None


def unpack_lease(payload: bytes) -> Lease:
    """Decode and validate a lease; ``ContractError`` with a short reason if not."""
    lease: Lease = _decode(payload, Lease, MAX_LEASE_BYTES)
    return lease


def unpack_command(payload: bytes) -> Command:
    command: Command = _decode(payload, Command, 16 * 1024)
    return command


def unpack_command_result(payload: bytes) -> CommandResult:
    result: CommandResult = _decode(payload, CommandResult, 16 * 1024)
    return result


def unpack_schedule_status(payload: bytes) -> ScheduleStatus:
    status: ScheduleStatus = _decode(payload, ScheduleStatus, 16 * 1024)
    return status
