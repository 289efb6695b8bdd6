"""The opening handshake: who is connecting, may they, which OCPP version, over TLS?

The decisions themselves are pure functions in ``edge.ocpp.auth``; this module
applies them to the websockets server's hooks, and the server hands it its
configuration and its registry of known chargers at each call (the registry
grows when the installer approves a charger).

* The charge point identity is the last URL path segment (none: HTTP 400); an
  unknown identity gets HTTP 404 (OCPP-J 1.6 §3.2), or with ``allow_discovery`` is
  let in *pending*; a known one must pass HTTP Basic auth in security profiles 1
  and 2 (else HTTP 401).
* The subprotocol is the charger's most preferred one we speak (and that its pin
  allows); no ``Sec-WebSocket-Protocol`` offered at all means 1.6; offered but
  nothing in common: the handshake completes without a subprotocol and the server
  closes at once with 1002 (OCPP-J 2.0.1 Part 4 §3.1.2).
* Security profile 2 is TLS 1.2 or later with the configured certificate.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from edge.ocpp.auth import (
    SUBPROTOCOLS,
    check_basic_auth,
    choose_subprotocol,
    identity_from_path,
)
from edge.ocpp.config import ChargerConfig, OcppServerConfig

__all__ = [
    "CLOSE_NO_COMMON_VERSION",
    "negotiated_version",
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
    """The TLS context for security profile 2 (TLS 1.2 at least), else None."""
    if config.security_profile != 2:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert config.tls_cert is not None  # checked by OcppServerConfig
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


def process_request(
    config: OcppServerConfig,
    known: Mapping[str, ChargerConfig],
    connection: ServerConnection,
    request: Request,
) -> Response | None:
    """The HTTP refusal (400, 404, 401) for a charger that may not connect, or
    None to go on with the WebSocket handshake."""
    identity = identity_from_path(request.path)
    if identity is None:
        return connection.respond(
            HTTPStatus.BAD_REQUEST, "no charge point identity in the URL path\n"
        )
    charger = known.get(identity)
    if charger is None:
        if config.allow_discovery:
            return None  # let in as pending: Boot and Heartbeat only
        log.warning(
            "ocpp: unknown charger %r refused (404); add it to [[chargers]] "
            "or set allow_discovery",
            identity,
        )
        return connection.respond(HTTPStatus.NOT_FOUND, "unknown charge point\n")
    if config.security_profile == 0:
        return None
    password = charger.password.get_secret_value() if charger.password else None
    if not check_basic_auth(request.headers.get("Authorization"), identity, password):
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
