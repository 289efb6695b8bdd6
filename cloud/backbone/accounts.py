"""Per-gateway and per-service users of the NATS backbone, with hashed passwords.

The backbone's equivalent of the Mosquitto dynamic-security ACL of
``cloud.broker_auth`` (ARCHITECTURE decision 8: each gateway has its own account and
can only use its own topics). nats-server maps the MQTT topic ``a/b/c`` to the NATS
subject ``a.b.c``, so permissions are written on subjects:

==============  ==================================  ==================================
user            may publish                         may subscribe
==============  ==================================  ==================================
``gw-G``        ``fusebox.v1.gw.G.up.>``            ``fusebox.v1.gw.G.down.>``
(MQTT only)                                         and the ingest presence subject
``ingest``      ``fusebox.v1.gw.*.down.>``,         ``fusebox.v1.gw.*.up.>``, the
                presence, JetStream API             JetStream API replies (``_INBOX.>``)
``scheduler``   same as ingest                      same as ingest
``admin``       everything (stream management)      everything
==============  ==================================  ==================================

A gateway user may connect over MQTT only (``allowed_connection_types``); a refused
MQTT publish is dropped (QoS 1 still gets its PUBACK in nats-server 2.9, so a
gateway cannot tell; it never matters for an honest gateway) and a refused
subscription gets SUBACK failure 0x80.

**Client ids are not bound**: unlike the Mosquitto plugin, nats-server 2.9 has no
per-user MQTT client-id restriction, so a gateway with valid credentials could
connect with another gateway's client id ``fusebox-edge-B`` and take over (kick) B's
session; it still cannot publish or read B's subjects. Noted in the backbone report.

**Gateway ids with a dot** (allowed by ``cloud.broker_auth``) cannot be used:
nats-server 2.9 refuses an MQTT topic containing ``.``; :func:`gateway_user` raises
``ValueError``.

Passwords are stored bcrypt-hashed (:func:`hash_password`, ``$2b$``); nats-server
accepts ``$2a$``/``$2b$``/``$2x$``/``$2y$`` hashes and compares the clear password a
client sends against them.
"""

from __future__ import annotations

import re
import secrets
import warnings

from cloud.backbone.config import BackboneUser

__all__ = [
    "ADMIN_USER",
    "GATEWAY_USER_PREFIX",
    "SERVICE_NAMES",
    "admin_user",
    "gateway_subjects",
    "gateway_user",
    "hash_password",
    "new_password",
    "service_user",
]

SUBJECT_ROOT = "fusebox.v1.gw"
INGEST_PRESENCE_SUBJECT = "fusebox.v1.cloud.ingest.*"
DEAD_LETTER_SUBJECTS = "fusebox.dead.>"
# nats-server delivers an MQTT QoS 1 subscription through a JetStream consumer whose
# delivery subject is "$MQTT.sub.<random>", checked against the user's subscribe
# permissions; an MQTT client cannot subscribe to it itself (the server refuses any
# filter under "$MQTT.sub."), so allowing it exposes nothing.
MQTT_QOS1_DELIVERY = "$MQTT.sub.>"
GATEWAY_USER_PREFIX = "gw-"
ADMIN_USER = "fusebox-admin"
SERVICE_NAMES = ("ingest", "scheduler")
BCRYPT_COST = 10
# like cloud.broker_auth's gateway ids, without '.', which MQTT-on-NATS refuses
_GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
# NATS request/reply (JetStream API answers) and the JetStream API itself
_JS_API = ("$JS.API.>", "$JS.ACK.>", "$JS.FC.>")
_INBOX = "_INBOX.>"


def new_password() -> str:
    """32 URL-safe random characters (192 bits)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, cost: int = BCRYPT_COST) -> str:
    """A bcrypt hash of ``password`` that nats-server accepts in its config.

    Uses the ``bcrypt`` package when installed, else the C library's ``crypt``
    (libxcrypt, Debian/Ubuntu); raises ``RuntimeError`` when neither can do bcrypt.
    """
    try:
        import bcrypt

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode())
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:  # Python >= 3.13 has no crypt module
            crypt = None  # type: ignore[assignment]
    if crypt is not None:
        hashed = crypt.crypt(
            password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**cost)
        )
        if hashed and hashed.startswith("$2"):
            return hashed
    raise RuntimeError(
        "no bcrypt available to hash backbone passwords: "
        "run `pip install bcrypt` (or use Python <= 3.12 with libxcrypt)"
    )


def _check_gateway_id(gateway_id: str) -> str:
    if not _GATEWAY_ID.fullmatch(gateway_id):
        raise ValueError(
            f"bad gateway id {gateway_id!r} for the NATS backbone: 1-64 letters, "
            "digits, '_' or '-', starting with a letter or digit (no '.', which "
            "nats-server's MQTT refuses in a topic)"
        )
    return gateway_id


def gateway_subjects(gateway_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) subjects a gateway may use."""
    root = f"{SUBJECT_ROOT}.{_check_gateway_id(gateway_id)}"
    # the MQTT filter ``.../down/#`` also matches ``.../down`` itself: nats-server
    # subscribes to both subjects and checks both
    subscribe = (f"{root}.down", f"{root}.down.>", INGEST_PRESENCE_SUBJECT)
    return (f"{root}.up.>",), (*subscribe, MQTT_QOS1_DELIVERY)


def gateway_user(gateway_id: str, password_hash: str) -> BackboneUser:
    """The MQTT-only user ``gw-<gateway_id>`` confined to its own subjects."""
    publish, subscribe = gateway_subjects(gateway_id)
    return BackboneUser(
        name=GATEWAY_USER_PREFIX + gateway_id,
        password=password_hash,
        publish=publish,
        subscribe=subscribe,
        connection_types=("MQTT",),
    )


def service_user(name: str, password_hash: str) -> BackboneUser:
    """A cloud service (``ingest``, ``scheduler``): reads every gateway's ``up``,
    writes every ``down`` and uses the JetStream API (its durable consumers)."""
    if name not in SERVICE_NAMES:
        raise ValueError(f"unknown cloud service {name!r}: one of {SERVICE_NAMES}")
    return BackboneUser(
        name=name,
        password=password_hash,
        publish=(
            f"{SUBJECT_ROOT}.*.down.>",
            INGEST_PRESENCE_SUBJECT,
            DEAD_LETTER_SUBJECTS,
            *_JS_API,
        ),
        subscribe=(f"{SUBJECT_ROOT}.*.up.>", _INBOX),
        connection_types=("STANDARD",),
    )


def admin_user(password_hash: str) -> BackboneUser:
    """The backbone administrator (creates streams, reads everything)."""
    return BackboneUser(
        name=ADMIN_USER, password=password_hash, publish=(">",), subscribe=(">",)
    )
