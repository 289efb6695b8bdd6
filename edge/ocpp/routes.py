"""The per-version routes: which OCPP action goes to which ``ChargerSession`` method.

The ``ocpp`` library (``edge.ocpp.lib``) routes CALLs through one ``ChargePoint``
subclass per version, ``Csms16`` and ``Csms201``; each handler reads nothing
itself and hands the library's snake_case kwargs to the charger's
``ChargerSession``. A CALL with no handler gets the specs' code
(``edge.ocpp.lib``): NotSupported for an action of the version the edge does not
serve, NotImplemented for one the version does not know; schema failures get the
library's codes (TypeConstraintViolation, ProtocolError for a missing field,
FormatViolation for the rest), which ``Link``
respells for 1.6 chargers as the OCPP-J 1.6 names (FormationViolation,
OccurenceConstraintViolation, typos kept by the OCA;
``protocols.ocpp.frames.respell_16``). A handler that raises is answered with
InternalError by the library.

Meter values are salvaged before the library validates a message
(``_Csms._handle_call``, rules in ``protocols.ocpp.salvage``): a sampled value
the schema would refuse is mended (tolerated) or dropped (skipped), counted per
charger and reason (``ChargerSession.note_values``), and the rest of the message
is validated, stored and answered with a CallResult. Validation stays on for
everything else; a message with no salvageable data (no meter-value list, no
connectorId/evseId) still gets the schema's CallError.
"""

from __future__ import annotations

import logging
from typing import Any

from websockets.asyncio.server import ServerConnection

from edge.ocpp import lib
from edge.ocpp.quiet import BadInput, LibraryLog
from edge.ocpp.session import ChargerSession, iso_utc
from protocols.ocpp.frames import respell_16
from protocols.ocpp.salvage import salvage

__all__ = ["CHARGE_POINT_CLASSES", "Csms16", "Csms201", "Link", "charge_point_for"]

_lib_log = logging.getLogger("fusebox.edge.ocpp.lib")


class Link:
    """The connection as the library sees it: respells error codes for 1.6."""

    def __init__(self, ws: ServerConnection, version: str) -> None:
        self._ws = ws
        self._version = version

    async def send(self, message: str) -> None:
        """Send one frame; a CALLERROR to a 1.6 charger in its 1.6 spelling."""
        if self._version == "1.6":
            message = respell_16(message)
        await self._ws.send(message)

    async def close(self, code: int, reason: str) -> None:
        """Close the WebSocket (the library calls this on fatal errors)."""
        await self._ws.close(code, reason)

    async def recv(self) -> str | bytes:
        """The next frame (unused: the server feeds frames to ``route_message``)."""
        return await self._ws.recv()


class _Csms:
    """What both versions' routes share: the library's ``ChargePoint`` for the
    session's charger, handing every CALL to ``ChargerSession``."""

    route_map: dict[str, dict[str, Any]]  # the library's, per instance

    def __init__(
        self,
        session: ChargerSession,
        link: Link,
        response_timeout_s: float,
        logger: Any = _lib_log,
    ) -> None:
        # the library's ChargePoint, next in the MRO of Csms16 and Csms201
        super().__init__(  # type: ignore[call-arg]
            session.state.id, link, response_timeout=response_timeout_s, logger=logger
        )
        self._session = session

    async def _handle_call(self, msg: Any) -> Any:
        """Salvage the meter values of ``msg`` (module docstring), then let the
        library validate and route it; the salvage is counted once the message
        passed (a refused one is resent by the charger and counted then). A
        MeterValues whose every sampled value was skipped is routed unvalidated
        once the rest of it passed the schema."""
        version = self._session.version
        rules = lib.meter_value_rules(version, msg.action)
        if rules is None or not isinstance(msg.payload, dict):
            return await super()._handle_call(msg)  # type: ignore[misc]
        received_at = iso_utc(self._session.now())
        mended = salvage(
            version, msg.action, msg.payload, rules, received_at=received_at
        )
        msg.payload = mended.payload
        if not mended.emptied:
            answer = await super()._handle_call(msg)  # type: ignore[misc]
        else:
            # nothing left to store: the rest of the message must still be valid
            if not self.route_map[msg.action].get("_skip_schema_validation", False):
                zero = "0" if rules.value_type == "string" else 0
                stand_in = {"timestamp": received_at, "sampledValue": [{"value": zero}]}
                await lib.check_request(
                    version, msg.action, {**mended.payload, "meterValue": [stand_in]}
                )
            with lib.schema_unchecked(self, msg.action):
                answer = await super()._handle_call(msg)  # type: ignore[misc]
        self._session.note_values(mended.skipped, mended.tolerated)
        return answer


class Csms16(_Csms, lib.ChargePoint16):  # type: ignore[misc]
    """OCPP 1.6 handlers. ``**payload`` everywhere: lenient chargers may send
    anything, so fields are read with ``.get``."""

    @lib.on("BootNotification")
    async def on_boot_notification(self, **payload: Any) -> object:
        return await self._session.boot16(payload)

    @lib.on("Heartbeat")
    def on_heartbeat(self, **payload: Any) -> object:
        return self._session.heartbeat()

    @lib.on("StatusNotification")
    async def on_status_notification(self, **payload: Any) -> object:
        return await self._session.status16(payload)

    @lib.on("Authorize")
    async def on_authorize(self, **payload: Any) -> object:
        return await self._session.authorize16(payload)

    @lib.on("StartTransaction")
    async def on_start_transaction(self, **payload: Any) -> object:
        return await self._session.start16(payload)

    @lib.on("StopTransaction")
    async def on_stop_transaction(self, **payload: Any) -> object:
        return await self._session.stop16(payload)

    @lib.on("MeterValues")
    async def on_meter_values(self, **payload: Any) -> object:
        await self._session.meter_values(payload)
        return lib.result16.MeterValues()

    @lib.after("BootNotification")
    def after_boot_notification(self, **payload: Any) -> None:
        self._session.after_boot()

    @lib.on("DataTransfer")
    async def on_data_transfer(self, **payload: Any) -> object:
        return lib.result16.DataTransfer(
            status=await self._session.data_transfer(payload)
        )

    @lib.on("FirmwareStatusNotification")
    async def on_firmware_status(self, **payload: Any) -> object:
        await self._session.firmware_status(payload)
        return lib.result16.FirmwareStatusNotification()

    @lib.on("DiagnosticsStatusNotification")
    async def on_diagnostics_status(self, **payload: Any) -> object:
        await self._session.notice("diagnostics_status", payload)
        return lib.result16.DiagnosticsStatusNotification()

    @lib.on("SecurityEventNotification")
    async def on_security_event(self, **payload: Any) -> object:
        await self._session.notice("security_event", payload)
        return lib.result16.SecurityEventNotification()

    @lib.on("SignedFirmwareStatusNotification")
    async def on_signed_firmware_status(self, **payload: Any) -> object:
        await self._session.firmware_status(payload)
        return lib.result16.SignedFirmwareStatusNotification()

    @lib.on("LogStatusNotification")
    async def on_log_status(self, **payload: Any) -> object:
        await self._session.notice("log_status", payload)
        return lib.result16.LogStatusNotification()


class Csms201(_Csms, lib.ChargePoint201):  # type: ignore[misc]
    """OCPP 2.0.1 handlers."""

    @lib.on("BootNotification")
    async def on_boot_notification(self, **payload: Any) -> object:
        return await self._session.boot201(payload)

    @lib.on("Heartbeat")
    def on_heartbeat(self, **payload: Any) -> object:
        return self._session.heartbeat()

    @lib.on("StatusNotification")
    async def on_status_notification(self, **payload: Any) -> object:
        return await self._session.status201(payload)

    @lib.on("Authorize")
    async def on_authorize(self, **payload: Any) -> object:
        return await self._session.authorize201(payload)

    @lib.on("TransactionEvent")
    async def on_transaction_event(self, **payload: Any) -> object:
        return await self._session.transaction_event201(payload)

    @lib.after("BootNotification")
    def after_boot_notification(self, **payload: Any) -> None:
        self._session.after_boot()

    @lib.on("MeterValues")
    async def on_meter_values(self, **payload: Any) -> object:
        await self._session.meter_values(payload)
        return lib.result201.MeterValues()

    @lib.on("DataTransfer")
    async def on_data_transfer(self, **payload: Any) -> object:
        return lib.result201.DataTransfer(
            status=await self._session.data_transfer(payload)
        )

    @lib.on("FirmwareStatusNotification")
    async def on_firmware_status(self, **payload: Any) -> object:
        await self._session.firmware_status(payload)
        return lib.result201.FirmwareStatusNotification()

    @lib.on("SecurityEventNotification")
    async def on_security_event(self, **payload: Any) -> object:
        await self._session.notice("security_event", payload)
        return lib.result201.SecurityEventNotification()

    @lib.on("LogStatusNotification")
    async def on_log_status(self, **payload: Any) -> object:
        await self._session.notice("log_status", payload)
        return lib.result201.LogStatusNotification()

    @lib.on("NotifyEvent")
    async def on_notify_event(self, **payload: Any) -> object:
        await self._session.notice("notify_event", payload)
        return lib.result201.NotifyEvent()

    @lib.on("NotifyReport")
    async def on_notify_report(self, **payload: Any) -> object:
        await self._session.notice("notify_report", payload)
        return lib.result201.NotifyReport()

    @lib.on("NotifyChargingLimit")
    async def on_notify_charging_limit(self, **payload: Any) -> object:
        await self._session.notice("charging_limit", payload)
        return lib.result201.NotifyChargingLimit()

    @lib.on("ClearedChargingLimit")
    async def on_cleared_charging_limit(self, **payload: Any) -> object:
        await self._session.notice("charging_limit_cleared", payload)
        return lib.result201.ClearedChargingLimit()

    @lib.on("ReportChargingProfiles")
    async def on_report_charging_profiles(self, **payload: Any) -> object:
        await self._session.notice("charging_profiles_report", payload)
        return lib.result201.ReportChargingProfiles()


CHARGE_POINT_CLASSES: dict[str, type[Csms16] | type[Csms201]] = {
    "1.6": Csms16,
    "2.0.1": Csms201,
}
"""OCPP version -> the ``ChargePoint`` class that routes its CALLs."""


def charge_point_for(
    session: ChargerSession,
    link: Link,
    response_timeout_s: float,
    *,
    lenient: bool,
    bad_input: BadInput | None = None,
) -> Csms16 | Csms201:
    """The library's ``ChargePoint`` for the session's version; ``lenient`` skips
    schema validation of every action on this one connection; the CallErrors the
    library answers are logged through ``bad_input`` (``edge.ocpp.quiet``)."""
    logger = _lib_log if bad_input is None else LibraryLog(bad_input, _lib_log)
    cp = CHARGE_POINT_CLASSES[session.version](
        session, link, response_timeout_s, logger
    )
    if lenient:
        lib.make_lenient(cp)
    return cp
