"""What the OCPP server's registry knows of each charger, and where events go.

Plain records, no I/O: ``ChargerState`` is mutated by the charger's
``ChargerSession`` (``edge.ocpp.session``) and read by the controller and the
installer's page; ``PendingCharger`` is an unknown charger that discovery let in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from edge.ocpp.commands import Capabilities
from edge.outbox import Event
from protocols.readings import Reading

__all__ = [
    "ApproveOutcome",
    "BootInfo",
    "ChargerState",
    "ConnectorStatus",
    "EventSink",
    "PendingCharger",
    "Registration",
]

Registration = Literal["accepted", "pending"]


class EventSink(Protocol):
    """Where events go: ``edge.outbox.Outbox`` (durable once awaited)."""

    async def append(self, items: Sequence[Event | Reading]) -> object:
        """Store ``items``; durable once the await returns."""


@dataclass(frozen=True, slots=True)
class BootInfo:
    """What a charger said about itself in its last BootNotification."""

    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    reason: str | None  # 2.0.1 only
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    """The last StatusNotification of one connector."""

    status: str
    error_code: str | None  # 1.6 only
    charger_ts: str | None  # as the charger sent it; its clock may be wrong
    received_at: datetime


@dataclass(slots=True)
class ChargerState:
    """The last known state of one charger (kept after it disconnects)."""

    id: str
    ocpp_version: str
    registration: Registration
    connected_at: datetime
    last_seen: datetime
    remote: str | None = None
    connected: bool = True
    boot: BootInfo | None = None
    # (evse_id, connector_id); evse_id is None for 1.6
    connectors: dict[tuple[int | None, int], ConnectorStatus] = field(
        default_factory=dict
    )
    charge_point: object | None = field(default=None, repr=False)
    # smart-charging capabilities read after boot (kept across reconnects)
    capabilities: Capabilities | None = None
    booted: bool = False  # sent BootNotification on this connection
    # the edge may send profiles on this connection: its boot was answered and
    # its capabilities asked, or it did not boot within the backstop (a profile
    # sent before the boot answer may be refused, and was never retried)
    profiles_ready: bool = False
    firmware_status: str | None = None
    # running transactions by connector (1.6) / EVSE (2.0.1): transaction id
    transactions: dict[int, str] = field(default_factory=dict)
    # the latest measured power (W) and energy register (Wh) and when (charger time)
    power_w: float | None = None
    register_wh: float | None = None
    measured_at: datetime | None = None

    def carry_over(self, previous: ChargerState) -> None:
        """Keep what ``previous`` (the same charger's older connection) knew.

        A reconnect often beats the old socket's death, so the newest connection
        wins, but what the charger told us before (boot, connectors, capabilities,
        running transactions, last measurement) still holds until it says
        otherwise."""
        self.boot, self.connectors = previous.boot, dict(previous.connectors)
        self.capabilities = previous.capabilities
        self.firmware_status = previous.firmware_status
        self.transactions = dict(previous.transactions)
        self.power_w, self.register_wh = previous.power_w, previous.register_wh
        self.measured_at = previous.measured_at


@dataclass(frozen=True, slots=True)
class ApproveOutcome:
    """What approving a pending charger did: whether its open connection was
    closed so that it reconnects, and the charger's answer to the new password
    ("Accepted", "Rejected", ..., "NoAnswer"; None: not sent, e.g. offline);
    ``held_for``: the charger was offline, and its password waits for the device
    of its pending connection (named so) to reconnect (``edge.ocpp.pending``)."""

    reconnecting: bool
    password: str | None
    held_for: str | None = None


@dataclass(slots=True)
class PendingCharger:
    """An unknown charger that connected while discovery was on."""

    id: str
    first_seen: datetime
    last_seen: datetime
    remote: str | None
    ocpp_version: str
    boot: BootInfo | None = None
