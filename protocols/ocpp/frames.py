"""OCPP-J frames before the ``ocpp`` library sees them, and the CALLERRORs we answer.

Pure: text in, a verdict out; no I/O, no logging, no ``ocpp`` library. The edge's
OCPP server (``edge.ocpp.server``) feeds every received frame to ``screen`` because
the library only *logs* frames it cannot parse, leaving the charger without an
answer. ``screen`` returns one of:

* ``Route(frame)``: a well-formed frame the library may route;
* ``Reject(code, message_id, description)``: answer with this CALLERROR, and do not
  route. Not JSON: message id "-1" (the 2.0.1 rule for an unreadable id; a 1.6
  charger has no id to match either, so it just sees an error it cannot correlate)
  and FormationViolation (1.6) / FormatViolation (2.0.1). Unknown message type id:
  MessageTypeNotSupported (2.0.1) / FormationViolation (1.6, which has no such
  code), with the frame's id when readable. A CALL that is not
  ``[2, id, action, {payload}]``: RpcFrameworkError (2.0.1) / FormationViolation
  (1.6);
* ``Drop()``: a malformed CALLRESULT or CALLERROR, to be logged and ignored:
  answering a response would start a ping-pong of errors.

The tables below are keyed by OCPP version ("1.6", "2.0.1"). The library speaks
the 2.0.1 spelling of error codes; ``respell_16`` turns the CALLERRORs it sends a
1.6 charger into the OCPP-J 1.6 names (§4.2.3, typos kept by the OCA).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "BAD_CALL",
    "BAD_TYPE",
    "CALL",
    "CALLERROR",
    "CALLRESULT",
    "NOT_JSON",
    "NOT_RPC",
    "PENDING_ALLOWED",
    "SPELLING_16",
    "UNREADABLE_ID",
    "Drop",
    "Reject",
    "Route",
    "Screened",
    "call_error_frame",
    "call_frame",
    "refuse_while_pending",
    "respell_16",
    "screen",
]

CALL: Final = 2
CALLRESULT: Final = 3
CALLERROR: Final = 4

UNREADABLE_ID: Final = "-1"
"""The message id of a CALLERROR answering a frame whose id cannot be read
(OCPP-J 2.0.1 §4.2.3)."""

NOT_RPC: Final[Mapping[str, str]] = {
    "1.6": "FormationViolation",
    "2.0.1": "RpcFrameworkError",
}
"""Error code for a frame that is not a JSON array at all: in 2.0.1 (section 4.3)
"not a valid RPC Request, for example: MessageId could not be read"."""
NOT_JSON: Final[Mapping[str, str]] = {
    "1.6": "FormationViolation",
    "2.0.1": "FormatViolation",
}
"""Error code for a CALL whose payload is not an object ("Payload for Action is
syntactically incorrect")."""
BAD_TYPE: Final[Mapping[str, str]] = {
    "1.6": "FormationViolation",
    "2.0.1": "MessageTypeNotSupported",
}
"""Error code for an unknown message type id (1.6 has no code of its own for it)."""
BAD_CALL: Final[Mapping[str, str]] = {
    "1.6": "FormationViolation",
    "2.0.1": "RpcFrameworkError",
}
"""Error code for a CALL that is not ``[2, id, action, payload]``."""

SPELLING_16: Final[Mapping[str, str]] = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}
"""The library's (2.0.1) spelling -> OCPP-J 1.6 §4.2.3's (sic)."""

PENDING_ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    "1.6": frozenset({"BootNotification", "Heartbeat"}),
    "2.0.1": frozenset({"BootNotification"}),
}
"""The only CALLs a pending charger may send, per version; any other is answered
SecurityError. 2.0.1 B02.FR.09: "while Pending, the CSMS SHALL respond with
CALLERROR SecurityError" to any CALL but BootNotification (or a message the CSMS
itself triggered with TriggerMessage, GetBaseReport or GetReport, none of which
the edge sends to a pending station). 1.6 only says the charge point should not
send other requests while pending, and the OCPP-J 1.6 errata (§3.8) recommends
SecurityError for them; the edge keeps answering a 1.6 charger's Heartbeat (its
clock and the connection stay alive while the installer decides)."""


@dataclass(frozen=True, slots=True)
class Route:
    """A well-formed frame: hand it to the library. ``frame`` is the parsed array."""

    frame: list[Any]


@dataclass(frozen=True, slots=True)
class Reject:
    """A frame the library must not see: answer it with ``frame()``, a CALLERROR
    carrying ``code`` for the charger's version and ``message_id`` ("-1" when
    unreadable)."""

    code: str
    message_id: str
    description: str

    def frame(self) -> str:
        """The CALLERROR to send back."""
        return call_error_frame(self.message_id, self.code, self.description)


@dataclass(frozen=True, slots=True)
class Drop:
    """A malformed CALLRESULT/CALLERROR: log it and send nothing."""


Screened = Route | Reject | Drop


def call_error_frame(message_id: str, code: str, description: str) -> str:
    """A CALLERROR frame with empty error details, as JSON text."""
    return json.dumps([CALLERROR, message_id, code, description, {}])


def call_frame(message_id: str, action: str, payload: Mapping[str, Any]) -> str:
    """A CALL frame as JSON text (e.g. re-encoded after its strings were clipped)."""
    return json.dumps([CALL, message_id, action, payload])


def screen(raw: str | bytes, version: str) -> Screened:
    """What to do with one received frame for a charger speaking ``version``; see
    the module docstring for the codes. ``KeyError`` for an unknown version."""
    try:
        frame = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return Reject(NOT_RPC[version], UNREADABLE_ID, "not JSON")
    if not isinstance(frame, list) or not frame:
        return Reject(NOT_RPC[version], UNREADABLE_ID, "not a JSON array")
    message_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
    answer_id = message_id or UNREADABLE_ID
    kind = frame[0]
    if isinstance(kind, bool) or kind not in (CALL, CALLRESULT, CALLERROR):
        return Reject(
            BAD_TYPE[version], answer_id, f"message type id {kind!r} not supported"
        )
    if kind == CALL:
        if len(frame) != 4 or not message_id or not isinstance(frame[2], str):
            return Reject(
                BAD_CALL[version], answer_id, "a CALL is [2, id, action, payload]"
            )
        if not isinstance(frame[3], dict):
            return Reject(NOT_JSON[version], answer_id, "payload is not an object")
        return Route(frame)
    if message_id is None or len(frame) != (3 if kind == CALLRESULT else 5):
        return Drop()
    return Route(frame)


def refuse_while_pending(frame: list[Any], version: str) -> Reject | None:
    """For a charger that is pending acceptance: the SecurityError answering a CALL
    it may not send yet in ``version`` (``PENDING_ALLOWED``), or None when the
    frame may go on. ``KeyError`` for an unknown version."""
    if frame[0] == CALL and frame[2] not in PENDING_ALLOWED[version]:
        return Reject("SecurityError", frame[1], "charger is pending acceptance")
    return None


def respell_16(message: str) -> str:
    """``message`` with a CALLERROR's code in its OCPP-J 1.6 spelling; any other
    frame (and any code spelled alike in both versions) unchanged."""
    if message.startswith(f"[{CALLERROR}"):
        frame = json.loads(message)
        if len(frame) > 2 and frame[2] in SPELLING_16:
            frame[2] = SPELLING_16[frame[2]]
            message = json.dumps(frame)
    return message
