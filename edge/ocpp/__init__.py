"""The edge as local OCPP-J server (CSMS role) for the site's chargers, 1.6J and 2.0.1.

Modules:

* ``edge.ocpp.config``: ``OcppServerConfig`` (the ``[ocpp]`` table) and
  ``ChargerConfig`` (one ``[[chargers]]`` entry);
* ``edge.ocpp.auth``: charge point identity from the URL path, HTTP Basic check
  (raw password or the hex AuthorizationKey), subprotocol choice;
* ``edge.ocpp.lib``: the only module that imports the ``ocpp`` package;
* ``edge.ocpp.server``: ``OcppServer`` (websockets listener, registry of connected
  chargers, commands to chargers: set/clear charging profiles, composite
  schedule, ...);
* ``edge.ocpp.handshake``: the websockets hooks of the opening handshake (HTTP
  refusals, subprotocol, TLS context, websockets' own log lines);
* ``edge.ocpp.pending``: discovery's pending chargers, pure: each id bound to
  the device of its first connection (TLS client certificate, else address),
  conflicts, bounds per address and per gateway, expiry, quiet refusals;
* ``edge.ocpp.discovery``: ``Discovery``, what the installer's approve and
  forget do to the connections (the new password to the bound device only);
* ``edge.ocpp.routes``: one ``ChargePoint`` subclass per OCPP version, routing
  each action to the charger's session;
* ``edge.ocpp.session``: ``ChargerSession``, what each message means for one
  charger (events, readings, transactions, answers);
* ``edge.ocpp.state``: the registry's records (``ChargerState``,
  ``PendingCharger``, ...);
* ``edge.ocpp.commands``: version-specific command payloads and answers (no I/O);
* ``protocols.ocpp.frames``: raw-frame screening and the CALLERROR tables (pure).

Exception tree::

    EdgeError                      (edge)
    └── OcppServerError            the OCPP server cannot do what was asked
        ├── OcppNotStarted         ``.port`` read before ``start()``
        ├── FrameError             a charger's frame cannot be routed; carries the
        │                          wire ``code`` and the ``message_id`` ("-1" when
        │                          unreadable) of the CALLERROR it is answered with
        ├── ChargerNotConnected    a command for a charger that is not connected
        │                          (``edge.ocpp.commands``)
        └── CommandFailed          the charger answered a command with a CALLERROR;
                                   carries its ``code`` and ``description``

Errors *inside* a charger's conversation never escape the server: they become a
CALLERROR to that charger, and its connection and every other charger carry on.
"""

from __future__ import annotations

from edge import EdgeError

__all__ = ["FrameError", "OcppNotStarted", "OcppServerError"]


class OcppServerError(EdgeError):
    """Base of every error the OCPP server raises on purpose."""


class OcppNotStarted(OcppServerError):
    """The server has no listening socket yet: ``await server.start()`` first."""


class FrameError(OcppServerError):
    """A frame from a charger that the OCPP library must not see.

    ``code`` is the OCPP-J error code for the charger's version, ``message_id`` the
    id to answer with ("-1" when it cannot be read, OCPP-J 2.0.1 §4.2.3)."""

    def __init__(self, code: str, message_id: str, description: str) -> None:
        super().__init__(f"{code}: {description} (message id {message_id!r})")
        self.code = code
        self.message_id = message_id
        self.description = description
