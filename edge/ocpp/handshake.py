"""The opening handshake: who is connecting, may they, which OCPP version, over TLS?

The decisions themselves are pure: ``edge.ocpp.auth`` (identity, Basic auth,
subprotocol) and ``edge.ocpp.pending`` (discovery's pending chargers, their
binding to the device of their first connection, and the bounds); this module
applies them to the websockets server's hooks, and the server hands it its
configuration, its registry of known chargers (which grows when the installer
approves one) and its ``PendingRegistry`` at each call.

* The charge point identity is the last URL path segment. None, or one that
  fails the charger-id pattern (too long, not ASCII, a space, ``..``, ...): HTTP
  400 with the reason, before any other state is made for it, so no such id can
  reach the registry, the outbox or the cloud.
* An unknown identity gets HTTP 404 (OCPP-J 1.6 §3.2); with ``allow_discovery``
  it is let in *pending* and bound to the connecting device (TLS client
  certificate, else address): another device under that id gets 409; a new id
  beyond ``max_pending_per_address`` gets 429, beyond ``max_pending`` 503.
* A known identity must pass HTTP Basic auth in security profiles 1 and 2 (else
  401), except the bound device of an approved charger whose new password
  waits for it (``OcppServer.approve`` while it was offline): it is let in
  pending, to be given the password.
* Refusals are counted by reason and logged one line per address per change
  (``PendingRegistry.refusal``); websockets' own per-connection lines go to
  DEBUG, and a request that is not HTTP at all is one WARNING per kind, not a
  traceback per attempt (``WebsocketsLog``).
* The subprotocol is the charger's most preferred one we speak (and that its pin
  allows); no ``Sec-WebSocket-Protocol`` offered at all means 1.6; offered but
  nothing in common: the handshake completes without a subprotocol and the server
  closes at once with 1002 (OCPP-J 2.0.1 Part 4 §3.1.2).
* Security profile 2 is TLS 1.2 or later with the configured certificate; with
  ``tls_client_ca`` it also asks for (and verifies) client certificates.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from edge.ocpp.auth import (
    SUBPROTOCOLS,
    charger_id_problem,
    check_basic_auth,
    choose_subprotocol,
    identity_from_path,
)
from edge.ocpp.config import ChargerConfig, OcppServerConfig
from edge.ocpp.pending import Admit, Peer, PendingRegistry, Refuse

__all__ = [
    "CLOSE_NO_COMMON_VERSION",
    "WebsocketsLog",
    "negotiated_version",
    "peer_of",
    "process_request",
    "remote_address",
    "select_subprotocol",
    "ssl_context",
    "subprotocols",
]

log = logging.getLogger("fusebox.edge.ocpp")

CLOSE_NO_COMMON_VERSION = 1002
"""The close code when the charger offered subprotocols but none we speak."""


def subprotocols() -> list[Subprotocol]:
    """Every subprotocol the server speaks, for ``serve(subprotocols=...)``."""
    return [Subprotocol(name) for name in SUBPROTOCOLS]


def ssl_context(config: OcppServerConfig) -> ssl.SSLContext | None:
    """The TLS context for security profile 2 (TLS 1.2 at least), else None;
    with ``tls_client_ca``, client certificates are asked for and, when
    presented, must chain to it."""
    if config.security_profile != 2:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert config.tls_cert is not None  # checked by OcppServerConfig
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=config.tls_client_ca)
    return ctx


def peer_of(connection: ServerConnection) -> Peer:
    """The device at the other end: its address (host only) and the SHA-256
    fingerprint of its TLS client certificate, if it presented one."""
    address = connection.remote_address
    host = (
        str(address[0])
        if isinstance(address, tuple) and address
        else (None if address is None else str(address))
    )
    tls = connection.transport.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    return Peer(host, hashlib.sha256(der).hexdigest() if der else None)


def _offered_version(request: Request) -> str:
    """The version the charger will most likely speak (for the installer's
    page until it is connected): its first offer we speak; none offered: 1.6."""
    offered = [
        name.strip()
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for name in value.split(",")
    ]
    chosen = choose_subprotocol(offered, None)
    if chosen is not None:
        return SUBPROTOCOLS[chosen]
    return "unknown" if offered else "1.6"


def _refuse(
    connection: ServerConnection,
    verdict: Refuse,
    identity: str | None,
    peer: Peer,
    detail: str | None = None,
) -> Response:
    """The HTTP refusal for ``verdict``, logged in one line when it is news
    (with ``detail`` for the log only, when given)."""
    if verdict.log:
        log.warning(
            "ocpp: charger %.80a from %s refused (%d, %s): %s; further refusals "
            "from this address are counted, and logged when they change",
            identity if identity is not None else "",
            peer.label,
            verdict.status,
            verdict.reason,
            detail or verdict.message,
        )
    response = connection.respond(verdict.status, verdict.message + "\n")
    if verdict.status == HTTPStatus.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = 'Basic realm="fusebox-ocpp"'
    return response


def process_request(
    config: OcppServerConfig,
    known: Mapping[str, ChargerConfig],
    discovery: PendingRegistry,
    connection: ServerConnection,
    request: Request,
    now: datetime,
) -> Response | None:
    """The HTTP refusal (400, 401, 404, 409, 429, 503) for a charger that may not
    connect, or None to go on with the WebSocket handshake."""
    peer = peer_of(connection)
    identity = identity_from_path(request.path)
    problem = "empty" if identity is None else charger_id_problem(identity)
    if problem is not None:
        message = f"charge point identity in the URL path: {problem}"
        verdict = discovery.refusal(peer, "bad_id", HTTPStatus.BAD_REQUEST, message)
        return _refuse(connection, verdict, identity, peer)
    assert identity is not None
    charger = known.get(identity)
    if charger is None:
        if not config.allow_discovery:
            verdict = discovery.refusal(
                peer,
                "unknown",
                HTTPStatus.NOT_FOUND,
                "unknown charge point (add it to [[chargers]] or set allow_discovery)",
            )
            return _refuse(connection, verdict, identity, peer)
        admitted = discovery.admit(
            identity,
            peer,
            now,
            remote=remote_address(connection),
            version=_offered_version(request),
        )
        if isinstance(admitted, Refuse):
            return _refuse(connection, admitted, identity, peer)
        if admitted.new:
            log.info(
                "ocpp: unknown charger %s held pending for the installer, bound "
                "to its first connection's %s",
                identity,
                peer.label,
            )
        return None  # let in as pending: Boot and Heartbeat only
    if config.security_profile == 0:
        discovery.admitted(peer)
        return None
    password = charger.password.get_secret_value() if charger.password else None
    if check_basic_auth(request.headers.get("Authorization"), identity, password):
        discovery.admitted(peer)
        if identity in discovery.deliveries:
            log.info(
                "ocpp: charger %s connected with its new password (set by hand): "
                "it is no longer waiting for it",
                identity,
            )
            discovery.delivered(identity, "set by hand")
        return None
    waiting = discovery.admit_delivery(identity, peer, now)
    if isinstance(waiting, Admit):
        log.info(
            "ocpp: approved charger %s reconnected from its %s: its new password "
            "goes to it now",
            identity,
            peer.label,
        )
        return None
    why = "no password configured for it" if password is None else None
    return _refuse(connection, waiting, identity, peer, why)


def awaits_password(
    config: OcppServerConfig,
    known: Mapping[str, ChargerConfig],
    discovery: PendingRegistry,
    ws: ServerConnection,
    identity: str,
) -> bool:
    """Whether this open connection of a known charger was let in without its
    credentials, as the bound device its waiting password goes to."""
    charger = known.get(identity)
    if charger is None or identity not in discovery.deliveries:
        return False
    if config.security_profile == 0 or charger.password is None:
        return False
    assert ws.request is not None
    header = ws.request.headers.get("Authorization")
    return not check_basic_auth(header, identity, charger.password.get_secret_value())


class WebsocketsLog(logging.LoggerAdapter[logging.Logger]):
    """The logger handed to websockets' server: its per-connection INFO lines
    (open, rejected: the OCPP server logs its own) go to DEBUG, and a request
    that is not a readable HTTP upgrade (a port scan, a raw space in the path)
    is counted as ``bad_request`` and logged as one WARNING line per kind of
    failure instead of an ERROR with a traceback per attempt."""

    def __init__(self, base: logging.Logger, discovery: PendingRegistry) -> None:
        super().__init__(base, {})
        self.discovery = discovery
        self._seen: set[str] = set()

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        """Route one of websockets' log calls (see the class docstring)."""
        text = str(msg)
        if level == logging.INFO and text.startswith(
            ("connection open", "connection rejected")
        ):
            level = logging.DEBUG
        elif text == "opening handshake failed":
            exc = sys.exc_info()[1]
            why = f"{type(exc).__name__}: {exc}" if exc else "unknown"
            cause = exc.__cause__ if exc is not None else None
            if cause is not None:
                why += f" ({type(cause).__name__}: {cause})"
            self.discovery.refused["bad_request"] += 1
            kind = type(cause or exc).__name__
            if kind not in self._seen:
                self._seen.add(kind)
                log.warning(
                    "ocpp: a client's opening handshake failed: %.200s; further "
                    "ones like it are counted (bad_request) and logged at debug "
                    "level",
                    why,
                )
            level, kwargs["exc_info"] = logging.DEBUG, True
        super().log(level, msg, *args, **kwargs)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """No extra context: the lines pass as websockets wrote them."""
        return msg, kwargs


def select_subprotocol(
    known: Mapping[str, ChargerConfig],
    connection: ServerConnection,
    offered: Sequence[Subprotocol],
) -> Subprotocol | None:
    """The charger's most preferred subprotocol we speak and its pin allows; None
    answers without one (see ``negotiated_version`` for what follows)."""
    identity = (
        identity_from_path(connection.request.path) if connection.request else None
    )
    charger = known.get(identity) if identity else None
    chosen = choose_subprotocol(offered, charger.ocpp_version if charger else None)
    return Subprotocol(chosen) if chosen else None


def negotiated_version(
    known: Mapping[str, ChargerConfig], ws: ServerConnection, identity: str
) -> str | None:
    """The OCPP version to speak on an open connection, or None when there is no
    common one and the server must close with ``CLOSE_NO_COMMON_VERSION``."""
    if ws.subprotocol is not None:
        return SUBPROTOCOLS[ws.subprotocol]
    assert ws.request is not None
    offered = ws.request.headers.get_all("Sec-WebSocket-Protocol")
    charger = known.get(identity)
    pinned = charger.ocpp_version if charger else None
    if offered or pinned not in (None, "1.6"):
        return None
    return "1.6"  # no subprotocol offered: a 1.6 charger (e.g. Grizzl-E)


def remote_address(ws: ServerConnection) -> str | None:
    """The charger's address as "host:port", for logs and the installer's page."""
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return None if address is None else str(address)
