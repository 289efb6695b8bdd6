"""What each message means for one charger: ``ChargerSession``.

One ``ChargerSession`` per connection, version-agnostic; the per-version routes
(``edge.ocpp.routes``) read the library's snake_case kwargs and call it. It updates
the charger's ``ChargerState``, appends events and readings to the sink, and
answers with the library's result objects. It talks to the server only through
``SessionHost``, so it needs no listener to run.

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
event, which the cloud keeps but does not fold.

Sampled values: the routes salvage them before the schema sees the message
(``protocols.ocpp.salvage``); what is still not convertible here (a measurand
the edge does not store, a unit that does not fit the measurand, an
implausible value) is skipped too. Both land in the charger's bad-input
accounting (``edge.ocpp.quiet.BadInput.values``: counted by reason, skipped and
tolerated, logged when a new kind appears); the rest of the message is stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from edge.ocpp import lib
from edge.ocpp.authorize import Authorizer
from edge.ocpp.config import ChargerConfig, OcppServerConfig, ToleranceConfig
from edge.ocpp.quiet import BadInput
from edge.ocpp.state import (
    BootInfo,
    ChargerState,
    ConnectorStatus,
    EventSink,
    PendingCharger,
)
from edge.ocpp.transactions import (
    MeterConversion,
    TransactionStore,
    device_for,
    meter_readings,
    parse_charger_ts,
)
from edge.outbox import Event
from protocols.events import SessionStarted, SessionStopped
from protocols.readings import Reading

__all__ = ["ChargerSession", "SessionHost", "iso_utc"]

log = logging.getLogger("fusebox.edge.ocpp")

_STRICT = ToleranceConfig()
_NOTICE_MAX = 8192


class SessionHost(Protocol):
    """What a ``ChargerSession`` needs from the server that accepted its charger
    (``OcppServer``): configuration, the registry, the durable stores, and a way
    to run work after an answer went out."""

    @property
    def config(self) -> OcppServerConfig:
        """The OCPP server's config (tolerances, timeouts, id tags)."""

    @property
    def known(self) -> dict[str, ChargerConfig]:
        """The approved chargers' configs by id."""

    @property
    def pending(self) -> dict[str, PendingCharger]:
        """Unknown chargers that discovery let in, by id."""

    @property
    def sink(self) -> EventSink:
        """Where events and readings go (the outbox)."""

    @property
    def clock(self) -> Callable[[], datetime]:
        """The current time (the simulated clock in tests and the demo)."""

    @property
    def transactions(self) -> TransactionStore:
        """The durable transaction state."""

    @property
    def authorizer(self) -> Authorizer:
        """Answers Authorize from the local list and cache."""

    def notify(self, charger_id: str) -> None:
        """Tell the observers that this charger's state changed."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the server keeps and cancels when it stops."""

    async def discover_quietly(self, charger_id: str, state: ChargerState) -> None:
        """Read the charger's smart-charging capabilities; failures are logged, not
        raised."""

    @property
    def bad_input(self) -> dict[str, BadInput]:
        """Each charger's bad-input accounting, by id (kept across reconnects)."""


def iso_utc(ts: datetime) -> str:
    """An OCPP dateTime: UTC, milliseconds, "Z" (what chargers parse best)."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Lenient chargers (and ``validation = "off"``) may send any JSON type in any
# field, so payload fields are read through these, never trusted as typed.


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


def _finding(reason: str) -> tuple[str, str]:
    kind, _, detail = reason.partition(":")
    return kind, detail


def _opt_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _wh(value: float | None) -> float:
    """A meter register for a session event: the event model wants 0..1e12."""
    if value is None or value != value:
        return 0.0
    return min(max(value, 0.0), 1e12)


def _name(value: str) -> str:
    """A transaction id as the event model takes it (at most 128 characters)."""
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
    """A ``session_started`` event, its fields clipped to what the model takes."""
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
    """A ``session_stopped`` event, its fields clipped to what the model takes."""
    data = SessionStopped(
        charger_id=charger,
        transaction_id=_name(transaction_id),
        stopped_at=stopped_at,
        meter_stop_wh=_wh(meter_stop_wh),
        reason=reason[:64],
        id_tag=id_tag[:64],
    ).model_dump(mode="json")
    return Event(charger, "session_stopped", received_at, data)


class ChargerSession:
    """What one charger's messages mean, version-agnostic: the handlers of
    ``edge.ocpp.routes`` call one method per action."""

    def __init__(self, server: SessionHost, state: ChargerState) -> None:
        self.server = server
        self.state = state

    @property
    def version(self) -> str:
        """The OCPP version negotiated on this connection ("1.6" or "2.0.1")."""
        return self.state.ocpp_version

    def now(self) -> datetime:
        """The server's clock: when a message was received."""
        return self.server.clock()

    @property
    def tolerance(self) -> ToleranceConfig:
        """The charger's configured quirks; strict for a pending charger."""
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
        """Sampled values as readings; skipped ones are counted and the latest
        power and energy register are kept on the charger's state."""
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
        """A (signed) firmware status: kept on the state and stored as a notice."""
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
        """Answer a BootNotification: Pending (and nothing stored) for a pending
        charger, else Accepted once the ``boot`` event is durable."""
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
                current_time=iso_utc(info.received_at),
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
            current_time=iso_utc(info.received_at),
            interval_s=cfg.heartbeat_interval_s,
            accepted=True,
        )

    async def boot16(self, payload: dict[str, Any]) -> object:
        """A 1.6 BootNotification (either serial number field will do)."""
        serial = payload.get("charge_point_serial_number") or payload.get(
            "charge_box_serial_number"
        )
        return await self.boot(
            BootInfo(
                vendor=_opt_str(payload.get("charge_point_vendor")),
                model=_opt_str(payload.get("charge_point_model")),
                serial_number=_opt_str(serial),
                firmware_version=_opt_str(payload.get("firmware_version")),
                reason=None,
                received_at=self.now(),
            )
        )

    async def boot201(self, payload: dict[str, Any]) -> object:
        """A 2.0.1 BootNotification (the station is a nested object)."""
        station = payload.get("charging_station")
        station = station if isinstance(station, dict) else {}
        return await self.boot(
            BootInfo(
                vendor=_opt_str(station.get("vendor_name")),
                model=_opt_str(station.get("model")),
                serial_number=_opt_str(station.get("serial_number")),
                firmware_version=_opt_str(station.get("firmware_version")),
                reason=_opt_str(payload.get("reason")),
                received_at=self.now(),
            )
        )

    def heartbeat(self) -> object:
        """Answer a Heartbeat with the current time (a charger sets its clock)."""
        return lib.heartbeat_result(self.version, current_time=iso_utc(self.now()))

    async def status16(self, payload: dict[str, Any]) -> object:
        """A 1.6 StatusNotification (a connector; no EVSE level)."""
        return await self.status(
            evse_id=None,
            connector_id=_opt_int(payload.get("connector_id")),
            status=_opt_str(payload.get("status")),
            error_code=_opt_str(payload.get("error_code")),
            charger_ts=_opt_str(payload.get("timestamp")),
            extra=payload,
        )

    async def status201(self, payload: dict[str, Any]) -> object:
        """A 2.0.1 StatusNotification (EVSE and connector; no error code)."""
        return await self.status(
            evse_id=_opt_int(payload.get("evse_id")),
            connector_id=_opt_int(payload.get("connector_id")),
            status=_opt_str(payload.get("connector_status")),
            error_code=None,
            charger_ts=_opt_str(payload.get("timestamp")),
            extra=payload,
        )

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
        """Store a StatusNotification as a ``status`` event and keep the
        connector's status on the charger's state."""
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

    def note_values(
        self,
        skipped: Sequence[tuple[str, str]],
        tolerated: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Count sampled values skipped or tolerated in one message, as
        ``(reason, detail)``, in the charger's bad-input accounting."""
        if not skipped and not tolerated:
            return
        bad = self.server.bad_input.get(self.state.id)
        if bad is None:
            bad = self.server.bad_input[self.state.id] = BadInput(self.state.id)
        bad.values(skipped, tolerated)

    def _note_skipped(self, conversion: MeterConversion) -> None:
        # "unit:Voltage/kV" -> ("unit", "Voltage/kV")
        self.note_values([_finding(r) for r in conversion.skipped])

    async def _id_tag_info(self, id_tag: str | None) -> dict[str, str] | None:
        if id_tag is None:
            return None
        return {"status": await self.server.authorizer.status(id_tag)}

    async def authorize16(self, payload: dict[str, Any]) -> object:
        """1.6 Authorize, from the local list and cache (never the cloud)."""
        info = await self._id_tag_info(_opt_str(payload.get("id_tag")) or "")
        return lib.result16.Authorize(id_tag_info=info)

    async def authorize201(self, payload: dict[str, Any]) -> object:
        """2.0.1 Authorize; a NoAuthorization token is always accepted."""
        token = _opt_dict(payload.get("id_token"))
        if token.get("type") == "NoAuthorization":
            return lib.result201.Authorize(id_token_info={"status": "Accepted"})
        status = await self.server.authorizer.status(
            _opt_str(token.get("id_token")) or ""
        )
        return lib.result201.Authorize(id_token_info={"status": status})

    async def start16(self, payload: dict[str, Any]) -> object:
        """1.6 StartTransaction: the edge issues the transaction id durably (a
        redelivered start gets its id again), then stores ``session_started``."""
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
        """1.6 StopTransaction: its readings and ``session_stopped`` (or
        ``session_stop_unmatched`` for a transaction id that is not positive),
        always answered with a CALLRESULT."""
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
                        "stopped_at": iso_utc(stopped_at),
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
        """2.0.1 TransactionEvent: readings, and ``session_started`` /
        ``session_stopped`` for Started / Ended; a redelivered (transaction,
        seqNo) is answered without being stored again."""
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
