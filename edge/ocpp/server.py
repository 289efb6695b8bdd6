"""The edge's OCPP-J server: site chargers connect here, 1.6J and 2.0.1 on one port.

Layers, outside in:

1. **Handshake** (``process_request``, ``select_subprotocol``): the charge point
   identity is the last URL path segment (none: HTTP 400); an unknown identity gets
   HTTP 404 (OCPP-J 1.6 §3.2), or with ``allow_discovery`` is let in *pending*; a
   known one must pass HTTP Basic auth in security profiles 1 and 2 (else HTTP 401).
   The subprotocol is the charger's most preferred one we speak (and that its pin
   allows); no ``Sec-WebSocket-Protocol`` offered at all means 1.6; offered but
   nothing in common: the handshake completes without a subprotocol and we close at
   once with 1002 (OCPP-J 2.0.1 Part 4 §3.1.2). Per-message deflate is off: it
   triples the memory of an idle connection (reference/measured-facts.md); chargers
   that ask for it simply get none, which RFC 7692 allows.
2. **Raw frames** (``screen_frame``): the ``ocpp`` library only *logs* frames it
   cannot parse, so every frame is screened first. Not JSON: CALLERROR with message
   id "-1" (the 2.0.1 rule for an unreadable id; a 1.6 charger has no id to match
   either, so it just sees an error it cannot correlate) and FormationViolation (1.6)
   / FormatViolation (2.0.1). Unknown message type id: MessageTypeNotSupported
   (2.0.1) / FormationViolation (1.6, which has no such code), with the frame's id
   when readable. A CALL that is not ``[2, id, action, {payload}]``:
   RpcFrameworkError (2.0.1) / FormationViolation (1.6). Malformed CALLRESULT and
   CALLERROR frames are logged and dropped: answering a response would start a
   ping-pong of errors. Frames that pass go to the library.
3. **The library** (``edge.ocpp.lib``): one ``ChargePoint`` subclass per version
   routes CALLs to handlers. Unknown actions get NotImplemented (known in the
   version) or NotSupported; schema failures get the library's codes
   (TypeConstraintViolation, ProtocolError for a missing field, FormatViolation for
   the rest), which ``_Link`` respells for 1.6 chargers as the OCPP-J 1.6 names
   (FormationViolation, OccurenceConstraintViolation, typos kept by the OCA). A
   handler that raises is answered with InternalError by the library; anything
   that escapes the library is caught here and answered with InternalError too, so
   the connection and its read loop stay up. Chargers never share a task, so one
   charger's errors cannot reach another.

Handlers are fast (pitfall 2 in reference/ocpp-notes.md): they await only the
outbox's group commit, so an event is durable before the charger is answered, and
they never await a CALL to the same charger (pitfall 1: it would deadlock).

Transactions (``edge.ocpp.transactions``, ``edge.ocpp.authorize``): Authorize is
answered from the local list and cache, never the cloud. 1.6 transaction ids are
issued by the edge, durably, before StartTransaction is answered, and a
redelivered start gets its id again. Session events (``session_started``,
``session_stopped``) and meter-value readings are in the outbox before the charger
is answered; transaction messages are always answered with a CALLRESULT (a
CALLERROR would burn one of the charger's retries of a queued message): unknown
transaction ids, ``-1`` and duplicate stops included. A 1.6 stop whose
transactionId is not positive (-1: the start never got an answer; 0: a firmware
bug) cannot be keyed to a session; it is stored as a ``session_stop_unmatched``
event, which the cloud keeps but does not fold. Sampled values that cannot be
converted (unknown measurand or unit, unreadable value) are skipped, counted in
``OcppServer.skipped`` and logged once per charger and reason; the rest of the
message is stored.

A charger that is *pending* (discovered, not configured) may only send
BootNotification (answered Pending, kept in ``OcppServer.pending`` for the
installer) and Heartbeat; any other CALL is answered SecurityError (OCPP-J 1.6
errata §3.8) and nothing of it reaches the outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal, Protocol

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from edge.ocpp import FrameError, OcppNotStarted, OcppServerError, lib
from edge.ocpp.auth import (
    SUBPROTOCOLS,
    check_basic_auth,
    choose_subprotocol,
    identity_from_path,
)
from edge.ocpp.authorize import Authorizer
from edge.ocpp.commands import (
    BASIC_AUTH_PASSWORD_201,
    CAPABILITY_KEYS_16,
    CAPABILITY_VARIABLES_201,
    Capabilities,
    ChargerNotConnected,
    CommandFailed,
    Variable,
    authorization_key_16,
    capabilities_16,
    capabilities_201,
    change_availability_request,
    change_configuration_request,
    clear_charging_profile_request,
    composite_answer,
    configuration_answer,
    get_composite_schedule_request,
    get_configuration_request,
    get_variables_request,
    remote_start_request,
    remote_stop_request,
    reset_request,
    set_charging_profile_request,
    set_variables_request,
    trigger_message_request,
    variables_answer,
)
from edge.ocpp.config import ChargerConfig, OcppServerConfig, ToleranceConfig
from edge.ocpp.transactions import (
    MeterConversion,
    TransactionStore,
    device_for,
    meter_readings,
    parse_charger_ts,
    store_path_beside,
)
from edge.outbox import Event
from protocols.events import SessionStarted, SessionStopped
from protocols.ocpp import ChargingProfile, ProfilePurpose, RateUnit
from protocols.readings import Reading

__all__ = [
    "BootInfo",
    "ChargerState",
    "ConnectorStatus",
    "EventSink",
    "OcppServer",
    "PendingCharger",
    "screen_frame",
]

log = logging.getLogger("fusebox.edge.ocpp")
_lib_log = logging.getLogger("fusebox.edge.ocpp.lib")

CALL, CALLRESULT, CALLERROR = 2, 3, 4
_UNREADABLE_ID = "-1"
_NOT_JSON = {"1.6": "FormationViolation", "2.0.1": "FormatViolation"}
_BAD_TYPE = {"1.6": "FormationViolation", "2.0.1": "MessageTypeNotSupported"}
_BAD_CALL = {"1.6": "FormationViolation", "2.0.1": "RpcFrameworkError"}
# the library speaks the 2.0.1 spelling; OCPP-J 1.6 §4.2.3 has these (sic)
_SPELLING_16 = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}
_PENDING_ALLOWED = frozenset({"BootNotification", "Heartbeat"})
_STRICT = ToleranceConfig()
_NOTICE_MAX = 8192
# a charger that reconnects without BootNotification (allowed) gets its
# capabilities read after this long
_BOOT_BACKSTOP_S = 10.0
_CLOSE_NO_COMMON_VERSION = 1002

Registration = Literal["accepted", "pending"]


class EventSink(Protocol):
    """Where events go: ``edge.outbox.Outbox`` (durable once awaited)."""

    async def append(self, items: Sequence[Event | Reading]) -> object: ...


@dataclass(frozen=True, slots=True)
class BootInfo:
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    reason: str | None  # 2.0.1 only
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
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
    firmware_status: str | None = None
    # running transactions by connector (1.6) / EVSE (2.0.1): transaction id
    transactions: dict[int, str] = field(default_factory=dict)
    # the latest measured power (W) and energy register (Wh) and when (charger time)
    power_w: float | None = None
    register_wh: float | None = None
    measured_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApproveOutcome:
    """What approving a pending charger did: whether its open connection was
    closed so that it reconnects, and the charger's answer to the new password
    ("Accepted", "Rejected", ..., "NoAnswer"; None: not sent, e.g. offline)."""

    reconnecting: bool
    password: str | None


@dataclass(slots=True)
class PendingCharger:
    """An unknown charger that connected while discovery was on."""

    id: str
    first_seen: datetime
    last_seen: datetime
    remote: str | None
    ocpp_version: str
    boot: BootInfo | None = None


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _opt_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _wh(value: float | None) -> float:
    """A meter register for a session event: the event model wants 0..1e12."""
    if value is None or value != value:
        return 0.0
    return min(max(value, 0.0), 1e12)


def _name(value: str) -> str:
    return value[:128]


def _session_started(
    charger: str,
    transaction_id: str,
    connector: int | None,
    id_tag: str,
    started_at: datetime,
    meter_start_wh: float | None,
    received_at: datetime,
) -> Event:
    data = SessionStarted(
        charger_id=charger,
        transaction_id=_name(transaction_id),
        connector_id=min(max(connector or 0, 0), 1000),
        id_tag=id_tag[:64],
        started_at=started_at,
        meter_start_wh=_wh(meter_start_wh),
    ).model_dump(mode="json")
    return Event(charger, "session_started", received_at, data)


def _session_stopped(
    charger: str,
    transaction_id: str,
    id_tag: str,
    stopped_at: datetime,
    meter_stop_wh: float | None,
    reason: str,
    received_at: datetime,
) -> Event:
    data = SessionStopped(
        charger_id=charger,
        transaction_id=_name(transaction_id),
        stopped_at=stopped_at,
        meter_stop_wh=_wh(meter_stop_wh),
        reason=reason[:64],
        id_tag=id_tag[:64],
    ).model_dump(mode="json")
    return Event(charger, "session_stopped", received_at, data)


def call_error_frame(message_id: str, code: str, description: str) -> str:
    return json.dumps([CALLERROR, message_id, code, description, {}])


def screen_frame(raw: str | bytes, version: str) -> list[Any] | None:
    """The parsed frame when the ``ocpp`` library may route it, None when it must be
    dropped unanswered (a malformed CALLRESULT/CALLERROR); raises ``FrameError`` for
    a frame to answer with a CALLERROR (see the module docstring for the codes)."""
    try:
        frame = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FrameError(_NOT_JSON[version], _UNREADABLE_ID, "not JSON") from None
    if not isinstance(frame, list) or not frame:
        raise FrameError(_NOT_JSON[version], _UNREADABLE_ID, "not a JSON array")
    message_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
    answer_id = message_id or _UNREADABLE_ID
    kind = frame[0]
    if isinstance(kind, bool) or kind not in (CALL, CALLRESULT, CALLERROR):
        raise FrameError(
            _BAD_TYPE[version], answer_id, f"message type id {kind!r} not supported"
        )
    if kind == CALL:
        if len(frame) != 4 or not message_id or not isinstance(frame[2], str):
            raise FrameError(
                _BAD_CALL[version], answer_id, "a CALL is [2, id, action, payload]"
            )
        if not isinstance(frame[3], dict):
            raise FrameError(_NOT_JSON[version], answer_id, "payload is not an object")
        return frame
    if message_id is None or len(frame) != (3 if kind == CALLRESULT else 5):
        log.warning("ocpp: malformed response frame dropped: %.200r", raw)
        return None
    return frame


class _Link:
    """The connection as the library sees it: respells error codes for 1.6."""

    def __init__(self, ws: ServerConnection, version: str) -> None:
        self._ws = ws
        self._version = version

    async def send(self, message: str) -> None:
        if self._version == "1.6" and message.startswith(f"[{CALLERROR}"):
            frame = json.loads(message)
            if len(frame) > 2 and frame[2] in _SPELLING_16:
                frame[2] = _SPELLING_16[frame[2]]
                message = json.dumps(frame)
        await self._ws.send(message)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)

    async def recv(self) -> str | bytes:
        return await self._ws.recv()


class _Conversation:
    """What the version-specific handlers do, version-agnostic."""

    def __init__(self, server: OcppServer, state: ChargerState) -> None:
        self.server = server
        self.state = state

    @property
    def version(self) -> str:
        return self.state.ocpp_version

    def now(self) -> datetime:
        return self.server.clock()

    @property
    def tolerance(self) -> ToleranceConfig:
        known = self.server.known.get(self.state.id)
        return known.tolerance if known is not None else _STRICT

    def ts(self, value: object, received_at: datetime) -> datetime:
        """A charger timestamp, or the reception time if its clock is not trusted."""
        if self.tolerance.clock == "gateway":
            return received_at
        return parse_charger_ts(value, received_at)

    def register(self, value: object) -> float | None:
        """A 1.6 meterStart/meterStop in Wh (scaled if the charger sends kWh)."""
        number = _opt_number(value)
        if number is not None and self.tolerance.energy_in_kwh:
            number *= 1000.0
        return number

    def readings(
        self, connector: int | None, meter_values: object, received_at: datetime
    ) -> MeterConversion:
        tolerance = self.tolerance
        conversion = meter_readings(
            self.state.id,
            connector,
            meter_values,
            received_at,
            v201=self.version != "1.6",
            energy_in_kwh=tolerance.energy_in_kwh,
            trust_clock=tolerance.clock == "charger",
        )
        self._note_skipped(conversion)
        self._observe(conversion.readings)
        return conversion

    def _observe(self, readings: Sequence[Reading]) -> None:
        state = self.state
        for r in sorted(readings, key=lambda r: r.ts):
            if state.measured_at is not None and r.ts < state.measured_at:
                continue  # a late (queued) value does not describe now
            if r.quantity == "power_w":
                state.power_w, state.measured_at = r.value, r.ts
            elif r.quantity == "import_energy_wh":
                state.register_wh, state.measured_at = r.value, r.ts
        if readings:
            self.server.notify(state.id)

    def after_boot(self) -> None:
        """After the BootNotification answer went out: read the capabilities."""
        if self.state.registration == "accepted":
            self.server.spawn(self.server.discover_quietly(self.state.id, self.state))

    async def notice(self, kind: str, payload: dict[str, Any]) -> None:
        """Store a charger notification (firmware, diagnostics, security, report)
        as an event; big payloads are kept as at most 8 KiB of JSON text."""
        received_at = self.now()
        text = json.dumps(payload, default=str, separators=(",", ":"))
        data: dict[str, Any] = {"ocpp_version": self.version}
        if len(text) <= _NOTICE_MAX:
            data["payload"] = json.loads(text)
        else:
            data["payload_text"] = text[:_NOTICE_MAX]
            data["truncated_from"] = len(text)
        await self.server.sink.append([Event(self.state.id, kind, received_at, data)])

    async def firmware_status(self, payload: dict[str, Any]) -> None:
        self.state.firmware_status = _opt_str(payload.get("status"))
        log.info(
            "ocpp: charger %s firmware %s", self.state.id, self.state.firmware_status
        )
        await self.notice("firmware_status", payload)

    async def data_transfer(self, payload: dict[str, Any]) -> str:
        """Vendor-specific data: stored as an event, answered UnknownVendorId (the
        edge implements no vendor extension; a charger then stops sending it)."""
        data = payload.get("data")
        if data is not None and not isinstance(data, str):
            data = json.dumps(data, default=str)  # an object, a known quirk
        await self.notice(
            "data_transfer",
            {
                "vendor_id": _opt_str(payload.get("vendor_id")),
                "message_id": _opt_str(payload.get("message_id")),
                "data": data,
            },
        )
        return "UnknownVendorId"

    async def boot(self, info: BootInfo) -> object:
        state = self.state
        state.boot = info
        state.booted = True
        cfg = self.server.config
        if state.registration == "pending":
            pending = self.server.pending.get(state.id)
            if pending is not None:
                pending.boot = info
            log.info(
                "ocpp: pending charger %s booted (%s %s)",
                state.id,
                info.vendor,
                info.model,
            )
            return lib.boot_result(
                self.version,
                current_time=_iso(info.received_at),
                interval_s=cfg.pending_retry_s,
                accepted=False,
            )
        await self.server.sink.append(
            [
                Event(
                    state.id,
                    "boot",
                    info.received_at,
                    {
                        "ocpp_version": self.version,
                        "vendor": info.vendor,
                        "model": info.model,
                        "serial_number": info.serial_number,
                        "firmware_version": info.firmware_version,
                        "reason": info.reason,
                    },
                )
            ]
        )
        return lib.boot_result(
            self.version,
            current_time=_iso(info.received_at),
            interval_s=cfg.heartbeat_interval_s,
            accepted=True,
        )

    def heartbeat(self) -> object:
        return lib.heartbeat_result(self.version, current_time=_iso(self.now()))

    async def status(
        self,
        *,
        evse_id: int | None,
        connector_id: int | None,
        status: str | None,
        error_code: str | None,
        charger_ts: str | None,
        extra: dict[str, Any],
    ) -> object:
        received_at = self.now()
        await self.server.sink.append(
            [
                Event(
                    self.state.id,
                    "status",
                    received_at,
                    {
                        "ocpp_version": self.version,
                        "evse_id": evse_id,
                        "connector_id": connector_id,
                        "status": status,
                        "error_code": error_code,
                        "info": _opt_str(extra.get("info")),
                        "vendor_error_code": _opt_str(extra.get("vendor_error_code")),
                        "charger_ts": charger_ts,
                    },
                )
            ]
        )
        if connector_id is not None and status is not None:
            self.state.connectors[(evse_id, connector_id)] = ConnectorStatus(
                status, error_code, charger_ts, received_at
            )
        return lib.status_result(self.version)

    # -- authorisation and transactions ------------------------------------------

    def _note_skipped(self, conversion: MeterConversion) -> None:
        self.server.note_skipped(self.state.id, conversion.skipped)

    async def _id_tag_info(self, id_tag: str | None) -> dict[str, str] | None:
        if id_tag is None:
            return None
        return {"status": await self.server.authorizer.status(id_tag)}

    async def authorize16(self, payload: dict[str, Any]) -> object:
        info = await self._id_tag_info(_opt_str(payload.get("id_tag")) or "")
        return lib.result16.Authorize(id_tag_info=info)

    async def authorize201(self, payload: dict[str, Any]) -> object:
        token = _opt_dict(payload.get("id_token"))
        if token.get("type") == "NoAuthorization":
            return lib.result201.Authorize(id_token_info={"status": "Accepted"})
        status = await self.server.authorizer.status(
            _opt_str(token.get("id_token")) or ""
        )
        return lib.result201.Authorize(id_token_info={"status": status})

    async def start16(self, payload: dict[str, Any]) -> object:
        received_at = self.now()
        charger = self.state.id
        connector = _opt_int(payload.get("connector_id")) or 0
        id_tag = _opt_str(payload.get("id_tag")) or ""
        meter_start = self.register(payload.get("meter_start"))
        ts_raw = payload.get("timestamp")
        tx_id, new = await self.server.transactions.start16(
            charger, connector, id_tag, str(ts_raw), int(_wh(meter_start))
        )
        info = await self._id_tag_info(id_tag)
        # appended on a redelivery too: the first attempt may have died between
        # issuing the id and this commit; the cloud folds duplicates
        await self.server.sink.append(
            [
                _session_started(
                    charger,
                    str(tx_id),
                    connector,
                    id_tag,
                    self.ts(ts_raw, received_at),
                    meter_start,
                    received_at,
                )
            ]
        )
        self.state.transactions[connector] = str(tx_id)
        self.server.notify(charger)
        log.info(
            "ocpp: charger %s connector %d: transaction %d %s (%s)",
            charger,
            connector,
            tx_id,
            "started" if new else "start redelivered",
            info["status"] if info else "-",
        )
        return lib.result16.StartTransaction(transaction_id=tx_id, id_tag_info=info)

    async def stop16(self, payload: dict[str, Any]) -> object:
        received_at = self.now()
        charger = self.state.id
        tx_id = _opt_int(payload.get("transaction_id"))
        id_tag = _opt_str(payload.get("id_tag"))
        connector = None
        if tx_id is not None and tx_id > 0:
            connector = await self.server.transactions.connector16(charger, tx_id)
        conversion = self.readings(
            connector, payload.get("transaction_data"), received_at
        )
        stopped_at = self.ts(payload.get("timestamp"), received_at)
        meter_stop = self.register(payload.get("meter_stop"))
        reason = _opt_str(payload.get("reason")) or ""
        items: list[Event | Reading] = list(conversion.readings)
        if tx_id is not None and tx_id > 0:
            items.append(
                _session_stopped(
                    charger,
                    str(tx_id),
                    id_tag or "",
                    stopped_at,
                    meter_stop,
                    reason,
                    received_at,
                )
            )
        else:
            log.warning(
                "ocpp: charger %s: StopTransaction with transactionId %r stored "
                "unmatched",
                charger,
                payload.get("transaction_id"),
            )
            items.append(
                Event(
                    charger,
                    "session_stop_unmatched",
                    received_at,
                    {
                        "transaction_id": tx_id,
                        "stopped_at": _iso(stopped_at),
                        "meter_stop_wh": _wh(meter_stop),
                        "reason": reason[:64],
                        "id_tag": (id_tag or "")[:64],
                    },
                )
            )
        await self.server.sink.append(items)
        self._forget_transaction(str(tx_id))
        return lib.result16.StopTransaction(id_tag_info=await self._id_tag_info(id_tag))

    def _forget_transaction(self, tx_id: str) -> None:
        running = self.state.transactions
        for connector, known in list(running.items()):
            if known == tx_id:
                del running[connector]
                self.server.notify(self.state.id)

    async def meter_values(self, payload: dict[str, Any]) -> None:
        """1.6 MeterValues (connectorId) and 2.0.1 MeterValues (evseId, outside a
        transaction: e.g. the station's own meter on EVSE 0)."""
        received_at = self.now()
        key = "connector_id" if self.version == "1.6" else "evse_id"
        connector = _opt_int(payload.get(key))
        tx_id = _opt_int(payload.get("transaction_id"))
        if connector and tx_id is not None and tx_id > 0:
            self.state.transactions.setdefault(connector, str(tx_id))
        conversion = self.readings(connector, payload.get("meter_value"), received_at)
        if conversion.readings:
            await self.server.sink.append(conversion.readings)

    async def transaction_event201(self, payload: dict[str, Any]) -> object:
        received_at = self.now()
        charger = self.state.id
        info = _opt_dict(payload.get("transaction_info"))
        tx_id = _opt_str(info.get("transaction_id"))
        event_type = payload.get("event_type")
        seq_no = _opt_int(payload.get("seq_no"))
        connector = _opt_int(_opt_dict(payload.get("evse")).get("id"))
        token = _opt_dict(payload.get("id_token"))
        id_token = _opt_str(token.get("id_token"))
        store = self.server.transactions
        state = await store.state201(charger, tx_id, seq_no) if tx_id else None
        if connector is None and state is not None:
            connector = state.connector
        conversion = self.readings(connector, payload.get("meter_value"), received_at)
        device = device_for(charger, connector)
        if state is None or not state.seen:
            items: list[Event | Reading] = list(conversion.readings)
            ts = self.ts(payload.get("timestamp"), received_at)
            if tx_id and event_type == "Started":
                items.append(
                    _session_started(
                        charger,
                        tx_id,
                        connector,
                        id_token or "",
                        ts,
                        conversion.register_wh(device, last=False),
                        received_at,
                    )
                )
            elif tx_id and event_type == "Ended":
                meter_stop = conversion.register_wh(device, last=True)
                if meter_stop is None and state is not None:
                    meter_stop = state.last_register_wh
                items.append(
                    _session_stopped(
                        charger,
                        tx_id,
                        id_token or "",
                        ts,
                        meter_stop,
                        _opt_str(info.get("stopped_reason")) or "",
                        received_at,
                    )
                )
            if items:
                await self.server.sink.append(items)
            if tx_id:
                await store.record201(
                    charger,
                    tx_id,
                    seq_no,
                    connector,
                    conversion.register_wh(device, last=True),
                )
        if tx_id and connector:
            if event_type == "Ended":
                self._forget_transaction(tx_id)
            elif state is None or not state.seen:
                self.state.transactions[connector] = tx_id
                self.server.notify(charger)
        if id_token is None:
            return lib.result201.TransactionEvent()
        if token.get("type") == "NoAuthorization":
            status = "Accepted"
        else:
            status = await self.server.authorizer.status(id_token)
        return lib.result201.TransactionEvent(id_token_info={"status": status})


class _Csms16(lib.ChargePoint16):  # type: ignore[misc]
    """OCPP 1.6 handlers. ``**payload`` everywhere: lenient chargers may send
    anything, so fields are read with ``.get``."""

    def __init__(self, conv: _Conversation, link: _Link, response_timeout_s: float):
        super().__init__(
            conv.state.id, link, response_timeout=response_timeout_s, logger=_lib_log
        )
        self._conv = conv

    @lib.on("BootNotification")
    async def on_boot_notification(self, **payload: Any) -> object:
        serial = payload.get("charge_point_serial_number") or payload.get(
            "charge_box_serial_number"
        )
        return await self._conv.boot(
            BootInfo(
                vendor=_opt_str(payload.get("charge_point_vendor")),
                model=_opt_str(payload.get("charge_point_model")),
                serial_number=_opt_str(serial),
                firmware_version=_opt_str(payload.get("firmware_version")),
                reason=None,
                received_at=self._conv.now(),
            )
        )

    @lib.on("Heartbeat")
    def on_heartbeat(self, **payload: Any) -> object:
        return self._conv.heartbeat()

    @lib.on("StatusNotification")
    async def on_status_notification(self, **payload: Any) -> object:
        return await self._conv.status(
            evse_id=None,
            connector_id=_opt_int(payload.get("connector_id")),
            status=_opt_str(payload.get("status")),
            error_code=_opt_str(payload.get("error_code")),
            charger_ts=_opt_str(payload.get("timestamp")),
            extra=payload,
        )

    @lib.on("Authorize")
    async def on_authorize(self, **payload: Any) -> object:
        return await self._conv.authorize16(payload)

    @lib.on("StartTransaction")
    async def on_start_transaction(self, **payload: Any) -> object:
        return await self._conv.start16(payload)

    @lib.on("StopTransaction")
    async def on_stop_transaction(self, **payload: Any) -> object:
        return await self._conv.stop16(payload)

    @lib.on("MeterValues")
    async def on_meter_values(self, **payload: Any) -> object:
        await self._conv.meter_values(payload)
        return lib.result16.MeterValues()

    @lib.after("BootNotification")
    def after_boot_notification(self, **payload: Any) -> None:
        self._conv.after_boot()

    @lib.on("DataTransfer")
    async def on_data_transfer(self, **payload: Any) -> object:
        return lib.result16.DataTransfer(status=await self._conv.data_transfer(payload))

    @lib.on("FirmwareStatusNotification")
    async def on_firmware_status(self, **payload: Any) -> object:
        await self._conv.firmware_status(payload)
        return lib.result16.FirmwareStatusNotification()

    @lib.on("DiagnosticsStatusNotification")
    async def on_diagnostics_status(self, **payload: Any) -> object:
        await self._conv.notice("diagnostics_status", payload)
        return lib.result16.DiagnosticsStatusNotification()

    @lib.on("SecurityEventNotification")
    async def on_security_event(self, **payload: Any) -> object:
        await self._conv.notice("security_event", payload)
        return lib.result16.SecurityEventNotification()

    @lib.on("SignedFirmwareStatusNotification")
    async def on_signed_firmware_status(self, **payload: Any) -> object:
        await self._conv.firmware_status(payload)
        return lib.result16.SignedFirmwareStatusNotification()

    @lib.on("LogStatusNotification")
    async def on_log_status(self, **payload: Any) -> object:
        await self._conv.notice("log_status", payload)
        return lib.result16.LogStatusNotification()


class _Csms201(lib.ChargePoint201):  # type: ignore[misc]
    """OCPP 2.0.1 handlers."""

    def __init__(self, conv: _Conversation, link: _Link, response_timeout_s: float):
        super().__init__(
            conv.state.id, link, response_timeout=response_timeout_s, logger=_lib_log
        )
        self._conv = conv

    @lib.on("BootNotification")
    async def on_boot_notification(self, **payload: Any) -> object:
        station = payload.get("charging_station")
        station = station if isinstance(station, dict) else {}
        return await self._conv.boot(
            BootInfo(
                vendor=_opt_str(station.get("vendor_name")),
                model=_opt_str(station.get("model")),
                serial_number=_opt_str(station.get("serial_number")),
                firmware_version=_opt_str(station.get("firmware_version")),
                reason=_opt_str(payload.get("reason")),
                received_at=self._conv.now(),
            )
        )

    @lib.on("Heartbeat")
    def on_heartbeat(self, **payload: Any) -> object:
        return self._conv.heartbeat()

    @lib.on("StatusNotification")
    async def on_status_notification(self, **payload: Any) -> object:
        return await self._conv.status(
            evse_id=_opt_int(payload.get("evse_id")),
            connector_id=_opt_int(payload.get("connector_id")),
            status=_opt_str(payload.get("connector_status")),
            error_code=None,
            charger_ts=_opt_str(payload.get("timestamp")),
            extra=payload,
        )

    @lib.on("Authorize")
    async def on_authorize(self, **payload: Any) -> object:
        return await self._conv.authorize201(payload)

    @lib.on("TransactionEvent")
    async def on_transaction_event(self, **payload: Any) -> object:
        return await self._conv.transaction_event201(payload)

    @lib.after("BootNotification")
    def after_boot_notification(self, **payload: Any) -> None:
        self._conv.after_boot()

    @lib.on("MeterValues")
    async def on_meter_values(self, **payload: Any) -> object:
        await self._conv.meter_values(payload)
        return lib.result201.MeterValues()

    @lib.on("DataTransfer")
    async def on_data_transfer(self, **payload: Any) -> object:
        return lib.result201.DataTransfer(
            status=await self._conv.data_transfer(payload)
        )

    @lib.on("FirmwareStatusNotification")
    async def on_firmware_status(self, **payload: Any) -> object:
        await self._conv.firmware_status(payload)
        return lib.result201.FirmwareStatusNotification()

    @lib.on("SecurityEventNotification")
    async def on_security_event(self, **payload: Any) -> object:
        await self._conv.notice("security_event", payload)
        return lib.result201.SecurityEventNotification()

    @lib.on("LogStatusNotification")
    async def on_log_status(self, **payload: Any) -> object:
        await self._conv.notice("log_status", payload)
        return lib.result201.LogStatusNotification()

    @lib.on("NotifyEvent")
    async def on_notify_event(self, **payload: Any) -> object:
        await self._conv.notice("notify_event", payload)
        return lib.result201.NotifyEvent()

    @lib.on("NotifyReport")
    async def on_notify_report(self, **payload: Any) -> object:
        await self._conv.notice("notify_report", payload)
        return lib.result201.NotifyReport()

    @lib.on("NotifyChargingLimit")
    async def on_notify_charging_limit(self, **payload: Any) -> object:
        await self._conv.notice("charging_limit", payload)
        return lib.result201.NotifyChargingLimit()

    @lib.on("ClearedChargingLimit")
    async def on_cleared_charging_limit(self, **payload: Any) -> object:
        await self._conv.notice("charging_limit_cleared", payload)
        return lib.result201.ClearedChargingLimit()

    @lib.on("ReportChargingProfiles")
    async def on_report_charging_profiles(self, **payload: Any) -> object:
        await self._conv.notice("charging_profiles_report", payload)
        return lib.result201.ReportChargingProfiles()


_CHARGE_POINT_CLASSES = {"1.6": _Csms16, "2.0.1": _Csms201}


class OcppServer:
    """The OCPP-J listener and the registry of chargers it has seen.

    ``await start()`` binds (``port`` then tells where; config port 0 picks a free
    one), ``await stop()`` closes every connection (1001) and the socket; ``run()``
    does both around waiting forever, for the agent's TaskGroup. ``chargers`` maps
    identity -> ``ChargerState`` (connected or last known); ``pending`` holds the
    unknown chargers discovery let in, for the installer to adopt.

    Transaction state lives in ``transactions_path``; by default beside the
    sink's file when the sink is an ``Outbox`` (``<outbox stem>-ocpp.db``), else
    in memory (tests with a fake sink only: ids would then restart).
    """

    def __init__(
        self,
        config: OcppServerConfig,
        chargers: Sequence[ChargerConfig],
        sink: EventSink,
        *,
        clock: Callable[[], datetime] = _utc_now,
        transactions_path: Path | str | None = None,
    ) -> None:
        self.config = config
        self.known = {c.id: c for c in chargers}
        self.sink = sink
        self.clock = clock
        self.chargers: dict[str, ChargerState] = {}
        self.pending: dict[str, PendingCharger] = {}
        self._server: Server | None = None
        if transactions_path is None:
            outbox_path = getattr(getattr(sink, "store", None), "path", None)
            if isinstance(outbox_path, Path):
                transactions_path = store_path_beside(outbox_path)
        self.transactions_path = transactions_path
        self._transactions: TransactionStore | None = None
        self._authorizer: Authorizer | None = None
        # sampled values skipped, by (charger, reason); each pair logged once
        self.skipped: Counter[tuple[str, str]] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        # called with a charger id when its transactions, power or connection change
        self.observers: list[Callable[[str], None]] = []
        self._remote_start_id = int(clock().timestamp()) % 1_000_000_000

    def notify(self, charger_id: str) -> None:
        for observer in self.observers:
            try:
                observer(charger_id)
            except Exception:
                log.exception("ocpp: an observer failed on %s", charger_id)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the server keeps (and cancels at ``stop``)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def transactions(self) -> TransactionStore:
        if self._transactions is None:
            raise OcppNotStarted("the OCPP server is not started: await start()")
        return self._transactions

    @property
    def authorizer(self) -> Authorizer:
        if self._authorizer is None:
            raise OcppNotStarted("the OCPP server is not started: await start()")
        return self._authorizer

    def note_skipped(self, charger: str, reasons: Sequence[str]) -> None:
        for reason in reasons:
            key = (charger, reason)
            if key not in self.skipped:
                log.warning(
                    "ocpp: charger %s: sampled value skipped (%s); further ones "
                    "are only counted",
                    charger,
                    reason,
                )
            self.skipped[key] += 1

    @property
    def port(self) -> int:
        if self._server is None:
            raise OcppNotStarted("the OCPP server is not listening: await start()")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def scheme(self) -> str:
        return "wss" if self.config.security_profile == 2 else "ws"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.security_profile != 2:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        assert self.config.tls_cert is not None  # checked by OcppServerConfig
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    async def start(self) -> None:
        cfg = self.config
        if self._transactions is None:
            if self.transactions_path is None:
                log.warning("ocpp: transaction state kept in memory only")
            self._transactions = TransactionStore(self.transactions_path or ":memory:")
            self._authorizer = Authorizer(cfg, self._transactions, self.clock)
        self._server = await serve(
            self._session,
            cfg.host,
            cfg.port,
            subprotocols=[Subprotocol(name) for name in SUBPROTOCOLS],
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            compression=None,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
            max_size=cfg.max_message_bytes,
            ssl=self._ssl_context(),
        )
        log.info(
            "ocpp: listening on %s://%s:%d/<charge point id> (security profile %d, "
            "%d charger(s) configured, discovery %s)",
            self.scheme,
            cfg.host,
            self.port,
            cfg.security_profile,
            len(self.known),
            "on" if cfg.allow_discovery else "off",
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        if self._transactions is not None:
            self._transactions.close()
            self._transactions = self._authorizer = None

    async def run(self) -> None:
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    async def approve(self, charger: ChargerConfig) -> ApproveOutcome:
        """Accept a charger that discovery held as pending (the installer approved it):
        from now on it is known, and its next connection must pass the normal
        checks (Basic auth with ``charger.password`` in profiles 1 and 2).

        If its pending connection is still open, the password is first set on the
        charger (1.6 ``AuthorizationKey``, 2.0.1 ``SecurityCtrlr.BasicAuthPassword``:
        a CSMS may configure a charger while its boot is Pending), then the
        connection is closed (1012, service restart) so that it reconnects at
        once with it. The outcome says what the charger answered; a charger that
        refused or did not answer needs the password set on it by hand.
        ``KeyError`` if ``charger.id`` is not pending."""
        if charger.id not in self.pending:
            raise KeyError(f"charger {charger.id!r} is not pending")
        self.known[charger.id] = charger
        del self.pending[charger.id]
        log.info("ocpp: pending charger %s approved by the installer", charger.id)
        state = self.chargers.get(charger.id)
        link = getattr(state.charge_point, "_connection", None) if state else None
        if state is None or not state.connected or not isinstance(link, _Link):
            return ApproveOutcome(reconnecting=False, password=None)
        answer: str | None = None
        if charger.password is not None and self.config.security_profile in (1, 2):
            answer = await self._push_password(
                charger.id, charger.password.get_secret_value()
            )
        self.spawn(link.close(1012, "approved: reconnect with credentials"))
        return ApproveOutcome(reconnecting=True, password=answer)

    async def _push_password(self, charger_id: str, password: str) -> str:
        """Set ``password`` on the connected (pending) charger; its answer, or
        "NoAnswer" / "CallError: <code>" / "Disconnected". The installer waits
        for this, so a silent charger gets 10 s at most."""
        wait_s = min(self.config.response_timeout_s, 10.0)
        try:
            if self._version(charger_id) == "1.6":
                answer = await self._command(
                    charger_id,
                    "ChangeConfiguration",
                    lambda v: change_configuration_request(
                        "AuthorizationKey", authorization_key_16(password)
                    ),
                    pending_ok=True,
                    timeout_s=wait_s,
                )
                status = str(answer.get("status"))
            else:
                answer = await self._command(
                    charger_id,
                    "SetVariables",
                    lambda v: set_variables_request(
                        [(BASIC_AUTH_PASSWORD_201, password)]
                    ),
                    pending_ok=True,
                    timeout_s=wait_s,
                )
                results = variables_answer(answer, "set_variable_result")
                status = next(iter(results.values()), ("NoAnswer", None))[0]
        except TimeoutError:
            status = "NoAnswer"
        except CommandFailed as err:
            status = f"CallError: {err.code}"
        except ChargerNotConnected:
            status = "Disconnected"
        # never log the password itself
        level = logging.INFO if status == "Accepted" else logging.WARNING
        log.log(
            level,
            "ocpp: charger %s: new password %s",
            charger_id,
            "set on the charger"
            if status == "Accepted"
            else f"not set on the charger ({status}): set it there by hand",
        )
        return status

    # -- commands to chargers ---------------------------------------------------
    # Callable from outside any handler (controller, tests); never from inside a
    # handler of the same charger: the answer is read by that charger's loop.

    async def _command(
        self,
        charger_id: str,
        action: str,
        build: Callable[[str], Any],
        *,
        pending_ok: bool = False,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        state = self.chargers.get(charger_id)
        if (
            state is None
            or not state.connected
            or state.charge_point is None
            or (state.registration != "accepted" and not pending_ok)
        ):
            raise ChargerNotConnected(charger_id)
        version = state.ocpp_version
        action, payload = build(version)  # the action's name differs by version
        known = self.known.get(charger_id)
        try:
            return await lib.outgoing_call(
                state.charge_point,
                version,
                action,
                payload,
                timeout_s=timeout_s or self.config.response_timeout_s,
                skip_schema_validation=bool(known and known.validation == "off"),
            )
        except lib.CallErrorAnswer as err:
            raise CommandFailed(err.code, err.description) from err
        except ConnectionClosed as err:
            raise ChargerNotConnected(charger_id) from err

    async def set_charging_profile(
        self, charger_id: str, connector_or_evse_id: int, profile: ChargingProfile
    ) -> str:
        """Install ``profile`` on the 1.6 connector / 2.0.1 EVSE; the charger's status
        ("Accepted", "Rejected"). ``ChargerNotConnected``, ``CommandFailed``,
        ``ProfileError`` (profile does not fit the target), ``TimeoutError``."""
        answer = await self._command(
            charger_id,
            "SetChargingProfile",
            lambda v: set_charging_profile_request(v, connector_or_evse_id, profile),
        )
        return str(answer.get("status"))

    async def clear_charging_profile(
        self,
        charger_id: str,
        *,
        profile_id: int | None = None,
        connector_or_evse_id: int | None = None,
        purpose: ProfilePurpose | str | None = None,
        stack_level: int | None = None,
    ) -> str:
        """Clear the matching profiles (none given: all); "Accepted" or "Unknown"."""
        answer = await self._command(
            charger_id,
            "ClearChargingProfile",
            lambda v: clear_charging_profile_request(
                v,
                profile_id=profile_id,
                connector_or_evse_id=connector_or_evse_id,
                purpose=purpose,
                stack_level=stack_level,
            ),
        )
        return str(answer.get("status"))

    async def get_composite_schedule(
        self,
        charger_id: str,
        connector_or_evse_id: int,
        duration_s: int,
        rate_unit: RateUnit | str = "W",
    ) -> dict[str, Any]:
        """The charger's composite schedule: ``{"status", "rate_unit", "periods":
        [{"start_period_s", "limit", "number_phases"}], ...}`` (see
        ``edge.ocpp.commands.composite_answer``)."""
        state = self.chargers.get(charger_id)
        answer = await self._command(
            charger_id,
            "GetCompositeSchedule",
            lambda v: get_composite_schedule_request(
                v, connector_or_evse_id, duration_s, rate_unit
            ),
        )
        assert state is not None  # _command raised otherwise
        return composite_answer(state.ocpp_version, answer)

    def _version(self, charger_id: str) -> str:
        state = self.chargers.get(charger_id)
        if state is None or not state.connected:
            raise ChargerNotConnected(charger_id)
        return state.ocpp_version

    async def remote_start(
        self,
        charger_id: str,
        id_tag: str,
        *,
        connector_or_evse_id: int | None = None,
        profile: ChargingProfile | None = None,
    ) -> str:
        """Ask the charger to start a transaction for ``id_tag`` (1.6
        RemoteStartTransaction, 2.0.1 RequestStartTransaction with a fresh
        remoteStartId); "Accepted" or "Rejected". The transaction itself arrives as
        StartTransaction/TransactionEvent like any other."""
        self._remote_start_id += 1
        answer = await self._command(
            charger_id,
            "RemoteStart",
            lambda v: remote_start_request(
                v,
                id_tag,
                connector_or_evse_id=connector_or_evse_id,
                remote_start_id=self._remote_start_id,
                profile=profile,
            ),
        )
        return str(answer.get("status"))

    async def remote_stop(self, charger_id: str, transaction_id: int | str) -> str:
        """Ask the charger to stop a transaction; "Accepted" or "Rejected"."""
        answer = await self._command(
            charger_id, "RemoteStop", lambda v: remote_stop_request(v, transaction_id)
        )
        return str(answer.get("status"))

    async def trigger_message(
        self, charger_id: str, requested: str, connector_or_evse_id: int | None = None
    ) -> str:
        """Ask the charger to send ``requested`` (BootNotification, Heartbeat,
        StatusNotification, MeterValues, ...) now; "Accepted", "Rejected" or
        "NotImplemented". The message itself arrives at its handler."""
        answer = await self._command(
            charger_id,
            "TriggerMessage",
            lambda v: trigger_message_request(v, requested, connector_or_evse_id),
        )
        return str(answer.get("status"))

    async def reset(self, charger_id: str, kind: str = "soft") -> str:
        """Reset the charger: "soft" (1.6 Soft, 2.0.1 OnIdle) or "hard" (1.6 Hard,
        2.0.1 Immediate); "Accepted", "Rejected" or (2.0.1) "Scheduled"."""
        answer = await self._command(
            charger_id, "Reset", lambda v: reset_request(v, kind)
        )
        return str(answer.get("status"))

    async def change_availability(
        self, charger_id: str, connector_or_evse_id: int, operative: bool
    ) -> str:
        """Make a connector/EVSE (0: the whole charger) operative or inoperative;
        "Accepted", "Rejected" or "Scheduled" (after the running transaction)."""
        answer = await self._command(
            charger_id,
            "ChangeAvailability",
            lambda v: change_availability_request(v, connector_or_evse_id, operative),
        )
        return str(answer.get("status"))

    async def get_configuration(
        self, charger_id: str, keys: Sequence[str] | None = None
    ) -> tuple[dict[str, str | None], list[str]]:
        """1.6 GetConfiguration: ({key: value}, unknown keys). ``ValueError`` for a
        2.0.1 charger (use ``get_variables``)."""
        if self._version(charger_id) != "1.6":
            raise ValueError(f"{charger_id} speaks 2.0.1: use get_variables")
        answer = await self._command(
            charger_id, "GetConfiguration", lambda v: get_configuration_request(keys)
        )
        return configuration_answer(answer)

    async def change_configuration(self, charger_id: str, key: str, value: str) -> str:
        """1.6 ChangeConfiguration; "Accepted", "Rejected", "RebootRequired" or
        "NotSupported". ``ValueError`` for a 2.0.1 charger (use ``set_variables``)."""
        if self._version(charger_id) != "1.6":
            raise ValueError(f"{charger_id} speaks 2.0.1: use set_variables")
        answer = await self._command(
            charger_id,
            "ChangeConfiguration",
            lambda v: change_configuration_request(key, value),
        )
        return str(answer.get("status"))

    async def get_variables(
        self, charger_id: str, variables: Sequence[Variable]
    ) -> dict[str, tuple[str, str | None]]:
        """2.0.1 GetVariables: {"Component.variable": (attributeStatus, value)}.
        ``ValueError`` for a 1.6 charger (use ``get_configuration``)."""
        if self._version(charger_id) == "1.6":
            raise ValueError(f"{charger_id} speaks 1.6: use get_configuration")
        answer = await self._command(
            charger_id, "GetVariables", lambda v: get_variables_request(variables)
        )
        return variables_answer(answer, "get_variable_result")

    async def set_variables(
        self, charger_id: str, values: Sequence[tuple[Variable, str]]
    ) -> dict[str, tuple[str, str | None]]:
        """2.0.1 SetVariables: {"Component.variable": (attributeStatus, None)}."""
        if self._version(charger_id) == "1.6":
            raise ValueError(f"{charger_id} speaks 1.6: use change_configuration")
        answer = await self._command(
            charger_id, "SetVariables", lambda v: set_variables_request(values)
        )
        return variables_answer(answer, "set_variable_result")

    async def discover_capabilities(self, charger_id: str) -> Capabilities:
        """Read the charger's smart-charging capabilities (1.6 configuration keys,
        2.0.1 SmartChargingCtrlr variables), keep them on its ``ChargerState`` and
        store them as a ``capabilities`` event for the cloud."""
        if self._version(charger_id) == "1.6":
            known, _ = await self.get_configuration(charger_id, CAPABILITY_KEYS_16)
            caps = capabilities_16(known)
        else:
            results = await self.get_variables(charger_id, CAPABILITY_VARIABLES_201)
            caps = capabilities_201(results)
        state = self.chargers.get(charger_id)
        if state is not None:
            state.capabilities = caps
            self.notify(charger_id)
        await self.sink.append(
            [
                Event(
                    charger_id,
                    "capabilities",
                    self.clock(),
                    {"ocpp_version": self._version(charger_id), **caps.as_json()},
                )
            ]
        )
        log.info(
            "ocpp: charger %s smart charging %s: stack levels 0-%s, %s periods, "
            "units %s",
            charger_id,
            {True: "on", False: "off", None: "unknown"}[caps.smart_charging],
            caps.max_stack_level,
            caps.max_periods,
            ",".join(sorted(caps.rate_units)) or "unknown",
        )
        return caps

    async def discover_quietly(self, charger_id: str, state: ChargerState) -> None:
        """``discover_capabilities`` for a task: failures are logged, not raised."""
        try:
            await self.discover_capabilities(charger_id)
        except (OcppServerError, TimeoutError, ValueError) as err:
            if self.chargers.get(charger_id) is state and state.connected:
                log.warning(
                    "ocpp: charger %s: capabilities not read (%s); smart charging "
                    "will assume A, stack level 0 and 1 period until it reboots",
                    charger_id,
                    err,
                )

    async def _boot_backstop(self, state: ChargerState) -> None:
        await asyncio.sleep(_BOOT_BACKSTOP_S)
        if (
            self.chargers.get(state.id) is state
            and state.connected
            and not state.booted
            and state.capabilities is None
            and state.registration == "accepted"
        ):
            await self.discover_quietly(state.id, state)

    # -- handshake ------------------------------------------------------------

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        identity = identity_from_path(request.path)
        if identity is None:
            return connection.respond(
                HTTPStatus.BAD_REQUEST, "no charge point identity in the URL path\n"
            )
        charger = self.known.get(identity)
        if charger is None:
            if self.config.allow_discovery:
                return None  # let in as pending: Boot and Heartbeat only
            log.warning(
                "ocpp: unknown charger %r refused (404); add it to [[chargers]] "
                "or set allow_discovery",
                identity,
            )
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown charge point\n")
        if self.config.security_profile == 0:
            return None
        password = charger.password.get_secret_value() if charger.password else None
        if not check_basic_auth(
            request.headers.get("Authorization"), identity, password
        ):
            log.warning(
                "ocpp: charger %r refused (401): %s",
                identity,
                "no password configured"
                if password is None
                else "missing or wrong Basic credentials",
            )
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="fusebox-ocpp"'
            return response
        return None

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        identity = (
            identity_from_path(connection.request.path) if connection.request else None
        )
        charger = self.known.get(identity) if identity else None
        chosen = choose_subprotocol(offered, charger.ocpp_version if charger else None)
        return Subprotocol(chosen) if chosen else None

    # -- one connection -----------------------------------------------------

    def _negotiated_version(self, ws: ServerConnection, identity: str) -> str | None:
        if ws.subprotocol is not None:
            return SUBPROTOCOLS[ws.subprotocol]
        assert ws.request is not None
        offered = ws.request.headers.get_all("Sec-WebSocket-Protocol")
        charger = self.known.get(identity)
        pinned = charger.ocpp_version if charger else None
        if offered or pinned not in (None, "1.6"):
            return None
        return "1.6"  # no subprotocol offered: a 1.6 charger (e.g. Grizzl-E)

    async def _session(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        identity = identity_from_path(ws.request.path)
        assert identity is not None  # process_request refused it otherwise
        version = self._negotiated_version(ws, identity)
        if version is None:
            log.warning(
                "ocpp: charger %r offered %s, no common OCPP version; closing",
                identity,
                ws.request.headers.get_all("Sec-WebSocket-Protocol") or "nothing",
            )
            await ws.close(_CLOSE_NO_COMMON_VERSION, "no common OCPP version")
            return
        now = self.clock()
        remote = _remote(ws)
        registration: Registration = "accepted" if identity in self.known else "pending"
        state = ChargerState(identity, version, registration, now, now, remote)
        previous = self.chargers.get(identity)
        if previous is not None:
            # a reconnect often beats the old socket's death: the newest one wins
            state.boot, state.connectors = previous.boot, dict(previous.connectors)
            state.capabilities = previous.capabilities
            state.firmware_status = previous.firmware_status
            state.transactions = dict(previous.transactions)
            state.power_w, state.register_wh = previous.power_w, previous.register_wh
            state.measured_at = previous.measured_at
        if registration == "pending":
            held = self.pending.get(identity)
            if held is None:
                self.pending[identity] = PendingCharger(
                    identity, now, now, remote, version
                )
            else:
                held.last_seen, held.remote, held.ocpp_version = now, remote, version
        self.chargers[identity] = state
        link = _Link(ws, version)
        cp = _CHARGE_POINT_CLASSES[version](
            _Conversation(self, state), link, self.config.response_timeout_s
        )
        if registration == "accepted" and self.known[identity].validation == "off":
            lib.make_lenient(cp)
        state.charge_point = cp
        if registration == "accepted":
            self.spawn(self._boot_backstop(state))
            self.notify(identity)
        log.info(
            "ocpp: charger %s connected from %s, OCPP %s, %s",
            identity,
            remote,
            version,
            registration,
        )
        try:
            await self._converse(ws, cp, state)
        except ConnectionClosed:
            pass
        finally:
            if self.chargers.get(identity) is state:
                state.connected = False
                self.notify(identity)
            log.info(
                "ocpp: charger %s disconnected (%s)", identity, ws.close_code or "-"
            )

    async def _converse(
        self, ws: ServerConnection, cp: Any, state: ChargerState
    ) -> None:
        version = state.ocpp_version
        async for raw in ws:
            state.last_seen = self.clock()
            # (an approved charger's pending connection is no longer in
            # ``pending`` while it answers the new password)
            held = self.pending.get(state.id)
            if held is not None and state.registration == "pending":
                held.last_seen = state.last_seen
            try:
                frame = screen_frame(raw, version)
            except FrameError as err:
                log.warning("ocpp: charger %s: %s: %.200r", state.id, err, raw)
                await ws.send(
                    call_error_frame(err.message_id, err.code, err.description)
                )
                continue
            if frame is None:
                continue
            if (
                frame[0] == CALL
                and state.registration == "pending"
                and frame[2] not in _PENDING_ALLOWED
            ):
                await ws.send(
                    call_error_frame(
                        frame[1], "SecurityError", "charger is pending acceptance"
                    )
                )
                continue
            text = raw if isinstance(raw, str) else raw.decode("utf-8")
            known = self.known.get(state.id)
            if (
                frame[0] == CALL
                and known is not None
                and known.validation == "clip_strings"
            ):
                payload, clipped = lib.clip_strings(version, frame[2], frame[3])
                if clipped:
                    self.note_skipped(
                        state.id, [f"clipped:{frame[2]}.{p}" for p in clipped]
                    )
                    text = json.dumps([CALL, frame[1], frame[2], payload])
            try:
                await cp.route_message(text)
            except ConnectionClosed:
                raise
            except Exception:
                # e.g. a handler returning None: the library lets that escape
                log.exception(
                    "ocpp: charger %s: frame not handled: %.200r", state.id, raw
                )
                if frame[0] == CALL:
                    await ws.send(
                        call_error_frame(frame[1], "InternalError", "not handled")
                    )


def _remote(ws: ServerConnection) -> str | None:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return None if address is None else str(address)
