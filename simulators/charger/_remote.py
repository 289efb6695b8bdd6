"""Remote control from the CSMS: remote start/stop, TriggerMessage, Reset and
ChangeAvailability."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from protocols.ocpp import ProfileError, from_ocpp16, to_ocpp16
from simulators.charger._connectors import Connector
from simulators.charger._transactions import TransactionsLayer

log = logging.getLogger("fusebox.sim.charger")


class RemoteControlLayer(TransactionsLayer):
    """What the CSMS asks a charger to do."""

    def _free_connector(self, connector_id: int | None) -> Connector | None:
        if connector_id is not None:
            connector = self.connectors.get(connector_id)
            if connector is None or connector.tx is not None or not connector.operative:
                return None
            return connector
        for connector in self.connectors.values():
            if connector.tx is None and connector.operative:
                return connector
        return None

    def remote_start(
        self,
        connector_id: int | None,
        id_tag: str,
        remote_start_id: int | None,
        profile_wire: dict[str, Any] | None,
    ) -> bool:
        """A remote start: ``False`` if no connector is free; else the start (and a
        plug, if no EV is there) runs as a task after the answer."""
        connector = self._free_connector(connector_id)
        if connector is None:
            return False
        self.spawn(self._remote_start(connector, id_tag, remote_start_id, profile_wire))
        return True

    async def _remote_start(
        self,
        connector: Connector,
        id_tag: str,
        remote_start_id: int | None,
        profile_wire: dict[str, Any] | None,
    ) -> None:
        if connector.ev is None:
            self.plug(connector.id)
        await self.start(
            connector.id, id_tag, remote_start_id=remote_start_id, authorize=False
        )
        if profile_wire is not None and connector.tx is not None:
            if self.version == "1.6":
                # the transaction id may not be known yet (StartTransaction
                # unanswered): installed unbound, the TxProfile applies to the
                # connector's running transaction and goes with it
                try:
                    wire = to_ocpp16(from_ocpp16(profile_wire))
                except ProfileError as exc:
                    log.warning(
                        "charger %s: remote-start profile rejected: %s",
                        self.config.charger_id,
                        exc,
                    )
                    return
                self.state.data["profiles"].append(
                    {"connector": connector.id, "profile": wire}
                )
                self._installed = None
                self.state.save()
            else:
                profile_wire.setdefault("transactionId", connector.tx.ref)
                self.set_profile(
                    {"evseId": connector.id, "chargingProfile": profile_wire}
                )

    def remote_stop(self, transaction_id: int | str) -> bool:
        """A remote stop of the CSMS's ``transaction_id``: ``False`` if unknown."""
        for connector in self.connectors.values():
            tx = connector.tx
            if tx is None:
                continue
            if self.version == "1.6":
                match = self.tx_ids.get(tx.ref) == transaction_id
            else:
                match = tx.ref == transaction_id
            if match:
                self.spawn(self.stop(connector.id, "Remote"))
                return True
        return False

    def trigger(self, requested: str, connector_id: int | None) -> str:
        """TriggerMessage: the status to answer; the message follows as a task."""
        if requested == "BootNotification":
            self.spawn(self._send_triggered_boot())
        elif requested == "Heartbeat":
            self.spawn(self._send_now("Heartbeat", {}, triggered=True))
        elif requested == "StatusNotification":
            for connector in self.connectors.values():
                if connector_id in (None, 0, connector.id):
                    connector.reported_status = None
            self.status_dirty.set()
        elif requested == "MeterValues":
            self.spawn(self._send_triggered_meter_values(connector_id))
        else:
            return "NotImplemented"
        return "Accepted"

    async def reset(self, kind: str) -> None:
        """Reset: stop open transactions, then reconnect (and boot again)."""
        log.info("charger %s: %s reset", self.config.charger_id, kind)
        for connector in self.connectors.values():
            if connector.tx is not None:
                await self.stop(
                    connector.id, "HardReset" if kind == "Hard" else "SoftReset"
                )
        await asyncio.sleep(0.1)
        self.reconnect_now.set()

    def change_availability(self, connector_id: int, operative: bool) -> str:
        """ChangeAvailability for one connector or all (0): the status to answer;
        ``Scheduled`` when a transaction keeps a connector in use."""
        targets = (
            list(self.connectors.values())
            if connector_id == 0
            else [self.connectors[connector_id]]
            if connector_id in self.connectors
            else []
        )
        if not targets:
            return "Rejected"
        scheduled = False
        for connector in targets:
            connector.operative = operative
            if connector.tx is not None:
                scheduled = True
            elif not operative:
                connector.status = "Unavailable"
            elif connector.status == "Unavailable":
                connector.status = "Preparing" if connector.ev else "Available"
        self.status_dirty.set()
        return "Scheduled" if scheduled and not operative else "Accepted"
