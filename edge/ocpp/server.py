"""The edge's OCPP-J server: site chargers connect here, 1.6J and 2.0.1 on one port.

``OcppServer`` keeps the listener, the registry of chargers and the commands to
them. Layers, outside in, each in its own module:

1. **Handshake** (``edge.ocpp.handshake``, decisions in ``edge.ocpp.auth``):
   identity from the URL path, HTTP Basic auth in security profiles 1 and 2, TLS
   in profile 2, the subprotocol (no common version: closed with 1002).
   Per-message deflate is off: it triples the memory of an idle connection
   (reference/measured-facts.md); chargers that ask for it simply get none, which
   RFC 7692 allows.
2. **Raw frames** (``protocols.ocpp.frames``, pure; ``screen_frame`` here): the
   ``ocpp`` library only *logs* frames it cannot parse, so every frame is
   screened first and answered with the CALLERROR for the charger's version, or
   dropped (a malformed response).
3. **The library** (``edge.ocpp.lib``, routes in ``edge.ocpp.routes``): one
   ``ChargePoint`` subclass per version routes CALLs to the charger's
   ``ChargerSession`` (``edge.ocpp.session``), which says what each message
   means. A handler that raises is answered with InternalError by the library;
   anything that escapes the library is caught here and answered with
   InternalError too, so the connection and its read loop stay up. Chargers never
   share a task, so one charger's errors cannot reach another.

A charger that is *pending* (discovered, not configured) may only send
BootNotification (answered Pending, kept in ``OcppServer.pending`` for the
installer) and, in 1.6, Heartbeat; any other CALL is answered SecurityError
(2.0.1 B02.FR.09, OCPP-J 1.6 errata §3.8; ``protocols.ocpp.frames``) and
nothing of it reaches the outbox.

Discovery (``edge.ocpp.discovery``, decisions in ``edge.ocpp.pending``): a
pending charger id is bound to the device of its first connection (TLS client
certificate, else address); another device under it is refused at the handshake
and shown to the installer as a conflict; the installer's approval sends the new
password to the bound device only (waiting for it to reconnect if need be);
pending ids are bounded per address and per gateway and expire unconnected.

The registry's records (``ChargerState``, ``PendingCharger``, ...) live in
``edge.ocpp.state`` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from edge.ocpp import FrameError, OcppNotStarted, OcppServerError, handshake, lib
from edge.ocpp.auth import identity_from_path
from edge.ocpp.authorize import Authorizer
from edge.ocpp.commands import (
    CAPABILITY_KEYS_16,
    CAPABILITY_VARIABLES_201,
    Capabilities,
    ChargerNotConnected,
    CommandFailed,
    Variable,
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
from edge.ocpp.config import ChargerConfig, OcppServerConfig
from edge.ocpp.discovery import CLOSE_FORGOTTEN, Discovery
from edge.ocpp.quiet import BadInput, LibraryLog
from edge.ocpp.routes import Csms16, Csms201, Link, charge_point_for
from edge.ocpp.session import ChargerSession
from edge.ocpp.state import (
    ApproveOutcome,
    BootInfo,
    ChargerState,
    ConnectorStatus,
    EventSink,
    PendingCharger,
    Registration,
)
from edge.ocpp.transactions import TransactionStore
from edge.outbox import Event
from protocols.ocpp import ChargingProfile, ProfilePurpose, RateUnit
from protocols.ocpp.frames import (
    CALL,
    Drop,
    Reject,
    call_error_frame,
    call_frame,
    refuse_while_pending,
    screen,
)

__all__ = [
    "ApproveOutcome",
    "BootInfo",
    "ChargerState",
    "ConnectorStatus",
    "EventSink",
    "OcppServer",
    "PendingCharger",
    "call_error_frame",
    "screen_frame",
]

log = logging.getLogger("fusebox.edge.ocpp")

# a charger that reconnects without BootNotification (allowed) gets its
# capabilities read after this long
_BOOT_BACKSTOP_S = 10.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def screen_frame(raw: str | bytes, version: str) -> list[Any] | None:
    """The parsed frame when the ``ocpp`` library may route it, None when it must be
    dropped unanswered (a malformed CALLRESULT/CALLERROR, logged); raises
    ``FrameError`` for a frame to answer with a CALLERROR (the codes:
    ``protocols.ocpp.frames``)."""
    verdict = screen(raw, version)
    if isinstance(verdict, Reject):
        raise FrameError(verdict.code, verdict.message_id, verdict.description)
    if isinstance(verdict, Drop):
        log.warning("ocpp: malformed response frame dropped: %.200r", raw)
        return None
    return verdict.frame


class OcppServer:
    """The OCPP-J listener and the registry of chargers it has seen.

    ``await start()`` binds (``port`` then tells where; config port 0 picks a free
    one), ``await stop()`` closes every connection (1001) and the socket; ``run()``
    does both around waiting forever, for the agent's TaskGroup. ``chargers`` maps
    identity -> ``ChargerState`` (connected or last known); ``pending`` holds the
    unknown chargers discovery let in, for the installer to adopt.

    Transaction state (1.6 transaction ids, 2.0.1 sequence numbers, the id-tag
    cache) lives in the SQLite file ``transactions_path``; the agent keeps it
    beside the outbox (``edge.ocpp.transactions.store_path_beside``). None keeps
    it in memory (tests with a fake sink only: ids would then restart).
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
        # bad frames per charger, counted by reason and logged on a change
        self.bad_input: dict[str, BadInput] = {}
        # discovery's pending chargers, their bindings and the refusals
        self.discovery = Discovery(self)
        self._server: Server | None = None
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
        """Tell every observer that this charger changed; an observer that
        raises is logged, and the others still hear of it."""
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
        """The durable transaction state (``OcppNotStarted`` before ``start``)."""
        if self._transactions is None:
            raise OcppNotStarted("the OCPP server is not started: await start()")
        return self._transactions

    @property
    def authorizer(self) -> Authorizer:
        """Answers Authorize from the local list and cache (after ``start``)."""
        if self._authorizer is None:
            raise OcppNotStarted("the OCPP server is not started: await start()")
        return self._authorizer

    def note_skipped(self, charger: str, reasons: Sequence[str]) -> None:
        """Count skipped or clipped values; each (charger, reason) is logged once."""
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
        """The bound port (config port 0 picks a free one)."""
        if self._server is None:
            raise OcppNotStarted("the OCPP server is not listening: await start()")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def scheme(self) -> str:
        """The URL scheme: "wss" in security profile 2 (TLS), else "ws"."""
        return "wss" if self.config.security_profile == 2 else "ws"

    async def start(self) -> None:
        """Open the transaction store and listen."""
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
            subprotocols=handshake.subprotocols(),
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            compression=None,
            ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_timeout_s,
            max_size=cfg.max_message_bytes,
            ssl=handshake.ssl_context(cfg),
            logger=handshake.WebsocketsLog(
                logging.getLogger("websockets.server"), self.discovery.registry
            ),
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
        """Cancel the server's tasks, close every connection (1001) and the
        socket, and close the transaction store."""
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
        """``start``, wait until cancelled, ``stop``: for the agent's TaskGroup."""
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    @property
    def pending(self) -> dict[str, PendingCharger]:
        """The unknown chargers discovery holds for the installer, by id (their
        bindings: ``discovery.registry``)."""
        return self.discovery.registry.chargers

    async def approve(self, charger: ChargerConfig) -> ApproveOutcome:
        """Accept a charger that discovery held as pending (the installer
        approved it): from now on it is known, and its password (profiles 1 and
        2) goes to the device its pending id is bound to, now or when it
        reconnects (``edge.ocpp.discovery``). The outcome says what the charger
        answered; a charger that refused needs the password set on it by hand.
        ``KeyError`` if ``charger.id`` is not pending."""
        return await self.discovery.approve(charger)

    def forget_pending(self, charger_id: str) -> str | None:
        """The installer forgets a pending id ("pending") or the password
        waiting for an approved one ("delivery"): its bound connection is
        closed, its next connection is bound anew. None if neither."""
        return self.discovery.forget(charger_id)

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
        """Send ``build(version)`` (an action name and payload) to the charger and
        return its answer; ``ChargerNotConnected``, ``CommandFailed``,
        ``TimeoutError``. ``action`` names the command for the reader only."""
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
        """``discover_capabilities`` for a task: failures are logged, not raised.
        Either way the connection is then ready for profiles (the controller's
        fail-safe default goes out next)."""
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
        finally:
            if self.chargers.get(charger_id) is state:
                state.profiles_ready = True
                self.notify(charger_id)

    async def _boot_backstop(self, state: ChargerState) -> None:
        """A charger may reconnect without BootNotification: read its
        capabilities after ``_BOOT_BACKSTOP_S`` all the same."""
        await asyncio.sleep(_BOOT_BACKSTOP_S)
        if (
            self.chargers.get(state.id) is state
            and state.connected
            and not state.booted
            and state.registration == "accepted"
        ):
            if state.capabilities is None:
                await self.discover_quietly(state.id, state)
            else:  # known from an earlier connection: ready as it is
                state.profiles_ready = True
                self.notify(state.id)

    # -- handshake (``edge.ocpp.handshake``) -------------------------------------

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        self.discovery.expire()
        return handshake.process_request(
            self.config,
            self.known,
            self.discovery.registry,
            connection,
            request,
            self.clock(),
        )

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        return handshake.select_subprotocol(self.known, connection, offered)

    # -- one connection -----------------------------------------------------

    async def _session(self, ws: ServerConnection) -> None:
        """One charger's connection, from the open handshake to its close."""
        assert ws.request is not None
        identity = identity_from_path(ws.request.path)
        assert identity is not None  # process_request refused it otherwise
        version = handshake.negotiated_version(self.known, ws, identity)
        if version is None:
            log.warning(
                "ocpp: charger %r offered %s, no common OCPP version; closing",
                identity,
                ws.request.headers.get_all("Sec-WebSocket-Protocol") or "nothing",
            )
            await ws.close(handshake.CLOSE_NO_COMMON_VERSION, "no common OCPP version")
            return
        registration = self.discovery.opened(ws, identity, version)
        if registration is None:
            log.info("ocpp: charger %s is no longer pending; closing", identity)
            await ws.close(CLOSE_FORGOTTEN, "no longer pending: connect again")
            return
        state, cp = self._register(ws, identity, version, registration)
        if state.registration == "accepted":
            self.spawn(self._boot_backstop(state))
            self.notify(identity)
        else:
            self.discovery.started(state)
        log.info(
            "ocpp: charger %s connected from %s, OCPP %s, %s",
            identity,
            state.remote,
            version,
            state.registration,
        )
        try:
            await self._converse(ws, cp, state)
        except ConnectionClosed:
            pass
        finally:
            self.discovery.closed(ws, identity)
            if self.chargers.get(identity) is state:
                state.connected = False
                self.notify(identity)
            log.info(
                "ocpp: charger %s disconnected (%s)", identity, ws.close_code or "-"
            )

    def _register(
        self,
        ws: ServerConnection,
        identity: str,
        version: str,
        registration: Registration,
    ) -> tuple[ChargerState, Csms16 | Csms201]:
        """Enter a new connection in the registry (a pending one is in
        ``pending`` already: ``Discovery.opened``) with the library's
        ``ChargePoint`` that will route its CALLs."""
        now = self.clock()
        remote = handshake.remote_address(ws)
        state = ChargerState(identity, version, registration, now, now, remote)
        previous = self.chargers.get(identity)
        if previous is not None:
            # a reconnect often beats the old socket's death: the newest one wins
            state.carry_over(previous)
        self.chargers[identity] = state
        cp = charge_point_for(
            ChargerSession(self, state),
            Link(ws, version),
            self.config.response_timeout_s,
            lenient=registration == "accepted"
            and self.known[identity].validation == "off",
            bad_input=self._bad_input(identity),
        )
        state.charge_point = cp
        return state, cp

    async def _converse(
        self, ws: ServerConnection, cp: Any, state: ChargerState
    ) -> None:
        """Read the charger's frames until it goes: screen each, hold a pending
        charger to Boot and Heartbeat, and let the library route the rest; what
        escapes the library is answered InternalError, and the loop carries on."""
        version = state.ocpp_version
        async for raw in ws:
            state.last_seen = self.clock()
            if state.registration == "pending":
                self.discovery.seen(state)
            bad = self._bad_input(state.id)
            try:
                frame = screen_frame(raw, version)
            except FrameError as err:
                bad.bad(err.code, f"{err}: {raw[:200]!r}")
                await ws.send(
                    call_error_frame(err.message_id, err.code, err.description)
                )
                continue
            if frame is None:
                continue
            if state.registration == "pending":
                refusal = refuse_while_pending(frame, version)
                if refusal is not None:
                    await ws.send(refusal.frame())
                    continue
            text = self._library_text(state, raw, frame)
            library_log = getattr(cp, "logger", None)
            if isinstance(library_log, LibraryLog):
                library_log.refused_last = False
            try:
                await cp.route_message(text)
            except ConnectionClosed:
                raise
            except Exception:
                # e.g. a handler returning None: the library lets that escape. A
                # bug of ours: its traceback once, then counted like bad input
                if not bad.counts["not_handled"]:
                    log.exception(
                        "ocpp: charger %s: frame not handled: %.200r", state.id, raw
                    )
                bad.bad("not_handled", f"{raw[:200]!r}", exc_info=True)
                if frame[0] == CALL:
                    await ws.send(
                        call_error_frame(frame[1], "InternalError", "not handled")
                    )
            else:
                if not (
                    isinstance(library_log, LibraryLog) and library_log.refused_last
                ):
                    bad.ok()
            if state.registration == "pending":
                self.discovery.routed(state)  # a waiting password, after the boot

    def _bad_input(self, charger_id: str) -> BadInput:
        """The charger's bad-input log (kept across its reconnects)."""
        bad = self.bad_input.get(charger_id)
        if bad is None:
            bad = self.bad_input[charger_id] = BadInput(charger_id)
        return bad

    def _library_text(
        self, state: ChargerState, raw: str | bytes, frame: list[Any]
    ) -> str:
        """The frame as text for the library; for a charger configured with
        ``validation = "clip_strings"``, a CALL's over-long strings clipped to
        the schema's limits (and counted in ``skipped``)."""
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
        known = self.known.get(state.id)
        if (
            frame[0] == CALL
            and known is not None
            and known.validation == "clip_strings"
        ):
            payload, clipped = lib.clip_strings(state.ocpp_version, frame[2], frame[3])
            if clipped:
                self.note_skipped(
                    state.id, [f"clipped:{frame[2]}.{p}" for p in clipped]
                )
                text = call_frame(frame[1], frame[2], payload)
        return text
