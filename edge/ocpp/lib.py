"""The one module that imports the ``ocpp`` package (mobilityhouse, 2.1.0).

The package has no type information, so everything it exports is ``Any``; this
module gives the rest of Fusebox typed names for the few things it uses and keeps
the library's habits in one place:

* payload classes are looked up by class name (never alias or wrap them);
* handler kwargs are snake_case, nested objects arrive as plain dicts;
* a schema-validation switch exists only per action (``skip_schema_validation``),
  so ``make_lenient`` flips it on one instance's route map for lenient chargers,
  and ``schema_unchecked`` for the one message whose meter values were all
  skipped (after ``check_request`` passed the rest of it);
* ``meter_value_rules`` reads what the library's schemas allow in a meter value,
  for ``protocols.ocpp.salvage`` (pure), which mends or drops bad sampled values
  before the library validates the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any, TypeVar, cast

from jsonschema import Draft4Validator as _Draft4Validator
from ocpp import v16 as _v16
from ocpp import v201 as _v201
from ocpp.charge_point import ChargePoint as _BaseChargePoint
from ocpp.charge_point import camel_to_snake_case as _camel_to_snake
from ocpp.exceptions import NotImplementedError as _NotImplemented
from ocpp.exceptions import NotSupportedError as _NotSupported
from ocpp.exceptions import OCPPError as _OCPPError
from ocpp.exceptions import UnknownCallErrorCodeError as _UnknownCallErrorCode
from ocpp.messages import Call as _Call
from ocpp.messages import validate_payload as _validate_payload
from ocpp.routing import after as _after
from ocpp.routing import on as _on
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16 import enums as enums16
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201 import enums as enums201

from protocols.ocpp.salvage import METER_VALUE_LISTS, Check, SampleRules

__all__ = [
    "CallErrorAnswer",
    "ChargePoint16",
    "ChargePoint201",
    "OCPPError",
    "after",
    "boot_result",
    "call16",
    "call201",
    "check_request",
    "clip_strings",
    "heartbeat_result",
    "known_actions",
    "make_lenient",
    "meter_value_rules",
    "on",
    "outgoing_call",
    "result16",
    "result201",
    "routed_actions",
    "schema_unchecked",
    "status_result",
]

_F = TypeVar("_F", bound=Callable[..., Any])

OCPPError = _OCPPError
"""What the library raises for a CALL it answers with a CALLERROR (``code``)."""


class _SpecErrorCodes:
    """Answers a CALL with no handler with the code the OCPP-J specs give.

    OCPP-J 1.6 (section 4.2.3) and 2.0.1 (section 4.3) define ``NotImplemented``
    as "Requested Action is not known by receiver" and ``NotSupported`` as
    "recognized but not supported". The library answers the other way round
    (and its exceptions' descriptions say so); an independent charge point
    found it (issue 10). A known action of the version that the edge does not
    serve is NotSupported; an action the version does not know is
    NotImplemented."""

    route_map: dict[str, Any]
    _ocpp_version: str

    async def _handle_call(self, msg: Any) -> Any:
        if msg.action not in self.route_map:
            if _known_action(msg.action, self._ocpp_version):
                raise _NotSupported(
                    "Requested Action is recognized but not supported by the receiver",
                    {"cause": f"{msg.action} is not served here"},
                )
            raise _NotImplemented(
                "Requested Action is not known by receiver",
                {"cause": f"{msg.action} is no OCPP {self._ocpp_version} action"},
            )
        return await super()._handle_call(msg)  # type: ignore[misc]


def known_actions(version: str) -> frozenset[str]:
    """Every action name of ``version`` as the library's enum lists it (1.6 with
    the security whitepaper's messages)."""
    actions = enums16.Action if version == "1.6" else enums201.Action
    return frozenset(a.value for a in actions)


def routed_actions(charge_point_class: type) -> frozenset[str]:
    """The actions a ``ChargePoint`` subclass has an ``@on`` handler for."""
    return frozenset(
        action
        for name in dir(charge_point_class)
        if isinstance(
            action := getattr(getattr(charge_point_class, name), "_on_action", None),
            str,
        )
    )


def _known_action(action: str, version: str) -> bool:
    actions = enums16.Action if version == "1.6" else enums201.Action
    try:
        actions(action)
    except ValueError:
        return False
    return True


class _ChargePoint16(_SpecErrorCodes, _v16.ChargePoint):  # type: ignore[misc]
    pass


class _ChargePoint201(_SpecErrorCodes, _v201.ChargePoint):  # type: ignore[misc]
    pass


ChargePoint16: type[_BaseChargePoint] = _ChargePoint16
"""OCPP 1.6 ``ChargePoint``; subclass it once per role (server or test client)."""
ChargePoint201: type[_BaseChargePoint] = _ChargePoint201
"""OCPP 2.0.1 ``ChargePoint``."""


def on(action: str) -> Callable[[_F], _F]:
    """``@on("BootNotification")``: route incoming CALLs of ``action`` to the method.
    The method must always return a result object (a missing return kills the
    library's read loop; ``edge.ocpp.server`` guards against it anyway)."""
    return cast(Callable[[_F], _F], _on(action))


def after(action: str) -> Callable[[_F], _F]:
    """``@after("BootNotification")``: run the method after the answer to an incoming
    CALL of ``action`` was sent. The library wraps an awaitable it returns in a task
    it keeps no reference to, so the method should be plain and hand any work to a
    task its owner keeps (``OcppServer`` does)."""
    return cast(Callable[[_F], _F], _after(action))


def make_lenient(charge_point: object) -> None:
    """Skip schema validation of every action for this one connection (requests and
    our responses), for chargers whose firmware breaks the closed schemas."""
    routes = cast(dict[str, dict[str, Any]], charge_point.route_map)  # type: ignore[attr-defined]
    for route in routes.values():
        route["_skip_schema_validation"] = True


@contextlib.contextmanager
def schema_unchecked(charge_point: object, action: str) -> Iterator[None]:
    """Skip schema validation of ``action`` on this one connection while the
    block runs (one message: the server routes a charger's frames one at a
    time); a lenient connection stays lenient."""
    routes = cast(dict[str, dict[str, Any]], charge_point.route_map)  # type: ignore[attr-defined]
    route = routes[action]
    before = route.get("_skip_schema_validation", False)
    route["_skip_schema_validation"] = True
    try:
        yield
    finally:
        route["_skip_schema_validation"] = before


async def check_request(version: str, action: str, payload: dict[str, Any]) -> None:
    """Validate a CALL's ``payload`` as the library does before routing it:
    raises the library's ``OCPPError`` (with its code) when the schema refuses."""
    await _validate_payload(
        _Call(unique_id="check", action=action, payload=payload), version
    )


def boot_result(
    version: str, *, current_time: str, interval_s: int, accepted: bool
) -> object:
    """BootNotification result, Accepted or Pending."""
    if version == "1.6":
        status16 = (
            enums16.RegistrationStatus.accepted
            if accepted
            else enums16.RegistrationStatus.pending
        )
        return result16.BootNotification(
            current_time=current_time, interval=interval_s, status=status16
        )
    status201 = (
        enums201.RegistrationStatusEnumType.accepted
        if accepted
        else enums201.RegistrationStatusEnumType.pending
    )
    return result201.BootNotification(
        current_time=current_time, interval=interval_s, status=status201
    )


def heartbeat_result(version: str, *, current_time: str) -> object:
    """The Heartbeat answer for ``version``, telling the charger our time."""
    module = result16 if version == "1.6" else result201
    return module.Heartbeat(current_time=current_time)


def status_result(version: str) -> object:
    """The (empty) StatusNotification answer for ``version``."""
    module = result16 if version == "1.6" else result201
    return module.StatusNotification()


class CallErrorAnswer(Exception):
    """The charger answered an outgoing CALL with a CALLERROR."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


async def outgoing_call(
    charge_point: object,
    version: str,
    action: str,
    payload: dict[str, Any],
    *,
    timeout_s: float,
    skip_schema_validation: bool = False,
) -> dict[str, Any]:
    """Send the CALL ``action`` with ``payload`` (camelCase wire keys) and return the
    answer's payload as a dict with snake_case keys (nested objects too).

    Never from inside a handler of the same charger (it would deadlock: the answer
    is read by the loop that runs the handler). ``suppress=False``: a CALLERROR
    raises ``CallErrorAnswer``; no answer in ``timeout_s`` raises TimeoutError."""
    module = call16 if version == "1.6" else call201
    request = getattr(module, action)(**_camel_to_snake(payload))
    send = charge_point.call  # type: ignore[attr-defined]
    try:
        async with asyncio.timeout(timeout_s):
            answer = await send(
                request,
                suppress=False,
                skip_schema_validation=skip_schema_validation,
            )
    except _OCPPError as err:
        raise CallErrorAnswer(
            str(getattr(err, "code", "GenericError")), str(err.description or "")
        ) from err
    except _UnknownCallErrorCode as err:
        raise CallErrorAnswer("UnknownErrorCode", str(err)) from err
    return dataclasses.asdict(answer)


@functools.cache
def _request_schema(version: str, action: str) -> dict[str, Any] | None:
    package = "ocpp.v16.schemas" if version == "1.6" else "ocpp.v201.schemas"
    name = f"{action}.json" if version == "1.6" else f"{action}Request.json"
    try:
        text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return None
    schema: dict[str, Any] = json.loads(text)
    return schema


def clip_strings(
    version: str, action: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``payload`` (camelCase, as on the wire) with every string longer than its
    schema's ``maxLength`` cut to fit, and the paths that were cut (e.g.
    ``chargePointSerialNumber``). For chargers whose firmware sends over-long
    strings (26-33 character serial numbers); an unknown action is left alone."""
    schema = _request_schema(version, action)
    if schema is None:
        return payload, []
    definitions = schema.get("definitions", {})
    clipped: list[str] = []

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        """``node`` with a ``#/definitions/`` reference followed."""
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            target = definitions.get(ref.rsplit("/", 1)[1])
            if isinstance(target, dict):
                return target
        return node

    def walk(value: Any, node: dict[str, Any], path: str) -> Any:
        """``value`` with its over-long strings cut, recording each cut path."""
        node = resolve(node)
        if isinstance(value, str):
            limit = node.get("maxLength")
            if isinstance(limit, int) and len(value) > limit:
                clipped.append(path)
                return value[:limit]
            return value
        if isinstance(value, dict):
            props = node.get("properties", {})
            return {
                key: walk(item, props[key], f"{path}.{key}" if path else key)
                if isinstance(props.get(key), dict)
                else item
                for key, item in value.items()
            }
        if isinstance(value, list):
            items = node.get("items")
            if isinstance(items, dict):
                return [walk(item, items, f"{path}[]") for item in value]
        return value

    return walk(payload, schema, ""), clipped


def _resolved(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> Any:
    """``node`` with a ``#/definitions/`` reference followed."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        return definitions.get(ref.rsplit("/", 1)[1], {})
    return node


def _checker(schema: Mapping[str, Any], definitions: Mapping[str, Any]) -> Check:
    """The schema as a ``Check``: None, or the top-level key of the first error
    ("" when the object as a whole fails). The library's own validator class
    (jsonschema is its pinned dependency): a sampled value is judged exactly as
    the library judges the whole message."""
    validator = _Draft4Validator({**schema, "definitions": dict(definitions)})

    def check(obj: Mapping[str, Any]) -> str | None:
        for error in validator.iter_errors(obj):
            return str(error.path[0]) if error.path else ""
        return None

    return check


@functools.cache
def meter_value_rules(version: str, action: str) -> SampleRules | None:
    """What the library's schema of ``action`` allows in a meter value and a
    sampled value (``protocols.ocpp.salvage``); None for an action without
    meter values."""
    key = METER_VALUE_LISTS.get(version, {}).get(action)
    schema = _request_schema(version, action) if key else None
    if key is None or schema is None:
        return None
    definitions = schema.get("definitions", {})
    entry = _resolved(schema["properties"][key]["items"], definitions)
    sample = _resolved(entry["properties"]["sampledValue"]["items"], definitions)
    props = {
        name: _resolved(node, definitions)
        for name, node in sample["properties"].items()
    }
    return SampleRules(
        value_type="string" if props["value"]["type"] == "string" else "number",
        enums={
            name: frozenset(node["enum"])
            for name, node in props.items()
            if isinstance(node.get("enum"), list)
        },
        sample_keys=frozenset(props),
        entry_keys=frozenset(entry["properties"]),
        check_sample=_checker(sample, definitions),
        check_entry=_checker(entry, definitions),
    )
