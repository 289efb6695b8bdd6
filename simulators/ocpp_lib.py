"""The simulators' one module that imports the ``ocpp`` package (mobilityhouse 2.1.0).

The package has no type information; this module keeps its habits in one place and
gives ``simulators.charger`` a dict-in, dict-out surface:

* ``make_call(version, action, payload)`` builds the request object for
  ``ChargePoint.call`` from a snake_case dict (the action comes from the class
  name, so payload classes are never wrapped or aliased);
* ``make_result(version, action, **fields)`` builds a handler's return value (a
  handler that returns anything else kills the library's read loop);
* ``result_dict`` turns a ``call()`` result back into a snake_case dict;
* nested objects reach handlers as snake_case dicts: ``to_camel`` gives the wire
  (camelCase) form that ``protocols.ocpp`` reads.

``call()`` is always used with ``suppress=False``: a CALLERROR raises ``CallError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

from ocpp import exceptions as _exceptions
from ocpp import v16 as _v16
from ocpp import v201 as _v201
from ocpp.charge_point import camel_to_snake_case as _to_snake
from ocpp.charge_point import remove_nones as _remove_nones
from ocpp.charge_point import snake_to_camel_case as _to_camel
from ocpp.routing import on as _on
from ocpp.v16 import call as _call16
from ocpp.v16 import call_result as _result16
from ocpp.v201 import call as _call201
from ocpp.v201 import call_result as _result201

__all__ = [
    "SUBPROTOCOLS",
    "CallError",
    "ChargePoint16",
    "ChargePoint201",
    "error",
    "make_call",
    "make_result",
    "on",
    "result_dict",
    "to_camel",
    "to_snake",
]

_F = TypeVar("_F", bound=Callable[..., Any])

SUBPROTOCOLS: Final = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
"""WebSocket subprotocol per OCPP version."""

ChargePoint16: Any = _v16.ChargePoint
"""OCPP 1.6 ``ChargePoint`` (either side: the role is in the handlers)."""
ChargePoint201: Any = _v201.ChargePoint
"""OCPP 2.0.1 ``ChargePoint``."""
CallError: type[Exception] = _exceptions.OCPPError
"""What ``call(..., suppress=False)`` raises for a CALLERROR, and what a handler
raises to answer with one (subclasses carry the OCPP error code)."""

_CALLS: Final[dict[str, Any]] = {"1.6": _call16, "2.0.1": _call201}
_RESULTS: Final[dict[str, Any]] = {"1.6": _result16, "2.0.1": _result201}


def on(action: str) -> Callable[[_F], _F]:
    """``@on("SetChargingProfile")``: route incoming CALLs of ``action`` here; the
    method must return ``make_result(...)``."""
    return cast(Callable[[_F], _F], _on(action))


def make_call(version: str, action: str, payload: dict[str, Any]) -> Any:
    """The request object of ``action`` with snake_case ``payload`` (nested dicts
    stay dicts), for ``ChargePoint.call``."""
    return getattr(_CALLS[version], action)(**payload)


def make_result(version: str, action: str, **fields: Any) -> Any:
    """The CallResult object a handler of ``action`` returns."""
    return getattr(_RESULTS[version], action)(**fields)


def result_dict(result: object) -> dict[str, Any]:
    """A ``call()`` result as a snake_case dict without ``None`` fields."""
    if not dataclasses.is_dataclass(result) or isinstance(result, type):
        return {}
    return cast(dict[str, Any], _remove_nones(dataclasses.asdict(result)))


def to_camel(data: Any) -> Any:
    """snake_case keys (as handlers receive them) to the wire's camelCase."""
    return _to_camel(data)


def to_snake(data: Any) -> Any:
    """camelCase wire keys to the library's snake_case."""
    return _to_snake(data)


def error(code: str, description: str) -> Exception:
    """An exception that the library answers with a CALLERROR of ``code``
    (``NotSupported``, ``PropertyConstraintViolation``, ...)."""
    cls = getattr(_exceptions, f"{code}Error", _exceptions.OCPPError)
    return cast(Exception, cls(description=description))
