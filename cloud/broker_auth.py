"""Per-gateway broker credentials and access rules, applied to a real Mosquitto.

ARCHITECTURE decision 8: each gateway has its own broker account and may only use
``fusebox/v1/gw/{its id}/...``. This module drives Mosquitto's **dynamic security
plugin** (Mosquitto >= 2.0) over MQTT: an admin client publishes JSON commands on
``$CONTROL/dynamic-security/v1`` and reads the answers on
``$CONTROL/dynamic-security/v1/response``. Changes apply at once, with no broker
restart or reload, and the plugin saves them in its JSON file.

What to call (all async; each call opens its own short admin connection):

* ``await issue_gateway_credentials(gateway_id)`` -> ``(username, password)``: creates
  the account ``gw-<gateway_id>`` with a fresh random password (32 characters) and
  the role ``fusebox-gw-<gateway_id>``, **bound to the client id**
  ``fusebox-edge-<gateway_id>`` (the edge's default; see "Client ids" below). Calling
  it again for the same gateway **rotates** the password (the old one stops working
  and a connected gateway using it is disconnected); the password is only ever
  returned, never stored in clear or logged, so the caller must hand it to the
  gateway (its config bundle).
* ``await revoke_gateway_credentials(gateway_id)`` -> ``bool`` (``False`` if it had
  none): deletes the account and its role; a connected gateway is disconnected.
* ``await list_gateway_credentials()`` -> sorted gateway ids that have an account.
* ``await issue_cloud_credentials()`` -> ``(username, password)`` for the cloud
  services (ingest, scheduler): account ``fusebox-cloud``
  (``FUSEBOX_BROKER_CLOUD_USERNAME``), also rotating on each call.
* ``await check_broker_auth()``: verifies that the broker answers, that the
  default ACL denies publishing and subscribing (else gateways would not be
  confined) and that it refuses anonymous clients (else anyone could take over a
  cloud service's client id); raises :class:`BrokerAuthError` with what to do.
  It also **migrates** gateway accounts issued before client ids were bound
  (:meth:`DynsecBrokerAuth.bind_gateway_client_ids`; each such gateway is
  disconnected once and reconnects under its bound id). Run it at every
  deployment; it is idempotent.
* ``await bind_gateway_client_ids()`` -> the gateway ids whose account it (re)bound:
  the migration alone.

The functions read :class:`BrokerAuthSettings` from the environment; for several calls
or explicit settings, use :class:`DynsecBrokerAuth` (same methods). Settings:

``FUSEBOX_BROKER_ADMIN_URL``      ``mqtt(s)://ADMIN:PASSWORD@host:port``, required
``FUSEBOX_BROKER_CA_FILE``        CA (PEM) for ``mqtts://`` with a private CA
``FUSEBOX_BROKER_TIMEOUT_S``      connect and answer timeout, default 10
``FUSEBOX_BROKER_CLOUD_USERNAME`` the cloud services' account, default ``fusebox-cloud``

Access rules (topics under ``fusebox/v1/gw/``):

==============  ===========================================  ======================
account         may publish                                  may subscribe/receive
==============  ===========================================  ======================
gateway ``G``   ``G/up/#``                                   ``G/down/#``, and
                                                             ``fusebox/v1/cloud/
                                                             ingest/+``
cloud           ``+/down/#``, ``fusebox/v1/cloud/ingest/+``  ``+/up/#``, also as
                                                             ``$share/<group>/...``
==============  ===========================================  ======================

Anything else is refused: a refused QoS 1 publish gets PUBACK 0x87 "not authorized"
with MQTT v5 (dropped silently with v3.1.1); a refused subscription gets SUBACK
0x80/0x87 and no messages.

Client ids. MQTT lets a new connection with a client id already in use take that
session over: the broker disconnects the older one. Without a rule, gateway A's
account could connect as ``fusebox-edge-B`` (or as an ingest worker) and kick B off,
and with both reconnecting automatically they would fight forever. So:

* every gateway account is bound (the plugin's ``clientid`` property) to its own
  id, :func:`gateway_client_id` = ``fusebox-edge-<gateway_id>``: the broker refuses
  any other id with that account at CONNECT (CONNACK 5 "not authorised" with
  MQTT 3.1.1, 0x87 with v5) *before* touching the session that id belongs to, so
  the gateway already connected under it stays connected;
* the cloud services (``fusebox-ingest-<random>``, ``fusebox-scheduler-<random>``,
  ``fusebox-broker-admin-<random>``: :data:`CLOUD_CLIENT_PREFIXES`) share the one
  cloud account and pick random ids, so that account cannot be bound to one id.
  Their ids are reserved instead: no gateway account can use them (each is bound to
  a ``fusebox-edge-`` id), anonymous clients are refused (``allow_anonymous
  false``, verified by ``check_broker_auth``) and the cloud services refuse to use
  a ``fusebox-edge-`` id themselves (``cloud.mqtt.cloud_client``). Only holders of
  the cloud or admin password can use a cloud id.

An edge whose config sets ``cloud.client_id`` to anything but its bound id is
refused at CONNECT; ``edge.config`` rejects such a config before it starts, and the
edge's log says what to do when the broker refuses it anyway.

Setting up the broker (once):

1. Create the plugin's file with an admin account (the JSON the plugin expects; same
   as ``mosquitto_ctrl dynsec init FILE admin``)::

       python -c 'from cloud.broker_auth import write_dynsec_config as w; \\
           w("/var/lib/mosquitto/dynamic-security.json", "admin", "LONG-RANDOM")'

2. Load the plugin in ``mosquitto.conf`` (``deploy/mosquitto/mosquitto-dynsec.conf``
   is a full sample)::

       plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
       plugin_opt_config_file /var/lib/mosquitto/dynamic-security.json
       allow_anonymous false

   (Debian's ``mosquitto`` package ships the plugin there; the ``eclipse-mosquitto``
   image at ``/usr/lib/mosquitto_dynamic_security.so``.)
3. Give the cloud the admin account:
   ``FUSEBOX_BROKER_ADMIN_URL=mqtts://admin:LONG-RANDOM@broker.example:8883``. Use TLS
   on any link that leaves the host: the commands carry new passwords in clear.
4. ``await issue_cloud_credentials()`` and give the ingest workers and the scheduler
   that account in ``FUSEBOX_CLOUD_MQTT_URL``.
5. At every deployment (and once after upgrading to client-id binding):
   ``await check_broker_auth()``. It refuses a broker that is open to anonymous
   clients or whose default ACL lets accounts publish or subscribe, and binds
   gateway accounts issued before client ids were bound (each such gateway is
   disconnected once and reconnects under ``fusebox-edge-<id>``)::

       python -c 'import asyncio, cloud.broker_auth as b; \\
           print(asyncio.run(b.check_broker_auth()))'

Exceptions::

    BrokerAuthError (RuntimeError)
    ├── BrokerUnreachableError    no TCP/MQTT connection to the admin URL
    ├── BrokerAdminAuthError      the broker refused the admin account or its rights
    └── BrokerCommandError        the plugin answered a command with an error
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from glob import glob
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud.mqtt import (
    Client,
    MqttConnectError,
    MqttError,
    ProtocolVersion,
    TLSParameters,
)
from protocols.contract import INGEST_PRESENCE_FILTER, TOPIC_ROOT
from protocols.urls import BadURL, MqttTarget, parse_mqtt_url

__all__ = [
    "CLOUD_CLIENT_PREFIXES",
    "CLOUD_ROLE",
    "EDGE_CLIENT_PREFIX",
    "BrokerAdminAuthError",
    "BrokerAuthError",
    "BrokerAuthSettings",
    "BrokerCommandError",
    "BrokerUnreachableError",
    "DynsecBrokerAuth",
    "bind_gateway_client_ids",
    "check_broker_auth",
    "cloud_acls",
    "find_dynsec_plugin",
    "gateway_acls",
    "gateway_client_id",
    "gateway_role",
    "gateway_username",
    "issue_cloud_credentials",
    "issue_gateway_credentials",
    "list_gateway_credentials",
    "new_password",
    "revoke_gateway_credentials",
    "write_dynsec_config",
]

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
GATEWAY_USER_PREFIX = "gw-"
GATEWAY_ROLE_PREFIX = "fusebox-gw-"
CLOUD_ROLE = "fusebox-cloud"
# The one client id a gateway account may connect with is this + its gateway id
# (edge.agent's default); the cloud services' random ids start with one of the
# others, which no gateway account can therefore use.
EDGE_CLIENT_PREFIX = "fusebox-edge-"
ADMIN_CLIENT_PREFIX = "fusebox-broker-admin-"
CLOUD_CLIENT_PREFIXES = ("fusebox-ingest-", "fusebox-scheduler-", ADMIN_CLIENT_PREFIX)
# modifyClient commands per admin message when migrating (each is ~150 bytes, far
# under the broker's max_packet_size)
_BIND_CHUNK = 500

# Same rule as protocols.contract.GatewayId: no MQTT wildcards or separators.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # use fullmatch
_PLUGIN_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)
# CONNACK codes for a refused login: v3.1.1 (4, 5) and v5 (0x86, 0x87).
_AUTH_REFUSED = {4, 5, 0x86, 0x87}


class BrokerAuthError(RuntimeError):
    """Broker credentials could not be managed; the message says what to do."""


class BrokerUnreachableError(BrokerAuthError):
    """No connection to the broker at the admin URL."""


class BrokerAdminAuthError(BrokerAuthError):
    """The broker refused the admin account, or the account lacks the admin role."""


class BrokerCommandError(BrokerAuthError):
    """The dynamic security plugin answered a command with an error."""


class BrokerAuthSettings(BaseSettings):
    """``FUSEBOX_BROKER_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="FUSEBOX_BROKER_", extra="ignore")

    admin_url: str | None = Field(
        default=None,
        description="mqtt(s)://ADMIN:PASSWORD@host:port of an account with the "
        "dynamic security admin role",
    )
    ca_file: Path | None = Field(
        default=None,
        description="CA certificate (PEM) for an mqtts:// admin URL whose broker "
        "certificate is not signed by a system-trusted CA",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    cloud_username: str = Field(default="fusebox-cloud", min_length=1)


# --------------------------------------------------------------------------- rules


def _check_gateway_id(gateway_id: str) -> str:
    if not isinstance(gateway_id, str) or not _GATEWAY_ID.fullmatch(gateway_id):
        raise ValueError(
            f"bad gateway id {gateway_id!r}: 1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return gateway_id


def gateway_username(gateway_id: str) -> str:
    """The broker account of a gateway: ``gw-<gateway_id>``."""
    return GATEWAY_USER_PREFIX + _check_gateway_id(gateway_id)


def gateway_client_id(gateway_id: str) -> str:
    """The only MQTT client id the account of ``gateway_id`` may connect with:
    ``fusebox-edge-<gateway_id>``, what the edge uses unless ``cloud.client_id`` is
    set."""
    return EDGE_CLIENT_PREFIX + _check_gateway_id(gateway_id)


def gateway_role(gateway_id: str) -> str:
    """The dynamic security role holding a gateway's ACLs."""
    return GATEWAY_ROLE_PREFIX + _check_gateway_id(gateway_id)


def _acl(
    acltype: str, topic: str, allow: bool = True, priority: int = 10
) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": allow, "priority": priority}


def gateway_acls(gateway_id: str) -> list[dict[str, Any]]:
    """Publish on its own ``up/#``; subscribe to and receive only its own ``down/#``
    and the ingest workers' presence (read-only, names no gateway)."""
    root = f"{TOPIC_ROOT}/{_check_gateway_id(gateway_id)}"
    return [
        _acl("publishClientSend", f"{root}/up/#"),
        _acl("subscribePattern", f"{root}/down/#"),
        _acl("publishClientReceive", f"{root}/down/#"),
        _acl("subscribePattern", INGEST_PRESENCE_FILTER),
        _acl("publishClientReceive", INGEST_PRESENCE_FILTER),
        # Whatever a broader subscription might match, deliver nothing else.
        _acl("publishClientReceive", "#", allow=False, priority=0),
    ]


def cloud_acls() -> list[dict[str, Any]]:
    """Read every gateway's ``up/#`` (plain or ``$share``), write every ``down/#``
    and the ingest workers' presence."""
    up = f"{TOPIC_ROOT}/+/up/#"
    return [
        _acl("publishClientSend", f"{TOPIC_ROOT}/+/down/#"),
        _acl("publishClientSend", INGEST_PRESENCE_FILTER),
        _acl("subscribePattern", up),
        _acl("subscribePattern", f"$share/+/{up}"),
        _acl("publishClientReceive", up),
        _acl("publishClientReceive", "#", allow=False, priority=0),
    ]


def new_password() -> str:
    """32 URL-safe random characters (192 bits): safe inside ``mqtt://user:pw@``."""
    return secrets.token_urlsafe(24)


# --------------------------------------------------------------------------- setup


def find_dynsec_plugin() -> str | None:
    """Path of ``mosquitto_dynamic_security.so`` if installed here, else ``None``."""
    for candidate in (
        *_PLUGIN_CANDIDATES,
        *sorted(glob("/usr/lib/*/mosquitto_dynamic_security.so")),
    ):
        if Path(candidate).is_file():
            return candidate
    return None


def write_dynsec_config(
    path: str | Path,
    admin_username: str,
    admin_password: str,
    *,
    iterations: int = 10_000,
) -> Path:
    """Create the plugin's JSON file with one admin account (the ``admin`` role).

    Equivalent to ``mosquitto_ctrl dynsec init PATH ADMIN PASSWORD`` without needing
    ``mosquitto-clients``. The default ACL denies publishing and subscribing; the
    admin may only manage the plugin (and read ``$SYS``). Refuses to overwrite an
    existing file (``FileExistsError``): it holds every account.
    """
    path = Path(path)
    if len(admin_password) < 16:
        raise ValueError("use an admin password of at least 16 characters")
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac(
        "sha512", admin_password.encode(), salt, iterations, 64
    )
    admin_acls = [
        {"acltype": t, "topic": topic, "allow": True}
        for t, topic in (
            ("publishClientSend", "$CONTROL/dynamic-security/#"),
            ("publishClientReceive", "$CONTROL/dynamic-security/#"),
            ("subscribePattern", "$CONTROL/dynamic-security/#"),
            ("publishClientReceive", "$SYS/#"),
            ("subscribePattern", "$SYS/#"),
            ("unsubscribePattern", "#"),
        )
    ]
    config = {
        "clients": [
            {
                "username": admin_username,
                "textName": "Fusebox broker admin",
                "password": base64.b64encode(digest).decode(),
                "salt": base64.b64encode(salt).decode(),
                "iterations": iterations,
                "roles": [{"rolename": "admin"}],
            }
        ],
        "roles": [{"rolename": "admin", "acls": admin_acls}],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    return path


# --------------------------------------------------------------------------- client


def _ignorable(error: str | None, *allowed: str) -> bool:
    return error is None or any(a in error for a in allowed)


class DynsecBrokerAuth:
    """Manage broker accounts through the dynamic security plugin.

    ``DynsecBrokerAuth(admin_url)`` or ``DynsecBrokerAuth.from_settings()``; every
    method opens one admin connection, sends its commands as one message (applied by
    the broker in order, atomically with respect to other clients) and closes it.
    """

    def __init__(
        self,
        admin: str | MqttTarget,
        *,
        timeout_s: float = 10.0,
        cloud_username: str = "fusebox-cloud",
        ca_file: str | Path | None = None,
    ) -> None:
        if isinstance(admin, str):
            try:
                admin = parse_mqtt_url(admin)
            except BadURL as exc:
                raise BrokerAuthError(f"FUSEBOX_BROKER_ADMIN_URL: {exc}") from None
        if not admin.username or not admin.password:
            raise BrokerAuthError(
                f"the broker admin URL {admin.url()} has no user and password: set "
                "FUSEBOX_BROKER_ADMIN_URL=mqtt://ADMIN:PASSWORD@host:port (an account "
                "with the dynamic security admin role; see cloud/broker_auth.py)"
            )
        self.admin = admin
        self.ca_file = Path(ca_file) if ca_file else None
        self.timeout_s = timeout_s
        self.cloud_username = cloud_username

    @classmethod
    def from_settings(
        cls, settings: BrokerAuthSettings | None = None
    ) -> DynsecBrokerAuth:
        """An instance from ``FUSEBOX_BROKER_*`` settings; raises ``BrokerAuthError`` if
        the admin URL is unset."""
        s = settings or BrokerAuthSettings()
        if not s.admin_url:
            raise BrokerAuthError(
                "FUSEBOX_BROKER_ADMIN_URL is not set: give the URL of the broker's "
                "dynamic security admin, e.g. mqtts://admin:PASSWORD@broker:8883 "
                "(set-up steps in cloud/broker_auth.py)"
            )
        return cls(
            s.admin_url,
            timeout_s=s.timeout_s,
            cloud_username=s.cloud_username,
            ca_file=s.ca_file,
        )

    # ----------------------------------------------------------------- operations

    async def issue_gateway_credentials(self, gateway_id: str) -> tuple[str, str]:
        """Create (or rotate) the gateway's account: ``(username, password)``. It
        may connect only with the client id :func:`gateway_client_id`."""
        username = gateway_username(gateway_id)
        password = new_password()
        await self._replace_account(
            username,
            password,
            gateway_role(gateway_id),
            gateway_acls(gateway_id),
            f"Fusebox gateway {gateway_id}",
            clientid=gateway_client_id(gateway_id),
        )
        log.info(
            "broker account %s issued for gateway %s (client id %s)",
            username,
            gateway_id,
            gateway_client_id(gateway_id),
        )
        return username, password

    async def revoke_gateway_credentials(self, gateway_id: str) -> bool:
        """Delete the gateway's account and role; ``False`` if it had none."""
        username = gateway_username(gateway_id)
        replies = await self._run(
            [
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": gateway_role(gateway_id)},
            ]
        )
        client_error, role_error = replies[0].get("error"), replies[1].get("error")
        for what, error in (("deleteClient", client_error), ("deleteRole", role_error)):
            if not _ignorable(error, "not found"):
                raise BrokerCommandError(f"{what} {username}: {error}")
        existed = client_error is None
        if existed:
            log.info("broker account %s revoked for gateway %s", username, gateway_id)
        return existed

    async def list_gateway_credentials(self) -> list[str]:
        """Gateway ids that have a broker account, sorted."""
        return sorted(await self._gateway_accounts())

    async def _gateway_accounts(self) -> dict[str, str | None]:
        """``gateway id -> the client id its account is bound to (None: unbound)``."""
        reply = (
            await self._run(
                [{"command": "listClients", "verbose": True, "count": -1, "offset": 0}]
            )
        )[0]
        if reply.get("error"):
            raise BrokerCommandError(f"listClients: {reply['error']}")
        clients = (reply.get("data") or {}).get("clients") or []
        accounts: dict[str, str | None] = {}
        for c in clients:
            entry = {"username": c} if isinstance(c, str) else c
            name = str(entry.get("username", ""))
            gw = name[len(GATEWAY_USER_PREFIX) :]
            if name.startswith(GATEWAY_USER_PREFIX) and _GATEWAY_ID.fullmatch(gw):
                bound = entry.get("clientid")
                accounts[gw] = bound if isinstance(bound, str) and bound else None
        return accounts

    async def bind_gateway_client_ids(self) -> list[str]:
        """Bind every gateway account to :func:`gateway_client_id` where it is not
        (accounts issued before the binding existed, or changed by hand); returns
        those gateway ids, sorted. Idempotent. The broker disconnects a gateway
        whose account changes; it reconnects at once under its bound id (an edge
        whose ``cloud.client_id`` is something else is then refused, and says so).
        """
        wrong = sorted(
            gw
            for gw, bound in (await self._gateway_accounts()).items()
            if bound != gateway_client_id(gw)
        )
        for start in range(0, len(wrong), _BIND_CHUNK):
            chunk = wrong[start : start + _BIND_CHUNK]
            replies = await self._run(
                [
                    {
                        "command": "modifyClient",
                        "username": gateway_username(gw),
                        "clientid": gateway_client_id(gw),
                    }
                    for gw in chunk
                ]
            )
            for gw, reply in zip(chunk, replies, strict=True):
                if reply.get("error"):
                    raise BrokerCommandError(
                        f"modifyClient {gateway_username(gw)}: {reply['error']}"
                    )
        if wrong:
            log.warning(
                "broker: bound %d gateway account(s) to their client id "
                "fusebox-edge-<gateway id> (issued before ids were bound): %s",
                len(wrong),
                ", ".join(wrong[:20]) + (" ..." if len(wrong) > 20 else ""),
            )
        return wrong

    async def issue_cloud_credentials(self) -> tuple[str, str]:
        """Create (or rotate) the cloud services' account; ``(username, password)``."""
        password = new_password()
        await self._replace_account(
            self.cloud_username,
            password,
            CLOUD_ROLE,
            cloud_acls(),
            "Fusebox cloud services (ingest, scheduler)",
        )
        log.info("broker account %s issued for the cloud services", self.cloud_username)
        return self.cloud_username, password

    async def check(self) -> list[str]:
        """Raise :class:`BrokerAuthError` unless the broker confines accounts and
        refuses anonymous clients; then bind gateway accounts issued before client
        ids were (:meth:`bind_gateway_client_ids`) and return their ids."""
        reply = (await self._run([{"command": "getDefaultACLAccess"}]))[0]
        if reply.get("error"):
            raise BrokerCommandError(f"getDefaultACLAccess: {reply['error']}")
        acls = {a.get("acltype"): a.get("allow") for a in reply["data"]["acls"]}
        loose = [
            t for t in ("publishClientSend", "subscribe") if acls.get(t) is not False
        ]
        if loose:
            raise BrokerAuthError(
                f"the broker's default ACL allows {', '.join(loose)}: any account "
                "could use any gateway's topics. Fix with `mosquitto_ctrl ... dynsec "
                "setDefaultACLAccess publishClientSend deny` (and `subscribe deny`)"
            )
        await self._refuses_anonymous()
        return await self.bind_gateway_client_ids()

    async def _refuses_anonymous(self) -> None:
        """An anonymous client could connect under a cloud service's client id and
        take its session over: the broker must refuse it."""
        a = self.admin
        probe = Client(
            a.host,
            a.port,
            identifier=f"{ADMIN_CLIENT_PREFIX}anonymous-probe-{uuid.uuid4().hex[:8]}",
            tls_params=self._tls() if a.tls else None,
            timeout=self.timeout_s,
        )
        try:
            await probe.__aenter__()
        except MqttConnectError as exc:
            if _code(exc.rc) in _AUTH_REFUSED:
                return
            raise BrokerUnreachableError(self._lost(exc)) from None
        except (MqttError, OSError) as exc:
            raise BrokerUnreachableError(self._lost(exc)) from None
        with contextlib.suppress(MqttError, OSError):
            await probe.__aexit__(None, None, None)
        raise BrokerAuthError(
            f"the broker at {a.url()} accepts anonymous clients: anyone reaching it "
            "could connect under a cloud service's client id (fusebox-ingest-..., "
            "fusebox-scheduler-...) and take its session over. Set "
            "`allow_anonymous false` in mosquitto.conf (with "
            "`per_listener_settings false`, for every listener) and restart it"
        )

    async def _replace_account(
        self,
        username: str,
        password: str,
        role: str,
        acls: Sequence[dict[str, Any]],
        text: str,
        *,
        clientid: str | None = None,
    ) -> None:
        # One message: the broker applies it in order before serving anyone else, so
        # no client ever sees a half-made account. Deleting first makes this
        # idempotent (ACLs converge) and disconnects a client with the old password.
        replies = await self._run(
            [
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": role},
                {"command": "createRole", "rolename": role, "acls": list(acls)},
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "textname": text,
                    "roles": [{"rolename": role, "priority": 0}],
                    # only this client id may connect as ``username`` (dynsec)
                    **({"clientid": clientid} if clientid else {}),
                },
            ]
        )
        for reply in replies[:2]:
            if not _ignorable(reply.get("error"), "not found"):
                raise BrokerCommandError(
                    f"{reply.get('command')} for {username}: {reply['error']}"
                )
        for reply in replies[2:]:
            if reply.get("error"):
                raise BrokerCommandError(
                    f"{reply.get('command')} for {username}: {reply['error']}"
                )

    # ----------------------------------------------------------------- transport

    async def _run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` in one message; the replies in the same order."""
        tag = uuid.uuid4().hex
        tagged = [dict(c, correlationData=f"{tag}-{i}") for i, c in enumerate(commands)]
        async with self._connect() as client:
            try:
                granted = await client.subscribe(RESPONSE_TOPIC, qos=1)
            except MqttError as exc:
                raise BrokerUnreachableError(self._lost(exc)) from None
            codes = granted if isinstance(granted, list | tuple) else [granted]
            if any(_code(c) >= 0x80 for c in codes):
                raise BrokerAdminAuthError(self._not_admin())
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await self._exchange(client, tag, tagged)
            except TimeoutError:
                raise BrokerAdminAuthError(
                    f"no answer on {RESPONSE_TOPIC} within {self.timeout_s} s from the "
                    f"broker at {self.admin.url()}: is the dynamic security plugin "
                    "loaded (`plugin .../mosquitto_dynamic_security.so` in "
                    f"mosquitto.conf)? {self._not_admin()}"
                ) from None
            except MqttError as exc:
                raise BrokerUnreachableError(self._lost(exc)) from None

    async def _exchange(
        self, client: Client, tag: str, tagged: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        await client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        wanted = {c["correlationData"]: i for i, c in enumerate(tagged)}
        replies: list[dict[str, Any] | None] = [None] * len(tagged)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray | str):
                continue
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(body, dict):
                continue
            for reply in body.get("responses") or []:
                index = wanted.get(str(reply.get("correlationData")))
                if index is not None:
                    replies[index] = reply
            if all(r is not None for r in replies):
                return [r for r in replies if r is not None]
        raise BrokerUnreachableError(
            f"the broker at {self.admin.url()} closed the link"
        )

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Client]:
        a = self.admin
        client = Client(
            a.host,
            a.port,
            username=a.username,
            password=a.password,
            identifier=f"{ADMIN_CLIENT_PREFIX}{uuid.uuid4().hex[:12]}",
            protocol=ProtocolVersion.V5,
            tls_params=self._tls() if a.tls else None,
            timeout=self.timeout_s,
            keepalive=30,
        )
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            if _code(exc.rc) in _AUTH_REFUSED:
                raise BrokerAdminAuthError(
                    f"the broker at {a.url()} refused the admin login ({exc}): check "
                    "the user and password in FUSEBOX_BROKER_ADMIN_URL; the account "
                    "comes from write_dynsec_config() or `mosquitto_ctrl dynsec init`"
                ) from None
            raise BrokerUnreachableError(self._lost(exc)) from None
        except (MqttError, OSError) as exc:
            raise BrokerUnreachableError(self._lost(exc)) from None
        try:
            yield client
        finally:
            try:
                await client.__aexit__(None, None, None)
            except (MqttError, OSError) as exc:
                log.debug("broker admin: disconnect failed: %s", exc)

    def _tls(self) -> TLSParameters:
        if self.ca_file is None:
            return TLSParameters()
        if not self.ca_file.is_file():
            raise BrokerAuthError(
                f"FUSEBOX_BROKER_CA_FILE {self.ca_file} does not exist: give the PEM "
                "file of the CA that signed the broker's certificate"
            )
        return TLSParameters(ca_certs=str(self.ca_file))

    def _lost(self, exc: BaseException) -> str:
        return (
            f"cannot reach the MQTT broker at {self.admin.url()} ({exc}): check that "
            "Mosquitto runs and listens there and FUSEBOX_BROKER_ADMIN_URL points at "
            "it (mqtts:// needs a TLS listener whose certificate is trusted, see "
            "FUSEBOX_BROKER_CA_FILE); then retry"
        )

    def _not_admin(self) -> str:
        return (
            f"The account {self.admin.username!r} may not use {CONTROL_TOPIC}: give it "
            "the dynamic security `admin` role (write_dynsec_config() or "
            "`mosquitto_ctrl dynsec init` creates such an account)."
        )


def _code(rc: object) -> int:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else -1


# --------------------------------------------------------------------------- shortcuts


async def issue_gateway_credentials(
    gateway_id: str, *, settings: BrokerAuthSettings | None = None
) -> tuple[str, str]:
    """Create or rotate a gateway's broker account: ``(username, password)``."""
    return await DynsecBrokerAuth.from_settings(settings).issue_gateway_credentials(
        gateway_id
    )


async def revoke_gateway_credentials(
    gateway_id: str, *, settings: BrokerAuthSettings | None = None
) -> bool:
    """Delete a gateway's broker account; ``False`` if it had none."""
    return await DynsecBrokerAuth.from_settings(settings).revoke_gateway_credentials(
        gateway_id
    )


async def list_gateway_credentials(
    *, settings: BrokerAuthSettings | None = None
) -> list[str]:
    """Gateway ids that have a broker account."""
    return await DynsecBrokerAuth.from_settings(settings).list_gateway_credentials()


async def issue_cloud_credentials(
    *, settings: BrokerAuthSettings | None = None
) -> tuple[str, str]:
    """Create or rotate the cloud services' broker account."""
    return await DynsecBrokerAuth.from_settings(settings).issue_cloud_credentials()


async def check_broker_auth(*, settings: BrokerAuthSettings | None = None) -> list[str]:
    """Raise :class:`BrokerAuthError` unless the broker is reachable, confining and
    closed to anonymous clients; binds old gateway accounts to their client id and
    returns those gateway ids."""
    return await DynsecBrokerAuth.from_settings(settings).check()


async def bind_gateway_client_ids(
    *, settings: BrokerAuthSettings | None = None
) -> list[str]:
    """Bind every gateway account to ``fusebox-edge-<gateway id>``; the ids bound."""
    return await DynsecBrokerAuth.from_settings(settings).bind_gateway_client_ids()
