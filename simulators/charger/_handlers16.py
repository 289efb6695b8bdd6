"""OCPP 1.6 CSMS->charger handlers: answer at once, follow-ups run as tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection

from simulators.charger._session import RESPONSE_TIMEOUT_S, _wire_log
from simulators.ocpp_lib import ChargePoint16, make_result, on, to_camel

if TYPE_CHECKING:
    from simulators.charger._sim import ChargerSim


def _make_cp16(sim: ChargerSim, ws: ClientConnection) -> Any:
    return _Cp16(sim.config.charger_id, ws, RESPONSE_TIMEOUT_S, _wire_log, sim=sim)


class _Cp16(ChargePoint16):  # type: ignore[misc]
    """1.6 CSMS->charger handlers: answer at once, follow-ups run as tasks."""

    def __init__(self, *args: Any, sim: ChargerSim) -> None:
        super().__init__(*args)
        self.sim = sim

    def _r(self, action: str, **fields: Any) -> Any:
        return make_result("1.6", action, **fields)

    @on("SetChargingProfile")
    def set_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> Any:
        status = self.sim.set_profile(
            {
                "connectorId": connector_id,
                "csChargingProfiles": to_camel(cs_charging_profiles),
            }
        )
        return self._r("SetChargingProfile", status=status)

    @on("ClearChargingProfile")
    def clear_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> Any:
        cleared = self.sim.clear_profiles(
            id, connector_id, charging_profile_purpose, stack_level
        )
        return self._r(
            "ClearChargingProfile", status="Accepted" if cleared else "Unknown"
        )

    @on("GetCompositeSchedule")
    def composite(
        self,
        connector_id: int,
        duration: int,
        charging_rate_unit: str | None = None,
        **_: Any,
    ) -> Any:
        answer = self.sim.composite(connector_id, duration, charging_rate_unit)
        if answer is None:
            return self._r("GetCompositeSchedule", status="Rejected")
        start, unit, periods = answer
        return self._r(
            "GetCompositeSchedule",
            status="Accepted",
            connector_id=connector_id,
            schedule_start=start,
            charging_schedule={
                "duration": duration,
                "start_schedule": start,
                "charging_rate_unit": unit,
                "charging_schedule_period": periods,
            },
        )

    @on("RemoteStartTransaction")
    def remote_start(
        self,
        id_tag: str,
        connector_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        accepted = self.sim.remote_start(
            connector_id,
            id_tag,
            None,
            None if charging_profile is None else to_camel(charging_profile),
        )
        status = "Accepted" if accepted else "Rejected"
        return self._r("RemoteStartTransaction", status=status)

    @on("RemoteStopTransaction")
    def remote_stop(self, transaction_id: int, **_: Any) -> Any:
        accepted = self.sim.remote_stop(transaction_id)
        status = "Accepted" if accepted else "Rejected"
        return self._r("RemoteStopTransaction", status=status)

    @on("TriggerMessage")
    def trigger(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        return self._r(
            "TriggerMessage", status=self.sim.trigger(requested_message, connector_id)
        )

    @on("Reset")
    def reset(self, type: str, **_: Any) -> Any:
        self.sim.spawn(self.sim.reset(type))
        return self._r("Reset", status="Accepted")

    @on("ChangeAvailability")
    def change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        status = self.sim.change_availability(connector_id, type == "Operative")
        return self._r("ChangeAvailability", status=status)

    @on("GetConfiguration")
    def get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        known, unknown = self.sim.get_configuration(key)
        return self._r(
            "GetConfiguration", configuration_key=known, unknown_key=unknown or None
        )

    @on("ChangeConfiguration")
    def change_configuration(self, key: str, value: str, **_: Any) -> Any:
        return self._r(
            "ChangeConfiguration", status=self.sim.change_configuration(key, value)
        )
