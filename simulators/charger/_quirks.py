"""``--quirks``: sampled values that real chargers send and the closed OCPP
schemas refuse, mixed into every transaction message with meter values.

Each quirk is named; the ledger line of a message that carried them lists the
names (``"quirks": [...]``), so a test can reconcile what the charger sent
against what the CSMS stored and counted. The register and the other good
values stay as they are, except ``register_as_text`` (2.0.1: the energy
register sent as a numeric string, a value the CSMS should still store). A
1.6 StopTransaction then also carries ``transactionData`` (the register at the
stop, and the quirks). Messages with quirks are sent without the library's
client-side schema check (it would refuse them first).

Every quirk value is finite or text, so the state file stays plain JSON.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["QUIRKS", "REGISTER_AS_TEXT", "quirk_names", "quirky_samples"]

REGISTER_AS_TEXT: Final = "register_as_text"
"""2.0.1: the energy register's value sent as text ("12345.6")."""

QUIRKS: Final[Mapping[str, tuple[tuple[str, dict[str, Any]], ...]]] = {
    "1.6": (
        ("unit_hz", {"value": "50.0", "measurand": "Frequency", "unit": "Hz"}),
        ("unit_kv", {"value": "0.23", "measurand": "Voltage", "unit": "kV"}),
        ("unknown_measurand", {"value": "1", "measurand": "Energy.Active.Import.X"}),
        ("value_as_number", {"value": 230.0, "measurand": "Voltage", "unit": "V"}),
        ("value_text", {"value": "abc", "measurand": "Current.Offered", "unit": "A"}),
        ("value_nan", {"value": "NaN", "measurand": "Voltage"}),
        ("value_1e999", {"value": "1e999", "measurand": "Voltage"}),
    ),
    "2.0.1": (
        ("unknown_measurand", {"value": 21.5, "measurand": "Temperature"}),
        (
            "unit_unknown",
            {"value": 3, "measurand": "Voltage", "unit_of_measure": {"unit": "ft"}},
        ),
        ("value_text", {"value": "abc", "measurand": "Current.Offered"}),
        ("value_nan", {"value": "NaN", "measurand": "Voltage"}),
        ("value_infinity", {"value": "-Infinity", "measurand": "Power.Active.Import"}),
    ),
}
"""Per version, (name, sampled value in the library's snake_case)."""


def quirky_samples(version: str) -> list[dict[str, Any]]:
    """Fresh copies of ``version``'s quirky sampled values."""
    return [copy.deepcopy(sample) for _, sample in QUIRKS[version]]


def quirk_names(version: str) -> list[str]:
    """The names of the quirks one message of ``version`` carries."""
    names = [name for name, _ in QUIRKS[version]]
    return [REGISTER_AS_TEXT, *names] if version == "2.0.1" else names
