"""OCPP 2.0.1 CSMS->charger handlers: answer at once, follow-ups run as tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection

from simulators.charger._session import RESPONSE_TIMEOUT_S, _wire_log
from simulators.ocpp_lib import ChargePoint201, make_result, on, to_camel

if TYPE_CHECKING:
    from simulators.charger._sim import ChargerSim


def _make_cp201(sim: ChargerSim, ws: ClientConnection) -> Any:
    return _Cp201(sim.config.charger_id, ws, RESPONSE_TIMEOUT_S, _wire_log, sim=sim)


class _Cp201(ChargePoint201):  # type: ignore[misc]
    """2.0.1 CSMS->charger handlers: answer at once, follow-ups run as tasks."""

    def __init__(self, *args: Any, sim: ChargerSim) -> None:
        super().__init__(*args)
        self.sim = sim

    def _r(self, action: str, **fields: Any) -> Any:
        return make_result("2.0.1", action, **fields)

    @on("SetChargingProfile")
    def set_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> Any:
        status = self.sim.set_profile(
            {"evseId": evse_id, "chargingProfile": to_camel(charging_profile)}
        )
        return self._r("SetChargingProfile", status=status)

    @on("ClearChargingProfile")
    def clear_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        criteria = charging_profile_criteria or {}
        cleared = self.sim.clear_profiles(
            charging_profile_id,
            criteria.get("evse_id"),
            criteria.get("charging_profile_purpose"),
            criteria.get("stack_level"),
        )
        return self._r(
            "ClearChargingProfile", status="Accepted" if cleared else "Unknown"
        )

    @on("GetCompositeSchedule")
    def composite(
        self,
        duration: int,
        evse_id: int,
        charging_rate_unit: str | None = None,
        **_: Any,
    ) -> Any:
        answer = self.sim.composite(evse_id, duration, charging_rate_unit)
        if answer is None:
            return self._r("GetCompositeSchedule", status="Rejected")
        start, unit, periods = answer
        return self._r(
            "GetCompositeSchedule",
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": duration,
                "schedule_start": start,
                "charging_rate_unit": unit,
                "charging_schedule_period": periods,
            },
        )

    @on("RequestStartTransaction")
    def request_start(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        accepted = self.sim.remote_start(
            evse_id,
            str(id_token.get("id_token", "")),
            remote_start_id,
            None if charging_profile is None else to_camel(charging_profile),
        )
        status = "Accepted" if accepted else "Rejected"
        return self._r("RequestStartTransaction", status=status)

    @on("RequestStopTransaction")
    def request_stop(self, transaction_id: str, **_: Any) -> Any:
        accepted = self.sim.remote_stop(transaction_id)
        status = "Accepted" if accepted else "Rejected"
        return self._r("RequestStopTransaction", status=status)

    @on("TriggerMessage")
    def trigger(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        evse_id = None if evse is None else evse.get("id")
        return self._r(
            "TriggerMessage", status=self.sim.trigger(requested_message, evse_id)
        )

    @on("Reset")
    def reset(self, type: str, **_: Any) -> Any:
        self.sim.spawn(self.sim.reset(type))
        return self._r("Reset", status="Accepted")

    @on("ChangeAvailability")
    def change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        evse_id = 0 if evse is None else int(evse.get("id", 0))
        status = self.sim.change_availability(
            evse_id, operational_status == "Operative"
        )
        return self._r("ChangeAvailability", status=status)

    @on("GetVariables")
    def get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        return self._r(
            "GetVariables",
            get_variable_result=[self.sim.get_variable(d) for d in get_variable_data],
        )

    @on("SetVariables")
    def set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        return self._r(
            "SetVariables",
            set_variable_result=[self.sim.set_variable(d) for d in set_variable_data],
        )
