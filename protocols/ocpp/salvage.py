"""Meter values mended or cut down before schema validation, so that one bad
sampled value never costs the whole message.

Pure: a payload in, a payload and findings out; no I/O, no clock (the reception
time comes in as text), no ``ocpp`` library. The schema facts arrive as
``SampleRules`` (``edge.ocpp.lib.meter_value_rules`` reads them from the
library's own schemas, per version and action: the 1.6 StopTransaction ``unit``
list lacks the ``Hertz`` that MeterValues has).

The closed OCPP schemas refuse a whole message for one field of one sampled
value: a 1.6 ``unit`` of ``Hz`` (FormationViolation) or a 2.0.1 ``value`` sent as
``"230.1"`` (TypeConstraintViolation), energy register included, and the
charger drops the message. ``salvage`` walks the meter-value lists of
MeterValues (both versions), StopTransaction ``transactionData`` (1.6) and
TransactionEvent ``meterValue`` (2.0.1), and for each sampled value:

* **tolerates** (mends, counts, keeps) what means the same thing spelled
  differently: a 2.0.1 value as numeric text (``"230.1"`` -> 230.1), a 1.6
  value as a JSON number (-> ``"230.1"``), enum values in another case or a known
  alias (``Hz``/``hertz`` -> ``Hertz``, ``C``/``celsius`` -> ``Celsius``, ``%`` ->
  ``Percent``; a ``Hertz`` the action's list lacks is dropped on a Frequency
  value, whose unit it is anyway), and it drops what carries no reading:
  unknown keys, an unknown ``context`` or ``location``, a broken
  ``signedMeterValue`` or ``customData``; a meter value without a timestamp gets
  the reception time;
* **skips** (drops, counts) what cannot be read: a value that is not a number
  (``"abc"``: ``value``), one that is not finite (``"NaN"``, ``"Infinity"``,
  ``"1e999"``, a JSON ``NaN``: ``non_finite``), an unknown ``measurand``,
  ``unit``, ``phase`` or ``format``, a sampled value that is not an object
  (``sampled_value``), a meter value that is not an object or has no list of
  sampled values (``meter_value``), and whatever the schema still refuses after
  that (``schema``).

A meter value left with no sampled value is dropped; an optional list left empty
(or not a list) is removed. A required list (MeterValues ``meterValue``) emptied
by the salvage sets ``Salvage.emptied``: the caller answers it (nothing to store)
once the rest of the message passed the schema. What is not a meter value is
never touched: a message without a readable list, a connectorId or an evseId
still gets the schema's CallError (no salvageable data).

Findings are ``(reason, detail)`` pairs: ``reason`` is one of the short words
above (a metric label), ``detail`` a bounded text for the log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "INFORMATIONAL",
    "METER_VALUE_LISTS",
    "SKIP_REASONS",
    "TOLERATED_REASONS",
    "Check",
    "Finding",
    "Salvage",
    "SampleRules",
    "salvage",
]

Finding = tuple[str, str]
"""(reason, detail): a metric label and a short text for the log."""

Check = Callable[[Mapping[str, Any]], str | None]
"""The schema's verdict on one object: None, or the top-level key that fails
("" when no single key is to blame)."""

METER_VALUE_LISTS: Final[Mapping[str, Mapping[str, str]]] = {
    "1.6": {"MeterValues": "meterValue", "StopTransaction": "transactionData"},
    "2.0.1": {"MeterValues": "meterValue", "TransactionEvent": "meterValue"},
}
"""Per version, the actions whose meter values are salvaged and their list key."""

_REQUIRED_LIST: Final = "MeterValues"

SKIP_REASONS: Final = (
    "value",
    "non_finite",
    "measurand",
    "unit",
    "phase",
    "format",
    "sampled_value",
    "meter_value",
    "schema",
)
"""Why a sampled value was dropped (the ``reason`` label of a skipped count)."""

TOLERATED_REASONS: Final = (
    "value",
    "measurand",
    "unit",
    "phase",
    "format",
    "context",
    "location",
    "extra_field",
    "signed_meter_value",
    "custom_data",
    "timestamp",
    "meter_value",
)
"""What was mended and kept (the ``reason`` label of a tolerated count)."""

INFORMATIONAL: Final = frozenset(
    {"context", "location", "customData", "signedMeterValue"}
)
"""Sampled-value keys that carry no reading: dropped (tolerated) when bad."""

_REASON: Final[Mapping[str, str]] = {
    "value": "value",
    "measurand": "measurand",
    "unit": "unit",
    "unitOfMeasure": "unit",
    "phase": "phase",
    "format": "format",
    "context": "context",
    "location": "location",
    "customData": "custom_data",
    "signedMeterValue": "signed_meter_value",
}

# spellings seen in the field -> the schema's spelling (matched case-insensitively
# after the schema's own values)
_ALIASES: Final[Mapping[str, Mapping[str, str]]] = {
    "unit": {
        "hz": "Hertz",
        "hertz": "Hertz",
        "c": "Celsius",
        "°c": "Celsius",
        "degc": "Celsius",
        "f": "Fahrenheit",
        "°f": "Fahrenheit",
        "%": "Percent",
    },
}
# a unit the action's list lacks, dropped when the measurand implies it
_IMPLIED_UNIT: Final[Mapping[str, str]] = {"Hertz": "Frequency"}

_NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NOT_FINITE: Final = frozenset(
    {f"{sign}{word}" for sign in ("", "+", "-") for word in ("nan", "inf", "infinity")}
)
_DETAIL_CHARS: Final = 40


@dataclass(frozen=True, slots=True)
class SampleRules:
    """What the schema of one (version, action) allows in a meter value.

    ``value_type``: "string" (1.6) or "number" (2.0.1); ``enums``: the closed
    lists by sampled-value key; ``sample_keys`` / ``entry_keys``: the keys a
    sampled value / a meter value may have; ``check_sample`` / ``check_entry``:
    the schema itself, the last word after the mending."""

    value_type: Literal["string", "number"]
    enums: Mapping[str, frozenset[str]]
    sample_keys: frozenset[str]
    entry_keys: frozenset[str]
    check_sample: Check = field(default=lambda _: None)
    check_entry: Check = field(default=lambda _: None)


@dataclass(frozen=True, slots=True)
class Salvage:
    """The payload to validate and route, and what was skipped or tolerated."""

    payload: dict[str, Any]
    skipped: tuple[Finding, ...] = ()
    tolerated: tuple[Finding, ...] = ()
    emptied: bool = False

    @property
    def changed(self) -> bool:
        """Whether anything was mended or dropped."""
        return bool(self.skipped or self.tolerated)


def _clip(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _number_text(text: str) -> float | str:
    """The number in ``text``, or the reason it is none ("value", "non_finite")."""
    core = text.strip().strip("'\"").strip()
    if core.casefold() in _NOT_FINITE:
        return "non_finite"
    if not _NUMBER.fullmatch(core):
        return "value"
    number = float(core)
    return number if math.isfinite(number) else "non_finite"


class _Findings:
    def __init__(self) -> None:
        self.skipped: list[Finding] = []
        self.tolerated: list[Finding] = []

    def skip(self, reason: str, detail: str) -> None:
        self.skipped.append((reason, detail))

    def tolerate(self, reason: str, detail: str) -> None:
        self.tolerated.append((reason, detail))


def _value(sample: dict[str, Any], rules: SampleRules, found: _Findings) -> str | None:
    """Mend ``sample["value"]`` in place; the skip reason when it cannot be."""
    raw = sample.get("value")
    what = _clip(sample.get("measurand") or "Energy.Active.Import.Register")
    if isinstance(raw, bool) or raw is None:
        return "value"
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            return "non_finite"
        if rules.value_type == "string":
            sample["value"] = repr(float(raw)) if isinstance(raw, float) else str(raw)
            found.tolerate("value", f"number {_clip(raw)} as text ({what})")
        return None
    if not isinstance(raw, str):
        return "value"
    number = _number_text(raw)
    if isinstance(number, str):
        return number
    if rules.value_type == "number":
        sample["value"] = number
        found.tolerate("value", f"text {_clip(raw)} as a number ({what})")
    return None


def _enum(key: str, raw: object, allowed: frozenset[str]) -> str | None:
    """The schema's spelling of ``raw`` for ``key``, None if there is none."""
    if isinstance(raw, str):
        if raw in allowed:
            return raw
        folded = raw.strip().casefold()
        for name in allowed:
            if name.casefold() == folded:
                return name
        alias = _ALIASES.get(key, {}).get(folded)
        if alias is not None:
            return alias
    return None


def _enums(sample: dict[str, Any], rules: SampleRules, found: _Findings) -> str | None:
    """Mend the closed-list keys in place; the skip reason when one cannot be."""
    for key, allowed in rules.enums.items():
        if key not in sample:
            continue
        raw = sample[key]
        name = _enum(key, raw, allowed)
        if name == raw and name in allowed:
            continue
        if name is None and key in INFORMATIONAL:
            del sample[key]
            found.tolerate(_REASON[key], f"{key} {_clip(raw)} dropped")
        elif name is None:
            return _REASON.get(key, "schema")
        elif name in allowed:
            sample[key] = name
            found.tolerate(_REASON.get(key, key), f"{key} {_clip(raw)} as {name}")
        elif _IMPLIED_UNIT.get(name) == sample.get("measurand"):
            del sample[key]
            found.tolerate(_REASON.get(key, key), f"{key} {_clip(raw)} implied")
        else:
            return _REASON.get(key, "schema")
    return None


def _checked(
    obj: dict[str, Any], check: Check, found: _Findings, reason: str
) -> str | None:
    """Run the schema on ``obj``, dropping informational keys it refuses; the
    skip reason when something else fails."""
    for _ in range(len(obj) + 1):
        key = check(obj)
        if key is None:
            return None
        if key in INFORMATIONAL and key in obj:
            found.tolerate(_REASON[key], f"{key} dropped: the schema refuses it")
            del obj[key]
            continue
        return _REASON.get(key, reason)
    return reason


def _sample(raw: object, rules: SampleRules, found: _Findings) -> dict[str, Any] | None:
    """One sampled value mended, or None (skipped and counted)."""
    if not isinstance(raw, Mapping):
        found.skip("sampled_value", f"not an object: {_clip(raw)}")
        return None
    sample = dict(raw)
    for key in [k for k in sample if k not in rules.sample_keys]:
        found.tolerate("extra_field", f"unknown key {_clip(key)} dropped")
        del sample[key]
    reason = (
        _value(sample, rules, found)
        or _enums(sample, rules, found)
        or _checked(sample, rules.check_sample, found, "schema")
    )
    if reason is not None:
        what = _clip(sample.get("measurand") or "Energy.Active.Import.Register")
        bad = {
            "value": f"value {_clip(raw.get('value'))}",
            "non_finite": f"value {_clip(raw.get('value'))}",
            "unit": f"unit {_clip(raw.get('unit', raw.get('unitOfMeasure')))}",
            "measurand": f"measurand {_clip(raw.get('measurand'))}",
            "phase": f"phase {_clip(raw.get('phase'))}",
            "format": f"format {_clip(raw.get('format'))}",
        }.get(reason, "refused by the schema")
        found.skip(reason, f"{bad} ({what})")
        return None
    return sample


def _entry(
    raw: object, rules: SampleRules, received_at: str, found: _Findings
) -> dict[str, Any] | None:
    """One meter value with its sampled values mended, or None (nothing left)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("sampledValue"), list):
        found.skip("meter_value", f"no list of sampled values: {_clip(raw)}")
        return None
    entry = {k: v for k, v in raw.items() if k != "sampledValue"}
    for key in [k for k in entry if k not in rules.entry_keys]:
        found.tolerate("extra_field", f"unknown key {_clip(key)} dropped")
        del entry[key]
    if not isinstance(entry.get("timestamp"), str):
        found.tolerate("timestamp", f"timestamp {_clip(entry.get('timestamp'))}")
        entry["timestamp"] = received_at
    samples = [_sample(s, rules, found) for s in raw["sampledValue"]]
    entry["sampledValue"] = [s for s in samples if s is not None]
    if not entry["sampledValue"]:
        return None
    if _checked(entry, rules.check_entry, found, "meter_value") is not None:
        found.skip("meter_value", "refused by the schema")
        return None
    return entry


def salvage(
    version: str,
    action: str,
    payload: Mapping[str, Any],
    rules: SampleRules | None,
    *,
    received_at: str,
) -> Salvage:
    """``payload`` (camelCase, as on the wire) with its meter values mended or cut
    down (module docstring); ``received_at`` (an OCPP dateTime) stands in for a
    missing timestamp. Any other action, or no ``rules``, comes back as it is."""
    key = METER_VALUE_LISTS.get(version, {}).get(action)
    if key is None or rules is None or key not in payload:
        return Salvage(dict(payload))
    required = action == _REQUIRED_LIST
    items = payload[key]
    found = _Findings()
    out = dict(payload)
    if not isinstance(items, list):
        if required:
            return Salvage(out)  # no salvageable data: the schema refuses it
        found.skip("meter_value", f"{key} is not a list: {_clip(items)}")
        del out[key]
        return Salvage(out, tuple(found.skipped), tuple(found.tolerated))
    if not items:
        if not required:
            found.tolerate("meter_value", f"empty {key} dropped")
            del out[key]
        return Salvage(out, tuple(found.skipped), tuple(found.tolerated))
    entries = [_entry(item, rules, received_at, found) for item in items]
    kept = [e for e in entries if e is not None]
    if kept:
        out[key] = kept
    elif required:
        out[key] = []
    else:
        del out[key]
    return Salvage(
        out, tuple(found.skipped), tuple(found.tolerated), required and not kept
    )
