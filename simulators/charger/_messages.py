"""Messages to the CSMS: the queue of transaction messages (in order, resent
with their message id until answered, kept in the state file) and the
messages sent only while connected (never queued)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from typing import Any, Final

from simulators.charger._connectors import Connector
from simulators.charger._core import ChargerCore, utc_text
from simulators.charger._quirks import quirk_names
from simulators.charger._session import LinkDown, _Session
from simulators.ocpp_lib import CallError

log = logging.getLogger("fusebox.sim.charger")

TX_MESSAGE_ATTEMPTS: Final = 3


class MessagesLayer(ChargerCore):
    """The transaction-message queue and the messages sent now."""

    def enqueue(
        self,
        kind: str,
        action: str,
        payload: dict[str, Any],
        connector: Connector,
    ) -> None:
        """Queue a transaction message for ``connector`` (saved at once); 2.0.1
        messages get the next seqNo and, produced offline, ``offline=true``."""
        tx = connector.tx
        entry = {
            "message_id": str(uuid.uuid4()),
            "kind": kind,
            "action": action,
            "connector": connector.id,
            "tx_ref": None if tx is None else tx.ref,
            "payload": payload,
            "attempts": 0,
            "offline": self.session is None,
        }
        if self.version == "2.0.1":
            payload["seq_no"] = int(self.state.data["seq_no"])
            self.state.data["seq_no"] = payload["seq_no"] + 1
            if self.session is None:
                payload["offline"] = True
        self.queue.append(entry)
        self._save()
        self.queue_changed.set()

    def _resolve(self, entry: dict[str, Any]) -> dict[str, Any]:
        payload = dict(entry["payload"])
        if self.version == "1.6" and entry["action"] != "StartTransaction":
            payload["transaction_id"] = self.tx_ids.get(entry["tx_ref"], -1)
        return payload

    async def _drain(self, session: _Session) -> None:
        """Deliver queued transaction messages in order while connected."""
        while True:
            if not self.queue:
                self.queue_changed.clear()
                await self.queue_changed.wait()
                continue
            entry = self.queue[0]
            payload = self._resolve(entry)
            try:
                result = await session.call(
                    self.version,
                    entry["action"],
                    payload,
                    entry["message_id"],
                    unchecked=self.config.quirks,
                )
            except CallError as exc:
                entry["attempts"] += 1
                if entry["attempts"] >= TX_MESSAGE_ATTEMPTS:
                    log.error(
                        "charger %s: dropping %s after %d CALLERRORs: %s",
                        self.config.charger_id,
                        entry["action"],
                        entry["attempts"],
                        exc,
                    )
                    self.queue.pop(0)
                self._save()
                await asyncio.sleep(0.5 * entry["attempts"])
                continue
            if entry["action"] == "StartTransaction":
                self.tx_ids[entry["tx_ref"]] = int(result.get("transaction_id", -1))
            self.queue.pop(0)
            self._save()
            self.acked += 1
            self._write_ledger(entry, payload)

    def _write_ledger(self, entry: dict[str, Any], payload: dict[str, Any]) -> None:
        line: dict[str, Any] = {
            "charger": self.config.charger_id,
            "ocpp": self.version,
            "kind": entry["kind"],
            "action": entry["action"],
            "connector": entry["connector"],
            "tx_ref": entry["tx_ref"],
            "message_id": entry["message_id"],
            "acked_at": utc_text(self.clock()),
        }
        if self.version == "1.6":
            line["transaction_id"] = (
                self.tx_ids.get(entry["tx_ref"], -1)
                if entry["tx_ref"] is not None
                else None
            )
            line["offline"] = bool(entry.get("offline", False))
            if entry["action"] == "StartTransaction":
                line["timestamp"] = payload["timestamp"]
                line["meter_start_wh"] = payload["meter_start"]
            elif entry["action"] == "StopTransaction":
                line["timestamp"] = payload["timestamp"]
                line["meter_stop_wh"] = payload["meter_stop"]
                line["reason"] = payload.get("reason")
                for sample in payload.get("transaction_data") or []:
                    line.update(_sample_facts(sample["sampled_value"]))
            else:
                sample = payload["meter_value"][0]
                line["timestamp"] = sample["timestamp"]
                line.update(_sample_facts(sample["sampled_value"]))
        else:
            line["transaction_id"] = entry["tx_ref"]
            line["timestamp"] = payload["timestamp"]
            line["seq_no"] = payload["seq_no"]
            line["event_type"] = payload["event_type"]
            line["offline"] = bool(payload.get("offline", False))
            values = payload.get("meter_value") or []
            if values:
                line.update(_sample_facts(values[0]["sampled_value"]))
            register_wh = int(line.get("energy_wh", 0))
            if payload["event_type"] == "Started":
                line["meter_start_wh"] = register_wh
            elif payload["event_type"] == "Ended":
                line["meter_stop_wh"] = register_wh
                line["reason"] = payload["transaction_info"].get("stopped_reason")
        if self.config.quirks and (
            payload.get("meter_value") or payload.get("transaction_data")
        ):
            line["quirks"] = quirk_names(self.version)
        self.ledger.write(line)

    async def _send_now(
        self, action: str, payload: dict[str, Any], *, triggered: bool = False
    ) -> None:
        """Send a non-transaction message if connected and accepted (never
        queued); one the CSMS ``triggered`` (TriggerMessage) goes out while the
        boot is still Pending too (2.0.1 B02.FR.09 allows it). A CALLERROR is
        logged and the message forgotten."""
        session = self.session
        if session is None or not (self.accepted or triggered):
            return
        try:
            await session.call(self.version, action, payload, None)
        except LinkDown:
            pass
        except CallError as exc:
            log.warning(
                "charger %s: %s refused: %s", self.config.charger_id, action, exc
            )

    async def _send_triggered_boot(self) -> None:
        """A BootNotification the CSMS asked for (TriggerMessage). Like every
        non-transaction message it is not queued: when the link drops first (the
        CSMS died right after asking), the answer is simply not needed any more,
        and the next connection boots anyway."""
        with contextlib.suppress(LinkDown, CallError):
            await self._send_boot()

    async def _send_boot(self) -> dict[str, Any]:
        session = self.session
        if session is None:
            raise LinkDown("BootNotification")
        serial = self.config.charger_id[:25]
        if self.version == "1.6":
            payload: dict[str, Any] = {
                "charge_point_vendor": "Fusebox",
                "charge_point_model": "SimCharger",
                "charge_point_serial_number": serial,
                "firmware_version": "sim-1",
            }
        else:
            payload = {
                "charging_station": {
                    "model": "SimCharger",
                    "vendor_name": "Fusebox",
                    "serial_number": serial,
                    "firmware_version": "sim-1",
                },
                "reason": "PowerUp",
            }
        return await session.call(self.version, "BootNotification", payload, None)


_FACTS: Final = {
    "Energy.Active.Import.Register": "energy_wh",
    "Power.Active.Import": "power_w",
    "SoC": "soc_pct",
}


def _sample_facts(sampled: list[dict[str, Any]]) -> dict[str, Any]:
    """The register, power and SoC of one meter value: the first readable value
    of each (``--quirks`` adds unreadable ones after the good ones)."""
    facts: dict[str, Any] = {}
    for sample in sampled:
        fact = _FACTS.get(str(sample.get("measurand")))
        if fact is None or fact in facts:
            continue
        try:
            number = float(sample["value"])
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            facts[fact] = number
    return facts
