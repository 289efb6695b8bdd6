"""Meter values: the sampled values of a connector, 1.6 MeterValues and 2.0.1
TransactionEvents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from simulators.charger._connectors import _CHARGING_STATE_201, Connector
from simulators.charger._core import utc_text
from simulators.charger._messages import MessagesLayer
from simulators.charger._quirks import quirky_samples
from simulators.ev import VOLTAGE_V


class MeterValuesLayer(MessagesLayer):
    """What a connector measures, as the messages of either OCPP version."""

    def _sampled_values(
        self, connector: Connector, context: str, *, quirky: bool = False
    ) -> list[dict[str, Any]]:
        v201 = self.version == "2.0.1"

        def value(
            number: float, measurand: str, unit: str, **extra: str
        ) -> dict[str, Any]:
            sample: dict[str, Any] = {"measurand": measurand, "context": context}
            if v201:
                sample["value"] = number
                sample["unit_of_measure"] = {"unit": unit}
            else:
                sample["value"] = f"{number:g}" if unit != "Wh" else str(int(number))
                sample["unit"] = unit
            sample.update(extra)
            return sample

        power_w = round(connector.power_w, 1)
        values = [
            value(connector.register_wh, "Energy.Active.Import.Register", "Wh"),
            value(power_w, "Power.Active.Import", "W"),
        ]
        ev = connector.ev
        phases = self.config.phases if ev is None else ev.phases
        current_a = round(connector.power_w / (VOLTAGE_V * phases), 2)
        for n in range(1, phases + 1):
            values.append(value(current_a, "Current.Import", "A", phase=f"L{n}"))
        if ev is not None:
            values.append(value(round(ev.soc_pct, 1), "SoC", "Percent", location="EV"))
        if quirky:
            if v201:
                values[0]["value"] = repr(float(values[0]["value"]))
            values += quirky_samples(self.version)
        return values

    def _meter_value(
        self, connector: Connector, now: datetime, context: str, *, quirky: bool = False
    ) -> Any:
        """One meter value; ``quirky`` (transaction messages of a ``--quirks``
        charger) adds the sampled values the schemas refuse (``_quirks``)."""
        return {
            "timestamp": utc_text(now),
            "sampled_value": self._sampled_values(connector, context, quirky=quirky),
        }

    def _event_201(
        self,
        connector: Connector,
        event_type: str,
        trigger: str,
        now: datetime,
        context: str,
        *,
        id_token: str | None = None,
    ) -> dict[str, Any]:
        tx = connector.tx
        assert tx is not None
        info: dict[str, Any] = {
            "transaction_id": tx.ref,
            "charging_state": _CHARGING_STATE_201.get(connector.status, "EVConnected"),
        }
        if event_type == "Ended":
            info["charging_state"] = "EVConnected" if connector.ev else "Idle"
        if tx.remote_start_id is not None and event_type == "Started":
            info["remote_start_id"] = tx.remote_start_id
        payload: dict[str, Any] = {
            "event_type": event_type,
            "timestamp": utc_text(now),
            "trigger_reason": trigger,
            "transaction_info": info,
            "evse": {"id": connector.id, "connector_id": 1},
            "meter_value": [
                self._meter_value(connector, now, context, quirky=self.config.quirks)
            ],
        }
        if id_token is not None:
            payload["id_token"] = {"id_token": id_token, "type": "ISO14443"}
        return payload

    def _queue_meter_values(self, connector: Connector, now: datetime) -> None:
        if self.version == "1.6":
            self.enqueue(
                "meter",
                "MeterValues",
                {
                    "connector_id": connector.id,
                    "transaction_id": None,
                    "meter_value": [
                        self._meter_value(
                            connector,
                            now,
                            "Sample.Periodic",
                            quirky=self.config.quirks,
                        )
                    ],
                },
                connector,
            )
        else:
            self.enqueue(
                "meter",
                "TransactionEvent",
                self._event_201(
                    connector, "Updated", "MeterValuePeriodic", now, "Sample.Periodic"
                ),
                connector,
            )

    async def _send_triggered_meter_values(self, connector_id: int | None) -> None:
        now = self.clock()
        for connector in self.connectors.values():
            if connector_id not in (None, 0, connector.id):
                continue
            if self.version == "1.6":
                payload: dict[str, Any] = {
                    "connector_id": connector.id,
                    "meter_value": [self._meter_value(connector, now, "Trigger")],
                }
            else:
                payload = {
                    "evse_id": connector.id,
                    "meter_value": [self._meter_value(connector, now, "Trigger")],
                }
            await self._send_now("MeterValues", payload, triggered=True)
