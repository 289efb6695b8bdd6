"""Discovery's side effects: approving, forgetting and expiring pending chargers,
and giving an approved charger its new password over its bound connection only.

``edge.ocpp.pending`` decides, purely, which device each pending charger id
belongs to and what is refused; ``Discovery`` applies that to the connections
of the ``OcppServer`` it serves (which calls it at each connection, frame and
close, and for the installer's approve and forget).

Approving (``approve``): the id becomes known at once (its next connection must
pass the normal checks, Basic auth in profiles 1 and 2). In profiles 1 and 2 its
new password is then set on the charger (1.6 ``AuthorizationKey``, 2.0.1
``SecurityCtrlr.BasicAuthPassword``: a CSMS may configure a charger while its
boot is Pending), over the connection of the device the id is bound to, and that
connection is closed (1012) so that it reconnects at once with it. If that
device is offline, the password *waits* for it: when the same device (same
client certificate, else address) reconnects without credentials, it is let in
pending, and after its BootNotification (or 10 s without one) it is given the
password and closed the same way. Any other device under the id is refused
(401) and shown to the installer as a conflict; a charger that connects with the
new password (set on it by hand) ends the wait. The password is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection

from edge.ocpp.commands import (
    BASIC_AUTH_PASSWORD_201,
    ChargerNotConnected,
    CommandFailed,
    authorization_key_16,
    change_configuration_request,
    set_variables_request,
    variables_answer,
)
from edge.ocpp.config import ChargerConfig
from edge.ocpp.handshake import awaits_password, remote_address
from edge.ocpp.pending import Binding, PendingRegistry
from edge.ocpp.routes import Link
from edge.ocpp.state import ApproveOutcome, ChargerState, Registration

if TYPE_CHECKING:
    from edge.ocpp.server import OcppServer

__all__ = ["CLOSE_FORGOTTEN", "DELIVERY_BACKSTOP_S", "Discovery"]

log = logging.getLogger("fusebox.edge.ocpp")

DELIVERY_BACKSTOP_S = 10.0
"""A bound device that reconnects for its password and sends no BootNotification
is given it after this long all the same."""

CLOSE_FORGOTTEN = 1000
"""The close code of a pending connection the installer forgot."""

_RETRY_ANSWERS = ("NoAnswer", "Disconnected")  # the password did not arrive


def _link(state: ChargerState | None) -> Link | None:
    link = getattr(state.charge_point, "_connection", None) if state else None
    return link if isinstance(link, Link) else None


class Discovery:
    """The pending chargers of one ``OcppServer`` and what the installer does
    with them (``registry`` holds the state; see the module docstring)."""

    def __init__(self, server: OcppServer) -> None:
        cfg = server.config
        self.server = server
        self.registry = PendingRegistry(
            max_pending=cfg.max_pending,
            max_per_address=cfg.max_pending_per_address,
            expire_after=timedelta(seconds=cfg.pending_expiry_s),
        )
        self._delivering: set[str] = set()
        # charger id -> the connection its waiting password was last tried on
        self._tried_on: dict[str, object] = {}

    # -- connections (called by the server) -----------------------------------

    def opened(
        self, ws: ServerConnection, identity: str, version: str
    ) -> Registration | None:
        """How a new open connection is registered: "accepted" (a known charger
        with its credentials), "pending" (discovered, or the bound device of an
        approved charger whose password waits), or None: close it (the id was
        forgotten or expired during its handshake)."""
        server = self.server
        waiting = awaits_password(
            server.config, server.known, self.registry, ws, identity
        )
        if identity in server.known and not waiting:
            return "accepted"
        bound = self.registry.connected(
            identity,
            ws,
            server.clock(),
            remote=remote_address(ws),
            version=version,
        )
        return "pending" if bound else None

    def started(self, state: ChargerState) -> None:
        """A pending connection is registered: if its password waits, give it
        after the boot (``routed``) or the backstop."""
        if state.id in self.registry.deliveries:
            self.server.spawn(self._delivery_backstop(state))

    def seen(self, state: ChargerState) -> None:
        """A pending connection sent a frame: its id is not stale."""
        self.registry.seen(state.id, state.last_seen)

    def routed(self, state: ChargerState) -> None:
        """A pending connection's CALL was handled: a waiting password goes out
        once the charger has booted (its BootNotification answered)."""
        if state.booted and state.id in self.registry.deliveries:
            self.server.spawn(self._deliver(state))

    def closed(self, ws: ServerConnection, identity: str) -> None:
        """A connection closed: a pending id's expiry counts from now."""
        self.registry.disconnected(identity, ws, self.server.clock())

    def expire(self) -> list[str]:
        """Drop the pending ids (and waiting passwords) with no connection for
        ``pending_expiry_s``; the ids dropped."""
        gone = self.registry.expire(self.server.clock())
        for charger_id in gone:
            log.info(
                "ocpp: pending charger %s dropped: no connection for %d s",
                charger_id,
                self.server.config.pending_expiry_s,
            )
            self._tried_on.pop(charger_id, None)
            state = self.server.chargers.get(charger_id)
            if state is not None and state.registration == "pending":
                if not state.connected:
                    del self.server.chargers[charger_id]
                self.server.bad_input.pop(charger_id, None)
        return gone

    # -- the installer's decisions --------------------------------------------

    async def approve(self, charger: ChargerConfig) -> ApproveOutcome:
        """Accept a pending charger and give its password to the device it is
        bound to (module docstring). ``KeyError`` if ``charger.id`` is not
        pending."""
        server, cid = self.server, charger.id
        if cid not in self.registry.chargers:
            raise KeyError(f"charger {cid!r} is not pending")
        server.known[cid] = charger
        binding = self.registry.approved(cid)
        log.info("ocpp: pending charger %s approved by the installer", cid)
        state = server.chargers.get(cid)
        link = _link(state)
        wants_password = (
            charger.password is not None and server.config.security_profile in (1, 2)
        )
        # only the bound device can have a live pending connection under the id
        live = (
            binding is not None
            and binding.live
            and state is not None
            and state.connected
            and state.registration == "pending"
            and link is not None
        )
        if not live or link is None:
            if wants_password and binding is not None:
                return self._hold(cid, binding)
            return ApproveOutcome(reconnecting=False, password=None)
        answer: str | None = None
        if wants_password:
            assert charger.password is not None
            answer = await self.push_password(cid, charger.password.get_secret_value())
            if answer == "Disconnected" and binding is not None:
                return self._hold(cid, binding)
            self.registry.delivery_results[cid] = answer
        server.spawn(link.close(1012, "approved: reconnect with credentials"))
        return ApproveOutcome(reconnecting=True, password=answer)

    def _hold(self, charger_id: str, binding: Binding) -> ApproveOutcome:
        self.registry.hold_delivery(charger_id, binding)
        log.info(
            "ocpp: charger %s is offline: its new password waits for its %s to "
            "reconnect (or for it to be set on the charger by hand)",
            charger_id,
            binding.peer.label,
        )
        return ApproveOutcome(
            reconnecting=False, password=None, held_for=binding.peer.label
        )

    def forget(self, charger_id: str) -> str | None:
        """Unbind a pending id ("pending") or drop a waiting password ("password
        delivery"), closing the bound device's connection; None if neither."""
        kind = "pending" if charger_id in self.registry.bindings else "delivery"
        binding = self.registry.forget(charger_id)
        if binding is None:
            return None
        self._tried_on.pop(charger_id, None)
        if isinstance(binding.connection, ServerConnection):
            self.server.spawn(
                binding.connection.close(CLOSE_FORGOTTEN, "forgotten by the installer")
            )
        log.info(
            "ocpp: %s charger %s forgotten by the installer (it was bound to %s); "
            "its next connection is bound anew",
            "pending" if kind == "pending" else "approved",
            charger_id,
            binding.peer.label,
        )
        return kind

    # -- the password ---------------------------------------------------------

    async def _delivery_backstop(self, state: ChargerState) -> None:
        await asyncio.sleep(DELIVERY_BACKSTOP_S)
        if state.connected and self.server.chargers.get(state.id) is state:
            await self._deliver(state)

    async def _deliver(self, state: ChargerState) -> None:
        """Give the waiting password to the bound device on this connection,
        then close it (1012) so that it reconnects with it; a charger that does
        not answer keeps it waiting for its next connection."""
        cid = state.id
        charger = self.server.known.get(cid)
        binding = self.registry.deliveries.get(cid)
        if (
            cid in self._delivering
            or binding is None
            or binding.connection is None
            or self._tried_on.get(cid) is binding.connection
            or charger is None
            or charger.password is None
        ):
            return
        self._delivering.add(cid)
        self._tried_on[cid] = binding.connection
        try:
            answer = await self.push_password(cid, charger.password.get_secret_value())
            if answer in _RETRY_ANSWERS:
                return
            self.registry.delivered(cid, answer)
            self._tried_on.pop(cid, None)
            link = _link(state)
            if link is not None and state.connected:
                await link.close(1012, "approved: reconnect with credentials")
        finally:
            self._delivering.discard(cid)

    async def push_password(self, charger_id: str, password: str) -> str:
        """Set ``password`` on the connected (pending) charger; its answer, or
        "NoAnswer" / "CallError: <code>" / "Disconnected". The installer may wait
        for this, so a silent charger gets 10 s at most."""
        server = self.server
        wait_s = min(server.config.response_timeout_s, 10.0)
        try:
            if server._version(charger_id) == "1.6":
                answer = await server._command(
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
                answer = await server._command(
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
