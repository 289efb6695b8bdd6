"""The handshake decisions, as pure functions: who is connecting, may they, and in
which OCPP version do we talk.

* Identity: the last segment of the URL path, percent-decoded; a trailing slash and
  a query string are tolerated (real chargers send both). It must then fit the
  charger-id pattern the cloud uses too (``CHARGE_POINT_ID_PATTERN``: 1-48 of
  ``A-Z a-z 0-9 * - _ = : + | @ .``, the OCPP 2.0.1 identifierString) and not be a
  dot segment (``.``, ``..``); ``charger_id_problem`` says what is wrong.
* Basic auth (security profiles 1 and 2): ``Authorization: Basic
  base64(<identity>:<password>)``. OCPP 1.6's AuthorizationKey is configured as a hex
  string, and chargers send either that hex *string* or the raw *bytes* it encodes
  (OCPP-J 1.6 §6.1 example), so both are accepted; 2.0.1's BasicAuthPassword is a
  plain UTF-8 string, which the first form covers. Comparisons are constant-time.
* Subprotocol: the charger lists its versions in order of preference and we take
  its first one we support (websockets' default would take ours). See
  ``choose_subprotocol``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from edge.ocpp.config import (
    CHARGE_POINT_ID_CHARACTERS,
    CHARGE_POINT_ID_PATTERN,
    MAX_CHARGE_POINT_ID,
)

__all__ = [
    "SUBPROTOCOLS",
    "charger_id_problem",
    "check_basic_auth",
    "choose_subprotocol",
    "identity_from_path",
    "password_forms",
    "redact_secrets",
]

SUBPROTOCOLS: dict[str, str] = {"ocpp2.0.1": "2.0.1", "ocpp1.6": "1.6"}
"""Subprotocol name -> OCPP version, for every version this server speaks."""


def identity_from_path(path: str) -> str | None:
    """The charge point identity in a request path, or None when there is none."""
    segments = urlsplit(path).path.rstrip("/").split("/")
    identity = unquote(segments[-1]) if segments else ""
    return identity or None


_ID_CHARACTERS = re.compile(CHARGE_POINT_ID_CHARACTERS + "+")


def charger_id_problem(identity: str) -> str | None:
    """What is wrong with ``identity`` as a charger id (for the HTTP 400 and the
    log), or None when it fits ``CHARGE_POINT_ID_PATTERN`` and is no dot
    segment. Every id the edge lets in, stores or forwards to the cloud passed
    this (configured ones passed the same pattern in ``ChargerConfig``)."""
    if not identity:
        return "empty"
    if len(identity) > MAX_CHARGE_POINT_ID:
        return f"longer than {MAX_CHARGE_POINT_ID} characters ({len(identity)})"
    if not identity.isascii():
        return "not ASCII"
    if identity in (".", ".."):
        return "a dot segment ('.' or '..')"
    if re.fullmatch(CHARGE_POINT_ID_PATTERN, identity) is None:
        rest = _ID_CHARACTERS.sub("", identity)
        return f"character {rest[:1]!r} not allowed (only A-Z a-z 0-9 *-_=:+|@.)"
    return None


_SECRET_KEYS = ("AuthorizationKey", "BasicAuthPassword")
_FRAME_VALUES = re.compile(r'("(?:value|attributeValue)"\s*:\s*)"(?:[^"\\]|\\.)*"')


def redact_secrets(text: str) -> str:
    """``text`` (a frame, as the ``ocpp`` library logs every one it sends or
    receives) with its values replaced by ``"<redacted>"`` when it sets or
    reads a charger's password (1.6 ``AuthorizationKey``, 2.0.1
    ``BasicAuthPassword``); any other text unchanged."""
    if not any(key in text for key in _SECRET_KEYS):
        return text
    return _FRAME_VALUES.sub(r'\1"<redacted>"', text)


def password_forms(password: str) -> list[bytes]:
    """The byte strings a charger may send for ``password``: the UTF-8 text; if it
    is an even-length hex string, also the bytes it encodes; else also the hex of
    its text, which is the 1.6 AuthorizationKey the edge sets on a charger
    (``commands.authorization_key_16``) and which many chargers send as is."""
    forms = [password.encode("utf-8")]
    if len(password) % 2 == 0:
        with contextlib.suppress(ValueError):
            forms.append(bytes.fromhex(password))
            return forms
    forms.append(password.encode("utf-8").hex().encode("ascii"))
    return forms


def check_basic_auth(header: str | None, identity: str, password: str | None) -> bool:
    """True when ``header`` (the Authorization value) carries ``identity`` as user
    and ``password`` in one of its ``password_forms``."""
    if header is None or password is None:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        credentials = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    # split after the known identity, not at the first ':': raw key bytes and 2.0.1
    # identities may both contain ':'
    user = identity.encode("utf-8") + b":"
    user_ok = hmac.compare_digest(credentials[: len(user)], user)
    sent = credentials[len(user) :]
    password_ok = False
    for form in password_forms(password):
        # no short-circuit: every form is compared, whichever matches
        password_ok |= hmac.compare_digest(sent, form)
    return user_ok and password_ok


def choose_subprotocol(offered: Sequence[str], pinned: str | None) -> str | None:
    """The first subprotocol in the charger's ``offered`` list that we support and
    that matches the ``pinned`` version (if any); None when there is none.

    None means "no Sec-WebSocket-Protocol in the response": with nothing offered the
    server then talks 1.6 (chargers that send no header are 1.6 chargers); with
    something offered but nothing in common, OCPP-J (2.0.1 Part 4 §3.1.2) says to
    complete the handshake without a subprotocol and close at once, which the
    server does.
    """
    for name in offered:
        version = SUBPROTOCOLS.get(name)
        if version is not None and (pinned is None or pinned == version):
            return name
    return None
