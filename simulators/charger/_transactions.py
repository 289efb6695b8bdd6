"""Local actions (scenario, remote start): plug, unplug, start and stop, and
ending the transactions a previous run left open."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from simulators.charger._config_keys import ConfigurationLayer
from simulators.charger._connectors import Transaction
from simulators.charger._core import utc_text
from simulators.charger._session import LinkDown
from simulators.ocpp_lib import CallError

log = logging.getLogger("fusebox.sim.charger")


class TransactionsLayer(ConfigurationLayer):
    """Transactions on the connectors, started and stopped locally."""

    def _end_interrupted(self) -> None:
        """End the transactions the state file says were open when the previous
        run ended: it shut down cleanly (``Reboot``) or was killed
        (``PowerLoss``). The stop carries the time and register of the last
        save, which is at or after every message queued for the transaction."""
        data = self.state.data
        reason = "Reboot" if data.get("clean_shutdown") else "PowerLoss"
        data["clean_shutdown"] = False
        open_tx: dict[str, dict[str, Any]] = data["open_tx"]
        if not open_tx:
            return
        saved_at = data.get("saved_at")
        at = datetime.fromisoformat(saved_at) if saved_at else self.clock()
        for key, item in sorted(open_tx.items()):
            connector = self.connectors.get(int(key))
            if connector is None:
                open_tx.pop(key)
                continue
            connector.tx = Transaction(
                ref=str(item["ref"]),
                id_tag=str(item["id_tag"]),
                started_at=datetime.fromisoformat(item["started_at"]),
                meter_start_wh=int(item["meter_start_wh"]),
                remote_start_id=item.get("remote_start_id"),
            )
            log.warning(
                "charger %s: transaction %s on %d was open at the restart: ending "
                "it (%s)",
                self.config.charger_id,
                connector.tx.ref,
                connector.id,
                reason,
            )
            self._stop(connector.id, reason, at)

    def plug(self, connector_id: int) -> None:
        """Plug a new EV into ``connector_id`` (nothing if one is there)."""
        connector = self.connectors[connector_id]
        if connector.ev is not None:
            return
        connector.ev = self._new_ev()
        if connector.operative:
            connector.status = "Preparing"
        self.status_dirty.set()
        log.info("charger %s: EV plugged into %d", self.config.charger_id, connector_id)

    def unplug(self, connector_id: int) -> None:
        """Unplug the EV from ``connector_id``."""
        connector = self.connectors[connector_id]
        connector.ev = None
        connector.power_w = 0.0
        connector.status = "Available" if connector.operative else "Unavailable"
        self.status_dirty.set()

    async def start(
        self,
        connector_id: int,
        id_tag: str,
        *,
        remote_start_id: int | None = None,
        authorize: bool = True,
    ) -> None:
        """Start a transaction on a connector with an EV (authorized first unless
        ``authorize`` is false); the start message is queued."""
        connector = self.connectors[connector_id]
        if connector.tx is not None or connector.ev is None:
            return
        if authorize and not await self._authorize(id_tag):
            log.warning("charger %s: %s not authorized", self.config.charger_id, id_tag)
            return
        now = self.clock()
        tx = Transaction(
            ref=str(uuid.uuid4()),
            id_tag=id_tag,
            started_at=now,
            meter_start_wh=connector.register_wh,
            remote_start_id=remote_start_id,
        )
        connector.tx = tx
        connector.next_meter_at = self.clock_s() + self.meter_interval_s
        # saved with the start message below: a restart ends it (see run)
        self.state.data["open_tx"][str(connector_id)] = {
            "ref": tx.ref,
            "id_tag": tx.id_tag,
            "started_at": utc_text(tx.started_at),
            "meter_start_wh": tx.meter_start_wh,
            "remote_start_id": tx.remote_start_id,
        }
        if self.version == "1.6":
            self.enqueue(
                "start",
                "StartTransaction",
                {
                    "connector_id": connector_id,
                    "id_tag": id_tag,
                    "meter_start": tx.meter_start_wh,
                    "timestamp": utc_text(now),
                },
                connector,
            )
        else:
            self.enqueue(
                "start",
                "TransactionEvent",
                self._event_201(
                    connector,
                    "Started",
                    "RemoteStart" if remote_start_id is not None else "Authorized",
                    now,
                    "Transaction.Begin",
                    id_token=id_tag,
                ),
                connector,
            )
        self._update_charging(connector, now)
        log.info(
            "charger %s: transaction %s started on %d at %d Wh",
            self.config.charger_id,
            tx.ref,
            connector_id,
            tx.meter_start_wh,
        )

    async def stop(self, connector_id: int, reason: str = "Local") -> None:
        """Stop the connector's transaction now with ``reason``."""
        self._stop(connector_id, reason, self.clock())

    def _stop(self, connector_id: int, reason: str, now: datetime) -> None:
        """End the connector's transaction at ``now``: the stop message is queued
        (and saved together with the transaction no longer being open)."""
        connector = self.connectors[connector_id]
        tx = connector.tx
        if tx is None:
            return
        self.state.data["open_tx"].pop(str(connector_id), None)
        if self.version == "1.6":
            stop: dict[str, Any] = {
                "meter_stop": connector.register_wh,
                "timestamp": utc_text(now),
                "transaction_id": None,
                "id_tag": tx.id_tag,
                "reason": reason,
            }
            if self.config.quirks:
                stop["transaction_data"] = [
                    self._meter_value(connector, now, "Transaction.End", quirky=True)
                ]
            self.enqueue("stop", "StopTransaction", stop, connector)
        else:
            same = ("Remote", "Local", "Reboot", "PowerLoss")
            stopped = reason if reason in same else "Other"
            if reason in ("HardReset", "SoftReset"):
                stopped = "Reboot" if reason == "HardReset" else "SoftReset"
            trigger = {
                "Remote": "RemoteStop",
                "Reboot": "AbnormalCondition",
                "PowerLoss": "AbnormalCondition",
            }.get(reason, "StopAuthorized")
            payload = self._event_201(
                connector, "Ended", trigger, now, "Transaction.End"
            )
            payload["transaction_info"]["stopped_reason"] = stopped
            self.enqueue("stop", "TransactionEvent", payload, connector)
        connector.tx = None
        connector.power_w = 0.0
        connector.status = "Finishing" if connector.ev is not None else "Available"
        if not connector.operative:
            connector.status = "Unavailable"
        self._drop_tx_profiles(connector)
        self.status_dirty.set()
        log.info(
            "charger %s: transaction %s stopped on %d at %d Wh (%s)",
            self.config.charger_id,
            tx.ref,
            connector_id,
            connector.register_wh,
            reason,
        )

    async def _authorize(self, id_tag: str) -> bool:
        session = self.session
        if session is None or not self.accepted:
            # LocalAuthorizeOffline: an offline charger lets it start; so does
            # one whose boot is Pending (it may not send Authorize yet)
            return True
        payload = (
            {"id_tag": id_tag}
            if self.version == "1.6"
            else {"id_token": {"id_token": id_tag, "type": "ISO14443"}}
        )
        try:
            result = await session.call(self.version, "Authorize", payload, None)
        except LinkDown:
            return True
        except CallError as exc:
            log.warning(
                "charger %s: Authorize refused: %s", self.config.charger_id, exc
            )
            return True
        info = result.get("id_tag_info") or result.get("id_token_info") or {}
        return bool(info.get("status") == "Accepted")
