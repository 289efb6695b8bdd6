"""A simulated AC charge point on OCPP-J 1.6 or 2.0.1, with an EV on each connector.

``python -m simulators.charger`` runs one (or ``--fleet N``) charge points::

    python -m simulators.charger --url ws://127.0.0.1:9000/ocpp --id CP1 \\
        --ocpp 2.0.1 --plug-in-after 5 --unplug-after 600 --speed 60 \\
        --ledger var/cp1.jsonl --state var/cp1.state.json

The charge point connects to ``<url>/<id>`` (HTTP Basic auth with ``--password``,
or with the password the CSMS set: 1.6 ``AuthorizationKey``, 2.0.1
``SecurityCtrlr.BasicAuthPassword``, kept in the state file), boots, sends
heartbeats and StatusNotifications, and runs transactions from a scenario:
``--plug-in-after``/``--unplug-after`` or ``--scenario FILE``, a JSON list of timed
actions (seconds after start)::

    [{"at": 2, "action": "plug", "connector": 1},
     {"at": 3, "action": "start", "connector": 1, "id_tag": "TAG1"},
     {"at": 60, "action": "stop", "connector": 1},
     {"at": 61, "action": "unplug", "connector": 1}]

``start`` authorizes and then starts. With a scenario the process exits 0 once
every action has run, no transaction is open and every queued message has been
delivered. The CSMS can also start and stop transactions remotely (a remote start
on an empty connector plugs in a new EV).

The EV (``simulators.ev``) draws ``min(EV maximum, composite limit)``, the limit
computed by ``protocols.ocpp`` from the installed charging profiles; ``--speed``
simulated seconds pass per real second, so the energy register moves ``--speed``
times faster than the power it reports. Profiles, energy registers, the seqNo and
the queue of undelivered transaction messages live in ``--state FILE``.

Offline: transaction messages (1.6 Start/StopTransaction and MeterValues, 2.0.1
TransactionEvent with ``offline=true`` when produced offline) go through one queue,
in memory and in the state file, and are delivered in order, each resent with its
original message id until the CSMS answers it. Other messages are sent only while
connected. The link reconnects with capped full-jitter backoff.

The ledger (``--ledger FILE``) gets one JSON line per transaction message the CSMS
answered with a CallResult::

    {"charger": "CP1", "ocpp": "1.6", "kind": "start", "action": "StartTransaction",
     "connector": 1, "transaction_id": 17, "tx_ref": "9f0c...", "message_id": "...",
     "timestamp": "2024-05-01T18:00:00Z", "acked_at": "2024-05-01T18:00:00.2Z",
     "offline": false, "meter_start_wh": 1000}

``kind`` is ``start``/``meter``/``stop`` (2.0.1: TransactionEvent Started/Updated/
Ended, with ``seq_no`` and ``event_type``); ``meter`` lines carry ``energy_wh``,
``power_w`` and ``soc_pct``; ``stop`` lines ``meter_stop_wh`` and ``reason``.
``transaction_id`` is the CSMS's (1.6, ``-1`` if the start was never answered) or
the charger's uuid (2.0.1).

SIGTERM and SIGINT end the run after saving the state; exit code 0.

Time. With the real clock (the default) ``--speed`` scales the EV's energy only and
``--meter-interval`` and scenario times are real seconds. With a simulated clock
(``--clock sim:<ISO start>@<anchor>x<speed>`` or ``$FUSEBOX_CLOCK``,
``protocols.clock``), shared with the edge and the meters of a scenario, the EV
integrates simulated seconds (``--speed`` is ignored), every timestamp and every
profile evaluation uses the clock, ``--meter-interval`` (and the CSMS's
``MeterValueSampleInterval``) is simulated seconds, and a scenario's ``at`` is
simulated seconds after the start, or an ISO time on the clock
(``{"at": "2025-01-15T18:00:00Z", ...}``). Heartbeats and reconnect backoff stay in
real seconds.

``--power-file FILE`` keeps the total power the process's EVs draw now in FILE
(JSON ``{"power_w": 7360.0, "ts": "...", "chargers": {"CP1": 7360.0}}``, replaced
atomically on every change and at least every second), for ``fusebox sim meter
--add-load-file FILE``: the site meter then sees the EVs.

A transaction still open when the process ended (it is in the state file) is
ended when the charger starts again with that state, as a charge point does after
a reboot: StopTransaction (1.6) / TransactionEvent Ended (2.0.1, offline) with
reason ``Reboot`` if the last run shut down cleanly, else ``PowerLoss``, at the
time and energy register of the last save, queued behind whatever was queued.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from protocols.backoff import Backoff
from protocols.clock import Clock, clock_from_env
from protocols.ocpp import (
    InstalledProfile,
    ProfileError,
    ProfilePurpose,
    composite_schedule,
    format_utc,
    from_ocpp16,
    from_ocpp201,
    limit_at,
    parse_set_charging_profile_16,
    parse_set_charging_profile_201,
    to_ocpp16,
    to_ocpp201,
)
from simulators._args import add_clock_argument
from simulators._signals import stop_on_signals
from simulators.ev import VOLTAGE_V, EvBattery
from simulators.ocpp_lib import (
    SUBPROTOCOLS,
    CallError,
    ChargePoint16,
    ChargePoint201,
    make_call,
    make_result,
    on,
    result_dict,
    to_camel,
)

log = logging.getLogger("fusebox.sim.charger")
_wire_log = logging.getLogger("fusebox.sim.charger.wire")

VERSIONS: Final = ("1.6", "2.0.1")
MAX_STACK_LEVEL: Final = 10
MAX_PERIODS: Final = 24
MAX_PROFILES: Final = 20
TX_MESSAGE_ATTEMPTS: Final = 3
RESPONSE_TIMEOUT_S: Final = 30
_RESULT_GRACE_S: Final = 0.2
ACTIONS: Final = {"plug", "start", "stop", "unplug"}
_ACTION_ALIASES: Final = {"authorize+start": "start", "authorize_start": "start"}

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


def utc_text(moment: datetime) -> str:
    return format_utc(moment)


# --- configuration --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioAction:
    """One timed action: ``plug``, ``start`` (authorize + start), ``stop``,
    ``unplug``, ``at_s`` seconds after the run starts."""

    at_s: float
    action: str
    connector: int = 1
    id_tag: str | None = None
    at_time: datetime | None = None
    """An absolute time (on the charger's clock) in place of ``at_s``."""


def parse_scenario(document: object) -> tuple[ScenarioAction, ...]:
    """A scenario file's JSON list to actions sorted by time; ``ValueError`` if it is
    not one."""
    if not isinstance(document, list):
        raise ValueError("a scenario is a JSON list of {at, action, ...} objects")
    actions: list[ScenarioAction] = []
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise ValueError(f"scenario item {index} is not an object")
        name = str(item.get("action", ""))
        name = _ACTION_ALIASES.get(name, name)
        if name not in ACTIONS:
            raise ValueError(
                f"scenario item {index}: action must be one of {sorted(ACTIONS)} "
                f"(or authorize+start), got {item.get('action')!r}"
            )
        at_time: datetime | None = None
        try:
            if isinstance(item.get("at"), str):
                at_time = datetime.fromisoformat(item["at"].replace("Z", "+00:00"))
                if at_time.tzinfo is None:
                    raise ValueError("naive time")
                at_s = at_time.timestamp()
            else:
                at_s = float(item["at"])
            connector = int(item.get("connector", 1))
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"scenario item {index}: needs a number (seconds) or an ISO time "
                "with a zone 'at' and an int 'connector'"
            ) from None
        id_tag = item.get("id_tag")
        actions.append(
            ScenarioAction(
                at_s,
                name,
                connector,
                None if id_tag is None else str(id_tag),
                at_time,
            )
        )
    if len({a.at_time is None for a in actions}) > 1:
        raise ValueError("a scenario's 'at' are all seconds or all ISO times")
    return tuple(sorted(actions, key=lambda a: a.at_s))


@dataclass(frozen=True, slots=True)
class ChargerConfig:
    url: str
    charger_id: str
    version: str = "1.6"
    password: str | None = None
    connectors: int = 1
    ev_battery_kwh: float = 60.0
    ev_soc_pct: float = 20.0
    ev_max_kw: float = 11.0
    phases: int = 3
    max_current_a: float = 32.0
    id_tag: str = "SIMTAG01"
    meter_interval_s: float = 10.0
    heartbeat_s: float | None = None
    scenario: tuple[ScenarioAction, ...] | None = None
    speed: float = 1.0
    ledger_path: Path | None = None
    state_path: Path | None = None
    max_backoff_s: float = 15.0
    clock: Clock = field(default_factory=Clock)
    power_path: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}/{self.charger_id}"

    @property
    def charger_max_w(self) -> float:
        return self.max_current_a * VOLTAGE_V * self.phases

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ChargerConfig:
        if args.ocpp not in VERSIONS:
            raise ValueError(f"--ocpp must be one of {VERSIONS}")
        if not str(args.url).startswith(("ws://", "wss://")):
            raise ValueError(f"--url must be ws:// or wss://, got {args.url!r}")
        if args.connectors < 1:
            raise ValueError("--connectors must be >= 1")
        if args.speed <= 0 or args.meter_interval <= 0:
            raise ValueError("--speed and --meter-interval must be > 0")
        scenario: tuple[ScenarioAction, ...] | None = None
        if args.scenario is not None:
            if args.plug_in_after is not None or args.unplug_after is not None:
                raise ValueError("use --scenario or --plug-in-after, not both")
            scenario = parse_scenario(
                json.loads(Path(args.scenario).read_text(encoding="utf-8"))
            )
        elif args.plug_in_after is not None:
            plug = float(args.plug_in_after)
            steps = [
                ScenarioAction(plug, "plug", c) for c in range(1, args.connectors + 1)
            ] + [
                ScenarioAction(plug, "start", c) for c in range(1, args.connectors + 1)
            ]
            if args.unplug_after is not None:
                unplug = float(args.unplug_after)
                if unplug < plug:
                    raise ValueError("--unplug-after must be >= --plug-in-after")
                for c in range(1, args.connectors + 1):
                    steps += [
                        ScenarioAction(unplug, "stop", c),
                        ScenarioAction(unplug, "unplug", c),
                    ]
            scenario = tuple(steps)
        elif args.unplug_after is not None:
            raise ValueError("--unplug-after needs --plug-in-after")
        for action in scenario or ():
            if not 1 <= action.connector <= args.connectors:
                raise ValueError(f"scenario connector {action.connector} not present")
        return cls(
            url=str(args.url),
            charger_id=str(args.id),
            version=str(args.ocpp),
            password=args.password,
            connectors=int(args.connectors),
            ev_battery_kwh=float(args.ev_battery_kwh),
            ev_soc_pct=float(args.ev_soc),
            ev_max_kw=float(args.ev_max_kw),
            phases=int(args.phases),
            max_current_a=float(args.max_current),
            id_tag=str(args.id_tag),
            meter_interval_s=float(args.meter_interval),
            heartbeat_s=None if args.heartbeat is None else float(args.heartbeat),
            scenario=scenario,
            speed=float(args.speed),
            ledger_path=None if args.ledger is None else Path(args.ledger),
            state_path=None if args.state is None else Path(args.state),
            max_backoff_s=float(args.max_backoff),
            clock=clock_from_env(getattr(args, "clock", None)),
            power_path=None
            if getattr(args, "power_file", None) is None
            else Path(args.power_file),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the charge-point simulator's flags to ``parser``; pass the parsed
    namespace to ``run``."""
    parser.add_argument(
        "--url",
        default=os.environ.get("FUSEBOX_OCPP_URL", "ws://127.0.0.1:9000/ocpp"),
        help="CSMS websocket URL; the charger id is appended as the last segment",
    )
    parser.add_argument("--id", default="CP1", help="charge point identity")
    parser.add_argument("--ocpp", choices=VERSIONS, default="1.6")
    parser.add_argument("--password", default=None, help="HTTP Basic auth password")
    parser.add_argument("--connectors", type=int, default=1)
    parser.add_argument("--ev-battery-kwh", type=float, default=60.0)
    parser.add_argument("--ev-soc", type=float, default=20.0, metavar="PCT")
    parser.add_argument("--ev-max-kw", type=float, default=11.0)
    parser.add_argument("--phases", type=int, choices=(1, 3), default=3)
    parser.add_argument(
        "--max-current",
        type=float,
        default=32.0,
        metavar="A",
        help="charger's own per-phase maximum (default 32)",
    )
    parser.add_argument("--id-tag", default="SIMTAG01")
    parser.add_argument(
        "--meter-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between meter values during a transaction (default 10; "
        "simulated seconds with a simulated --clock)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=None,
        metavar="SECONDS",
        help="heartbeat interval (default: what the CSMS's boot answer says)",
    )
    parser.add_argument("--plug-in-after", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--unplug-after", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--scenario", default=None, metavar="FILE")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated EV seconds per real second with the real clock (default 1)",
    )
    add_clock_argument(parser)
    parser.add_argument(
        "--power-file",
        default=None,
        metavar="FILE",
        help="keep the total power drawn now in FILE (JSON, for fusebox sim meter "
        "--add-load-file)",
    )
    parser.add_argument(
        "--ledger",
        default=None,
        metavar="FILE",
        help="append one JSON line per answered transaction message",
    )
    parser.add_argument(
        "--state",
        default=None,
        metavar="FILE",
        help="profiles, registers and the offline queue (kept across restarts)",
    )
    parser.add_argument(
        "--fleet",
        type=int,
        default=None,
        metavar="N",
        help="run N chargers with ids <id>-0001 ... in this process",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="cap of the reconnect backoff (default 15)",
    )


# --- persistent state -----------------------------------------------------------------


class StateStore:
    """The charger's durable state as one JSON document, replaced atomically."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "profiles": [],
            "queue": [],
            "energy_wh": {},
            "tx_ids": {},
            "seq_no": 0,
            "config": {},
            "open_tx": {},
            "clean_shutdown": False,
        }
        if path is not None and path.exists():
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self.data.update(loaded)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, self.path)


class Ledger:
    """Append-only JSON lines, flushed per line; shared by a fleet."""

    def __init__(self, path: Path | None) -> None:
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# --- connectors -----------------------------------------------------------------------


@dataclass(slots=True)
class Transaction:
    ref: str
    """Local reference; in 2.0.1 also the transactionId."""
    id_tag: str
    started_at: datetime
    meter_start_wh: int
    remote_start_id: int | None = None


@dataclass(slots=True)
class Connector:
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
        return int(self.energy_wh)


# --- the OCPP session -----------------------------------------------------------------


class LinkDown(Exception):
    """The websocket closed while a call was outstanding."""


class _Session:
    """One websocket connection and the library ``ChargePoint`` on it."""

    def __init__(self, cp: Any, ws: ClientConnection) -> None:
        self.cp = cp
        self.ws = ws
        self.reader: asyncio.Task[None] = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.cp.start()

    async def call(
        self, version: str, action: str, payload: dict[str, Any], message_id: str | None
    ) -> dict[str, Any]:
        """Send one CALL and return its result as a snake_case dict; ``LinkDown`` if
        the connection drops first, ``CallError`` for a CALLERROR."""
        request = make_call(version, action, payload)
        pending = asyncio.ensure_future(
            self.cp.call(request, suppress=False, unique_id=message_id)
        )
        # the outcome is read below, or dropped with the connection
        pending.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            await asyncio.wait(
                {pending, self.reader}, return_when=asyncio.FIRST_COMPLETED
            )
            if not pending.done():
                # the reader ended; a result read just before the close frame is
                # already queued and needs one more turn of the loop
                await asyncio.wait({pending}, timeout=_RESULT_GRACE_S)
        finally:
            if not pending.done():
                # cancel() only asks: the task is done once it has run its
                # cancel, and reading it before that raised InvalidStateError
                # ("Result is not set") and killed the simulator when the CSMS
                # died mid-call. Wait for it (bounded), then read it.
                pending.cancel()
                await asyncio.wait({pending}, timeout=_RESULT_GRACE_S)
        if not pending.done() or pending.cancelled():
            raise LinkDown(action)
        exc = pending.exception()
        if isinstance(exc, ConnectionClosed | TimeoutError):
            raise LinkDown(action) from exc
        if exc is not None:
            raise exc
        # a result that won the race with the cancel is a delivered message:
        # returning it keeps it from being sent again after the reconnect
        return result_dict(pending.result())


def _make_cp16(sim: ChargerSim, ws: ClientConnection) -> Any:
    return _Cp16(sim.config.charger_id, ws, RESPONSE_TIMEOUT_S, _wire_log, sim=sim)


def _make_cp201(sim: ChargerSim, ws: ClientConnection) -> Any:
    return _Cp201(sim.config.charger_id, ws, RESPONSE_TIMEOUT_S, _wire_log, sim=sim)


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


# --- configuration keys ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigKey:
    key: str
    """1.6 configuration key."""
    component: str
    variable: str
    """2.0.1 device-model component and variable."""
    readonly: bool


CONFIG_KEYS: Final = (
    ConfigKey("HeartbeatInterval", "OCPPCommCtrlr", "HeartbeatInterval", False),
    ConfigKey(
        "MeterValueSampleInterval", "SampledDataCtrlr", "TxUpdatedInterval", False
    ),
    ConfigKey(
        "MeterValuesSampledData",
        "SampledDataCtrlr",
        "TxUpdatedMeasurands",
        True,
    ),
    ConfigKey("NumberOfConnectors", "EVSE", "Count", True),
    ConfigKey(
        "ChargeProfileMaxStackLevel", "SmartChargingCtrlr", "ProfileStackLevel", True
    ),
    ConfigKey(
        "ChargingScheduleMaxPeriods", "SmartChargingCtrlr", "PeriodsPerSchedule", True
    ),
    ConfigKey(
        "ChargingScheduleAllowedChargingRateUnit",
        "SmartChargingCtrlr",
        "RateUnit",
        True,
    ),
    ConfigKey("MaxChargingProfilesInstalled", "SmartChargingCtrlr", "Entries", True),
    ConfigKey("SupportedFeatureProfiles", "DeviceDataCtrlr", "SupportedFeatures", True),
)
_BY_KEY: Final = {k.key: k for k in CONFIG_KEYS}
# write-only, never read back: 1.6 AuthorizationKey, 2.0.1 this variable
_BASIC_AUTH_PASSWORD: Final = ("SecurityCtrlr", "BasicAuthPassword")
_BY_VARIABLE: Final = {(k.component, k.variable): k for k in CONFIG_KEYS}


# --- one charge point -----------------------------------------------------------------


class ChargerSim:
    """One simulated charge point: connectors with EVs, profiles, the offline queue,
    and the link to the CSMS."""

    def __init__(
        self,
        config: ChargerConfig,
        *,
        ledger: Ledger,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.version = config.version
        self.ledger = ledger
        self.clock: Callable[[], datetime] = clock or config.clock.now
        self.power_listener: Callable[[], None] | None = None
        self.state = StateStore(config.state_path)
        registers = self.state.data["energy_wh"]
        self.connectors = {
            c: Connector(id=c, energy_wh=float(registers.get(str(c), 0.0)))
            for c in range(1, config.connectors + 1)
        }
        values = self.state.data["config"]
        self.heartbeat_s: float | None = config.heartbeat_s
        if "HeartbeatInterval" in values:
            self.heartbeat_s = float(values["HeartbeatInterval"])
        self.meter_interval_s = float(
            values.get("MeterValueSampleInterval", config.meter_interval_s)
        )
        self.session: _Session | None = None
        self.queue_changed = asyncio.Event()
        self.status_dirty = asyncio.Event()
        self.reconnect_now = asyncio.Event()
        self.heartbeat_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._installed: list[InstalledProfile] | None = None
        self._jitter = random.Random()
        self.reconnects = 0
        self.acked = 0
        self.scenario_done = config.scenario is None
        self._end_interrupted()

    # -- helpers

    @property
    def simulated(self) -> bool:
        """True when the charger runs on a shared simulated clock."""
        return self.config.clock.simulated

    def clock_s(self) -> float:
        """A rising count of the charger's seconds: simulated epoch seconds on a
        simulated clock, else the monotonic clock."""
        if self.simulated:
            return self.config.clock.timestamp()
        return time.monotonic()

    def real_s(self, charger_s: float) -> float:
        """Real seconds to sleep while ``charger_s`` of the charger's seconds pass."""
        if self.simulated:
            return self.config.clock.real_seconds(charger_s)
        return max(0.0, charger_s)

    @property
    def ev_speed(self) -> float:
        """EV seconds per real second."""
        return self.config.clock.speed if self.simulated else self.config.speed

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task (handlers never await calls to the CSMS)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "charger %s: task failed",
                self.config.charger_id,
                exc_info=task.exception(),
            )

    def _new_ev(self) -> EvBattery:
        cfg = self.config
        return EvBattery.from_max_power(
            capacity_kwh=cfg.ev_battery_kwh,
            soc_pct=cfg.ev_soc_pct,
            max_power_kw=cfg.ev_max_kw,
            phases=cfg.phases,
        )

    @property
    def queue(self) -> list[dict[str, Any]]:
        return self.state.data["queue"]  # type: ignore[no-any-return]

    @property
    def tx_ids(self) -> dict[str, int]:
        return self.state.data["tx_ids"]  # type: ignore[no-any-return]

    def _save(self) -> None:
        self.state.data["energy_wh"] = {
            str(c.id): c.energy_wh for c in self.connectors.values()
        }
        self.state.data["saved_at"] = utc_text(self.clock())
        self.state.save()

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

    @property
    def idle(self) -> bool:
        """Scenario finished, no transaction open, nothing left to deliver."""
        return (
            self.scenario_done
            and not self.queue
            and all(c.tx is None for c in self.connectors.values())
        )

    # -- smart charging

    def installed(self) -> list[InstalledProfile]:
        if self._installed is None:
            parse = from_ocpp16 if self.version == "1.6" else from_ocpp201
            self._installed = [
                InstalledProfile(int(item["connector"]), parse(item["profile"]))
                for item in self.state.data["profiles"]
            ]
        return self._installed

    def set_profile(self, request: dict[str, Any]) -> str:
        try:
            if self.version == "1.6":
                target, profile = parse_set_charging_profile_16(request)
                wire = to_ocpp16(profile)
            else:
                target, profile = parse_set_charging_profile_201(request)
                wire = to_ocpp201(profile)
        except ProfileError as exc:
            log.warning("charger %s: profile rejected: %s", self.config.charger_id, exc)
            return "Rejected"
        if target > self.config.connectors or profile.stack_level > MAX_STACK_LEVEL:
            return "Rejected"
        if any(len(s.periods) > MAX_PERIODS for s in profile.schedules):
            return "Rejected"
        if profile.purpose is ProfilePurpose.TX:
            tx = self.connectors[target].tx if target in self.connectors else None
            if tx is None:
                return "Rejected"
            known = self._tx_key(tx)
            # a 1.6 id not recorded yet: the StartTransaction answer is in, but
            # its awaiting task has not run (a real charger has the id by then)
            if known is not None and profile.transaction_id != known:
                return "Rejected"  # bound to another transaction (K01.FR.09)
        kept = []
        for item, installed in zip(
            self.state.data["profiles"], self.installed(), strict=True
        ):
            old = installed.profile
            same_slot = (
                installed.connector_id == target
                and old.purpose is profile.purpose
                and old.stack_level == profile.stack_level
            )
            if old.id != profile.id and not same_slot:
                kept.append(item)
        if len(kept) >= MAX_PROFILES:
            return "Rejected"
        kept.append({"connector": target, "profile": wire})
        self.state.data["profiles"] = kept
        self._installed = None
        self.state.save()
        self._follow_profiles()
        log.info(
            "charger %s: profile %d (%s, level %d) installed on %d",
            self.config.charger_id,
            profile.id,
            profile.purpose.value,
            profile.stack_level,
            target,
        )
        return "Accepted"

    def clear_profiles(
        self,
        profile_id: int | None,
        connector_id: int | None,
        purpose: str | None,
        stack_level: int | None,
    ) -> bool:
        kept, removed = [], 0
        for item, installed in zip(
            self.state.data["profiles"], self.installed(), strict=True
        ):
            profile = installed.profile
            wire_purpose = item["profile"].get("chargingProfilePurpose")
            if profile_id is not None:
                match = profile.id == profile_id
            else:
                match = (
                    (connector_id is None or installed.connector_id == connector_id)
                    and (purpose is None or wire_purpose == purpose)
                    and (stack_level is None or profile.stack_level == stack_level)
                )
            if match:
                removed += 1
            else:
                kept.append(item)
        if removed:
            self.state.data["profiles"] = kept
            self._installed = None
            self.state.save()
            self._follow_profiles()
        return removed > 0

    def _drop_tx_profiles(self, connector: Connector) -> None:
        before = len(self.state.data["profiles"])
        self.state.data["profiles"] = [
            item
            for item, installed in zip(
                self.state.data["profiles"], self.installed(), strict=True
            )
            if not (
                installed.connector_id == connector.id
                and installed.profile.purpose is ProfilePurpose.TX
            )
        ]
        if len(self.state.data["profiles"]) != before:
            self._installed = None
            self.state.save()

    def _tx_key(self, tx: Transaction) -> int | str | None:
        return tx.ref if self.version == "2.0.1" else self.tx_ids.get(tx.ref)

    def offered_limit_w(self, connector: Connector, now: datetime) -> float:
        tx = connector.tx
        limit = limit_at(
            self.installed(),
            now,
            connector_id=connector.id,
            transaction_active=tx is not None,
            rate_unit="W",
            transaction_start=None if tx is None else tx.started_at,
            transaction_id=None if tx is None else self._tx_key(tx),
            default_phases=self.config.phases,
            charger_max=self.config.charger_max_w,
        )
        return self.config.charger_max_w if limit is None else limit.limit

    def composite(
        self, connector_id: int, duration_s: int, unit: str | None
    ) -> tuple[str, str, list[dict[str, Any]]] | None:
        """GetCompositeSchedule from the installed profiles: (start, unit,
        periods), or ``None`` for an unknown connector."""
        if connector_id != 0 and connector_id not in self.connectors:
            return None
        unit = unit or "A"
        now = self.clock().replace(microsecond=0)
        charger_max = (
            self.config.max_current_a if unit == "A" else self.config.charger_max_w
        )
        tx = self.connectors[connector_id].tx if connector_id else None
        schedule = composite_schedule(
            self.installed(),
            now=now,
            duration_s=max(1, int(duration_s)),
            connector_id=connector_id,
            transaction_active=tx is not None,
            rate_unit=unit,
            transaction_start=None if tx is None else tx.started_at,
            transaction_id=None if tx is None else self._tx_key(tx),
            default_phases=self.config.phases,
            charger_max=charger_max,
        )
        periods = [
            {
                "start_period": round(p.start_s),
                "limit": charger_max if p.limit is None else p.limit,
                "number_phases": p.number_phases,
            }
            for p in schedule.periods
        ]
        return utc_text(now), unit, periods

    # -- configuration

    def _config_value(self, key: ConfigKey) -> str:
        stored = self.state.data["config"].get(key.key)
        if stored is not None:
            return str(stored)
        return {
            "HeartbeatInterval": str(int(self.heartbeat_s or 0)),
            "MeterValueSampleInterval": f"{self.meter_interval_s:g}",
            "MeterValuesSampledData": (
                "Energy.Active.Import.Register,Power.Active.Import,Current.Import,SoC"
            ),
            "NumberOfConnectors": str(self.config.connectors),
            "ChargeProfileMaxStackLevel": str(MAX_STACK_LEVEL),
            "ChargingScheduleMaxPeriods": str(MAX_PERIODS),
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "MaxChargingProfilesInstalled": str(MAX_PROFILES),
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
        }[key.key]

    def get_configuration(
        self, keys: list[str] | None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        wanted = keys or [k.key for k in CONFIG_KEYS]
        known = [
            {
                "key": name,
                "readonly": _BY_KEY[name].readonly,
                "value": self._config_value(_BY_KEY[name]),
            }
            for name in wanted
            if name in _BY_KEY
        ]
        return known, [name for name in wanted if name not in _BY_KEY]

    def change_configuration(self, key: str, value: str) -> str:
        if key == "AuthorizationKey":
            return self._set_password(value, hex_key=True)
        entry = _BY_KEY.get(key)
        if entry is None:
            return "NotSupported"
        if entry.readonly:
            return "Rejected"
        try:
            number = float(value)
        except ValueError:
            return "Rejected"
        if number <= 0:
            return "Rejected"
        if key == "HeartbeatInterval":
            self.heartbeat_s = number
            self.heartbeat_changed.set()
        elif key == "MeterValueSampleInterval":
            self.meter_interval_s = number
        self.state.data["config"][key] = value
        self.state.save()
        return "Accepted"

    def get_variable(self, data: dict[str, Any]) -> dict[str, Any]:
        component = data.get("component", {})
        variable = data.get("variable", {})
        entry = _BY_VARIABLE.get((component.get("name"), variable.get("name")))
        result: dict[str, Any] = {"component": component, "variable": variable}
        if entry is None:
            known = any(k.component == component.get("name") for k in CONFIG_KEYS)
            result["attribute_status"] = (
                "UnknownVariable" if known else "UnknownComponent"
            )
            return result
        value = self._config_value(entry)
        if entry.key == "ChargingScheduleAllowedChargingRateUnit":
            value = "A,W"
        result.update(attribute_status="Accepted", attribute_value=value)
        return result

    def set_variable(self, data: dict[str, Any]) -> dict[str, Any]:
        component = data.get("component", {})
        variable = data.get("variable", {})
        entry = _BY_VARIABLE.get((component.get("name"), variable.get("name")))
        result: dict[str, Any] = {"component": component, "variable": variable}
        if (component.get("name"), variable.get("name")) == _BASIC_AUTH_PASSWORD:
            status = self._set_password(str(data.get("attribute_value")), hex_key=False)
            result["attribute_status"] = status
            return result
        if entry is None:
            known = any(k.component == component.get("name") for k in CONFIG_KEYS)
            result["attribute_status"] = (
                "UnknownVariable" if known else "UnknownComponent"
            )
            return result
        status = self.change_configuration(entry.key, str(data.get("attribute_value")))
        result["attribute_status"] = "Accepted" if status == "Accepted" else "Rejected"
        return result

    def _set_password(self, value: str, *, hex_key: bool) -> str:
        """A new Basic auth password from the CSMS (write-only), used from the next
        connection on and kept in the state file: 1.6 ``AuthorizationKey`` is the
        hex of 16-20 key bytes (sent raw, as the OCPP-J example does), 2.0.1
        ``BasicAuthPassword`` is 16-40 characters of text."""
        if hex_key:
            try:
                key = bytes.fromhex(value)
            except ValueError:
                return "Rejected"
            if not 16 <= len(key) <= 20:
                return "Rejected"
            self.state.data["auth_key_hex"] = key.hex()
        else:
            if not 16 <= len(value) <= 40:
                return "Rejected"
            self.state.data["auth_key_hex"] = value.encode("utf-8").hex()
        self.state.save()
        log.info("%s: new Basic auth password from the CSMS", self.config.charger_id)
        return "Accepted"

    def _credentials(self) -> bytes | None:
        """The Basic auth password: the one the CSMS set, else ``--password``."""
        stored = self.state.data.get("auth_key_hex")
        if isinstance(stored, str):
            return bytes.fromhex(stored)
        if self.config.password is not None:
            return self.config.password.encode("utf-8")
        return None

    # -- remote control

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
        if requested == "BootNotification":
            self.spawn(self._send_triggered_boot())
        elif requested == "Heartbeat":
            self.spawn(self._send_now("Heartbeat", {}))
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
        log.info("charger %s: %s reset", self.config.charger_id, kind)
        for connector in self.connectors.values():
            if connector.tx is not None:
                await self.stop(
                    connector.id, "HardReset" if kind == "Hard" else "SoftReset"
                )
        await asyncio.sleep(0.1)
        self.reconnect_now.set()

    def change_availability(self, connector_id: int, operative: bool) -> str:
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

    # -- local actions (scenario, remote start)

    def plug(self, connector_id: int) -> None:
        connector = self.connectors[connector_id]
        if connector.ev is not None:
            return
        connector.ev = self._new_ev()
        if connector.operative:
            connector.status = "Preparing"
        self.status_dirty.set()
        log.info("charger %s: EV plugged into %d", self.config.charger_id, connector_id)

    def unplug(self, connector_id: int) -> None:
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
            self.enqueue(
                "stop",
                "StopTransaction",
                {
                    "meter_stop": connector.register_wh,
                    "timestamp": utc_text(now),
                    "transaction_id": None,
                    "id_tag": tx.id_tag,
                    "reason": reason,
                },
                connector,
            )
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
        if session is None:
            return True  # LocalAuthorizeOffline: an offline charger lets it start
        payload = (
            {"id_tag": id_tag}
            if self.version == "1.6"
            else {"id_token": {"id_token": id_tag, "type": "ISO14443"}}
        )
        try:
            result = await session.call(self.version, "Authorize", payload, None)
        except (LinkDown, CallError):
            return True
        info = result.get("id_tag_info") or result.get("id_token_info") or {}
        return bool(info.get("status") == "Accepted")

    # -- the queue of transaction messages

    def enqueue(
        self,
        kind: str,
        action: str,
        payload: dict[str, Any],
        connector: Connector,
    ) -> None:
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
                    self.version, entry["action"], payload, entry["message_id"]
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
        self.ledger.write(line)

    # -- meter values

    def _sampled_values(
        self, connector: Connector, context: str
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
        return values

    def _meter_value(self, connector: Connector, now: datetime, context: str) -> Any:
        return {
            "timestamp": utc_text(now),
            "sampled_value": self._sampled_values(connector, context),
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
            "meter_value": [self._meter_value(connector, now, context)],
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
                        self._meter_value(connector, now, "Sample.Periodic")
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
            await self._send_now("MeterValues", payload)

    # -- the EV model

    def _update_charging(self, connector: Connector, now: datetime) -> None:
        """Charging state of a connector with a transaction, from the EV and the
        offered limit; a change is reported (2.0.1: also as a TransactionEvent)."""
        if connector.tx is None or connector.ev is None:
            return
        offered_w = self.offered_limit_w(connector, now)
        connector.offered_w = offered_w
        ev = connector.ev
        if not connector.operative:
            status = "SuspendedEVSE"
        elif ev.full:
            status = "SuspendedEV"
        elif ev.power_for(offered_w) <= 0:
            status = "SuspendedEVSE"
        else:
            status = "Charging"
        if status != connector.status:
            connector.status = status
            self.status_dirty.set()
            if self.version == "2.0.1":
                self.enqueue(
                    "meter",
                    "TransactionEvent",
                    self._event_201(
                        connector, "Updated", "ChargingStateChanged", now, "Other"
                    ),
                    connector,
                )

    def tick(self, dt_real_s: float) -> None:
        """Advance every EV by ``dt_real_s * speed`` simulated seconds (the
        clock's speed when it is simulated, else ``--speed``)."""
        now = self.clock()
        mono = self.clock_s()
        for connector in self.connectors.values():
            if connector.tx is None or connector.ev is None:
                continue
            self._update_charging(connector, now)
            offered = connector.offered_w if connector.operative else 0.0
            power_w, energy_wh = connector.ev.step(dt_real_s * self.ev_speed, offered)
            connector.power_w = power_w
            connector.energy_wh += energy_wh
            if mono >= connector.next_meter_at:
                connector.next_meter_at = mono + self.meter_interval_s
                self._queue_meter_values(connector, now)
        if self.power_listener is not None:
            self.power_listener()

    def tick_interval_s(self) -> float:
        """Real seconds between EV steps: a quarter of the meter interval, at most
        0.5 s, and at most 10 simulated seconds on a simulated clock (the EV
        follows a new limit that soon)."""
        tick_s = min(0.5, self.real_s(self.meter_interval_s) / 4)
        if self.simulated:
            tick_s = min(tick_s, self.config.clock.real_seconds(10.0))
        return max(0.01, tick_s)

    def _follow_profiles(self) -> None:
        """The EVs draw what a changed limit allows now, not at the next step (the
        status it may change is reported after the step, behind the answer)."""
        now = self.clock()
        for connector in self.connectors.values():
            if connector.tx is None or connector.ev is None:
                continue
            offered = self.offered_limit_w(connector, now) if connector.operative else 0
            connector.power_w = connector.ev.power_for(offered)
        if self.power_listener is not None:
            self.power_listener()

    async def _simulate(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_interval_s())
            mono = time.monotonic()
            self.tick(mono - last)
            last = mono

    async def _run_scenario(self) -> None:
        started = self.clock_s()
        for step in self.config.scenario or ():
            if step.at_time is not None:
                ahead_s = (step.at_time - self.clock()).total_seconds()
            else:
                ahead_s = started + step.at_s - self.clock_s()
            delay = self.real_s(ahead_s)
            if delay > 0:
                await asyncio.sleep(delay)
            if step.action == "plug":
                self.plug(step.connector)
            elif step.action == "start":
                await self.start(step.connector, step.id_tag or self.config.id_tag)
            elif step.action == "stop":
                await self.stop(step.connector, "Local")
            else:
                self.unplug(step.connector)
        self.scenario_done = True
        self.queue_changed.set()

    # -- the link

    async def _send_now(self, action: str, payload: dict[str, Any]) -> None:
        """Send a non-transaction message if connected (never queued)."""
        session = self.session
        if session is None:
            return
        with contextlib.suppress(LinkDown, CallError):
            await session.call(self.version, action, payload, None)

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

    async def _report_status(self) -> None:
        while True:
            await self.status_dirty.wait()
            self.status_dirty.clear()
            for connector in self.connectors.values():
                status = connector.status
                if status == connector.reported_status:
                    continue
                now = utc_text(self.clock())
                if self.version == "1.6":
                    payload: dict[str, Any] = {
                        "connector_id": connector.id,
                        "error_code": "NoError",
                        "status": status,
                        "timestamp": now,
                    }
                else:
                    payload = {
                        "timestamp": now,
                        "connector_status": _STATUS_201.get(status, "Occupied"),
                        "evse_id": connector.id,
                        "connector_id": 1,
                    }
                session = self.session
                if session is None:
                    return
                try:
                    await session.call(
                        self.version, "StatusNotification", payload, None
                    )
                except CallError as exc:
                    log.warning(
                        "charger %s: StatusNotification refused: %s",
                        self.config.charger_id,
                        exc,
                    )
                connector.reported_status = status

    async def _heartbeat(self, interval_s: float) -> None:
        last = time.monotonic()
        while True:
            due = last + (self.heartbeat_s or interval_s)
            self.heartbeat_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self.heartbeat_changed.wait()
                continue  # a new interval: recompute the due time
            last = time.monotonic()
            await self._send_now("Heartbeat", {})

    async def _connect(self) -> ClientConnection:
        headers = {}
        password = self._credentials()
        if password is not None:
            token = f"{self.config.charger_id}:".encode() + password
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        ws = await connect(
            self.config.endpoint,
            subprotocols=[SUBPROTOCOLS[self.version]],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=10,
        )
        if ws.subprotocol != SUBPROTOCOLS[self.version]:
            await ws.close()
            raise InvalidHandshake(f"CSMS did not accept {SUBPROTOCOLS[self.version]}")
        return ws

    async def _online(self, ws: ClientConnection) -> None:
        """One connection: boot, status, heartbeats, queue; returns when it drops or
        a reset asks for a reconnect."""
        make = _make_cp16 if self.version == "1.6" else _make_cp201
        session = _Session(make(self, ws), ws)
        self.session = session
        workers: list[asyncio.Task[Any]] = []
        try:
            while True:
                boot = await self._send_boot()
                interval_s = float(boot.get("interval") or 60)
                if boot.get("status") == "Accepted":
                    break
                log.info(
                    "charger %s: boot %s, retry in %.0f s",
                    self.config.charger_id,
                    boot.get("status"),
                    interval_s,
                )
                # a CSMS may configure a Pending charger (its password, say) and
                # close the connection for it to reconnect: stop waiting then
                dropped, _ = await asyncio.wait([session.reader], timeout=interval_s)
                if dropped:
                    return
            for connector in self.connectors.values():
                connector.reported_status = None
            self.status_dirty.set()
            workers = [
                asyncio.create_task(self._drain(session)),
                asyncio.create_task(self._report_status()),
                asyncio.create_task(self._heartbeat(interval_s)),
            ]
            reset = asyncio.create_task(self.reconnect_now.wait())
            workers.append(reset)
            done, _ = await asyncio.wait(
                [session.reader, *workers], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not reset and task is not session.reader:
                    task.result()  # a worker failed: raise it
        except LinkDown:
            pass
        finally:
            self.session = None
            if workers and not workers[0].done():
                # let a transaction message whose result is already in finish
                # (cancelling it now would send it again after the reconnect)
                await asyncio.wait(workers[:1], timeout=2 * _RESULT_GRACE_S)
            for task in workers:
                task.cancel()
            for task in workers:
                with contextlib.suppress(asyncio.CancelledError, LinkDown):
                    await task
            session.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session.reader
            await ws.close()
        self.reconnect_now.clear()

    async def _link(self) -> None:
        backoff = Backoff(base_s=0.5, cap_s=self.config.max_backoff_s)
        attempt = 0
        ever = False
        while True:
            try:
                ws = await self._connect()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if attempt == 0:
                    log.warning(
                        "charger %s: cannot connect to %s: %s",
                        self.config.charger_id,
                        self.config.endpoint,
                        exc,
                    )
                await asyncio.sleep(backoff.delay(attempt, self._jitter))
                attempt += 1
                continue
            if ever:
                self.reconnects += 1
            ever = True
            attempt = 0
            log.info(
                "charger %s: connected to %s (OCPP %s), %d queued",
                self.config.charger_id,
                self.config.endpoint,
                self.version,
                len(self.queue),
            )
            try:
                await self._online(ws)
            except CallError as exc:
                log.warning(
                    "charger %s: the CSMS refused the boot: %s",
                    self.config.charger_id,
                    exc,
                )
            log.warning(
                "charger %s: connection lost, %d queued",
                self.config.charger_id,
                len(self.queue),
            )
            await asyncio.sleep(backoff.delay(0, self._jitter))

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set or, with a scenario, until it is done."""
        tasks = [
            asyncio.create_task(self._link(), name=f"{self.config.charger_id}-link"),
            asyncio.create_task(self._simulate(), name=f"{self.config.charger_id}-ev"),
        ]
        if self.config.scenario is not None:
            tasks.append(asyncio.create_task(self._run_scenario()))
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if self.idle and self.config.scenario is not None:
                    break
                failed = [t for t in tasks if t.done() and not t.cancelled()]
                for task in failed:
                    if task.exception() is not None and task.get_name().endswith(
                        ("-link", "-ev")
                    ):
                        raise task.exception()  # type: ignore[misc]
                await asyncio.wait(
                    [stopper, *tasks], timeout=0.2, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            stopper.cancel()
            for task in [*tasks, *self._tasks]:
                task.cancel()
            for task in [*tasks, *list(self._tasks)]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.state.data["clean_shutdown"] = True
            self._save()
        log.info(
            "charger %s stopped: %d transaction messages acknowledged, %d queued, "
            "%d reconnects",
            self.config.charger_id,
            self.acked,
            len(self.queue),
            self.reconnects,
        )
        return 0


class PowerFile:
    """``--power-file``: the total power the process's EVs draw now, as JSON,
    replaced atomically when it changes and at least every ``every_s`` seconds."""

    def __init__(
        self, path: Path, sims: list[ChargerSim], *, every_s: float = 1.0
    ) -> None:
        self.path = path
        self.sims = sims
        self.every_s = every_s
        self._last: dict[str, float] | None = None
        self._written = 0.0
        self._failed = False

    def update(self) -> None:
        chargers = {
            sim.config.charger_id: round(
                sum(c.power_w for c in sim.connectors.values()), 1
            )
            for sim in self.sims
        }
        mono = time.monotonic()
        if chargers == self._last and mono - self._written < self.every_s:
            return
        document = {
            "power_w": round(sum(chargers.values()), 1),
            "ts": utc_text(self.sims[0].clock()),
            "chargers": chargers,
        }
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps(document), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._failed:
                log.error("cannot write the power file %s: %s", self.path, exc)
            self._failed = True
            return
        self._failed = False
        self._last = chargers
        self._written = mono


def _sample_facts(sampled: list[dict[str, Any]]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for sample in sampled:
        number = float(sample["value"])
        measurand = sample.get("measurand")
        if measurand == "Energy.Active.Import.Register":
            facts["energy_wh"] = number
        elif measurand == "Power.Active.Import":
            facts["power_w"] = number
        elif measurand == "SoC":
            facts["soc_pct"] = number
    return facts


# --- entry points ---------------------------------------------------------------------


def _fleet_configs(base: ChargerConfig, fleet: int | None) -> list[ChargerConfig]:
    if fleet is None:
        return [base]
    configs = []
    for n in range(1, fleet + 1):
        charger_id = f"{base.charger_id}-{n:04d}"
        state = base.state_path
        if state is not None:
            state = state.with_name(f"{state.stem}.{charger_id}{state.suffix}")
        configs.append(
            ChargerConfig(
                **{
                    **{f: getattr(base, f) for f in base.__dataclass_fields__},
                    "charger_id": charger_id,
                    "state_path": state,
                }
            )
        )
    return configs


async def run(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> int:
    """Run the simulated charge point(s) from parsed ``add_arguments`` flags.

    Returns 0 when the scenario is done or on SIGTERM/SIGINT, 2 for bad flags.
    ``stop`` lets an in-process caller (a test, the demo) stop it.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    if _wire_log.level == logging.NOTSET:
        _wire_log.setLevel(logging.WARNING)
    try:
        base = ChargerConfig.from_args(args)
        fleet = getattr(args, "fleet", None)
        if fleet is not None and fleet < 1:
            raise ValueError("--fleet must be >= 1")
        ledger = Ledger(base.ledger_path)
        sims = [ChargerSim(c, ledger=ledger) for c in _fleet_configs(base, fleet)]
        if base.power_path is not None:
            power_file = PowerFile(base.power_path, sims)
            for sim in sims:
                sim.power_listener = power_file.update
            power_file.update()
    except (ValueError, OSError) as exc:
        log.error("charger simulator: %s", exc)
        return 2
    stop = stop or asyncio.Event()
    try:
        with stop_on_signals(stop):
            results = await asyncio.gather(*(sim.run(stop) for sim in sims))
        return max(results)
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.charger``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.charger",
        description="A simulated OCPP 1.6 / 2.0.1 charge point with an EV.",
    )
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
