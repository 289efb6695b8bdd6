"""A connector and the transaction on it (the EV is ``simulators.ev``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from simulators.ev import EvBattery

# 2.0.1 has no Preparing/Charging/... connector status: those are "Occupied" and
# the transaction's chargingState carries the detail.
_STATUS_201: Final = {
    "Available": "Available",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}
_CHARGING_STATE_201: Final = {
    "Preparing": "EVConnected",
    "Charging": "Charging",
    "SuspendedEV": "SuspendedEV",
    "SuspendedEVSE": "SuspendedEVSE",
    "Finishing": "EVConnected",
}


@dataclass(slots=True)
class Transaction:
    """A transaction on a connector, as the charger knows it."""

    ref: str
    """Local reference; in 2.0.1 also the transactionId."""
    id_tag: str
    started_at: datetime
    meter_start_wh: int
    remote_start_id: int | None = None


@dataclass(slots=True)
class Connector:
    """One connector: its energy register, status, EV and transaction."""

    id: int
    energy_wh: float = 0.0
    status: str = "Available"
    reported_status: str | None = None
    ev: EvBattery | None = None
    tx: Transaction | None = None
    power_w: float = 0.0
    offered_w: float | None = None
    operative: bool = True
    next_meter_at: float = 0.0

    @property
    def register_wh(self) -> int:
        """The energy register in whole Wh, as meter values report it."""
        return int(self.energy_wh)
