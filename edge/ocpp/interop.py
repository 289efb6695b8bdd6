"""The OCPP interop matrix of the README, generated from the code:
``python -m edge.ocpp.interop`` prints it (exit 1 when the README's differs).

Every action of both versions (the ``ocpp`` library's lists, 1.6 with the
security whitepaper's messages), in the direction it goes:

* **charger -> edge**: *handled* when ``edge.ocpp.routes`` has a handler for it
  in that version (schema-checked, stored, answered), *refused NotSupported*
  when the version knows it but the edge serves none; the column "while
  Pending" comes from ``protocols.ocpp.frames.PENDING_ALLOWED``, the meter-value
  salvage from ``protocols.ocpp.salvage.METER_VALUE_LISTS``;
* **edge -> charger**: *sent* by the ``OcppServer`` method whose request
  builder (``edge.ocpp.commands``) produces that action in that version; the
  others are never sent.

Which side may send an action is a spec fact (``CHARGER_INITIATED``), as are the
notes on the configuration that changes an answer (``_NOTES``).
``tests/unit/test_ocpp_interop.py`` fails while the README's matrix (between
``MATRIX_BEGIN`` and ``MATRIX_END``) differs from ``matrix_markdown()``, and
``tests/component/test_ocpp_interop_live.py`` sends every row to a real server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from edge.ocpp import commands, lib
from edge.ocpp.routes import CHARGE_POINT_CLASSES
from protocols.ocpp import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
)
from protocols.ocpp.frames import PENDING_ALLOWED
from protocols.ocpp.salvage import METER_VALUE_LISTS

__all__ = [
    "CHARGER_INITIATED",
    "MATRIX_BEGIN",
    "MATRIX_END",
    "VERSIONS",
    "Command",
    "commands_sent",
    "main",
    "matrix_markdown",
    "readme_matrix",
]

VERSIONS: Final = ("1.6", "2.0.1")
MATRIX_BEGIN: Final = "<!-- interop-matrix:start -->"
MATRIX_END: Final = "<!-- interop-matrix:end -->"

CHARGER_INITIATED: Final[Mapping[str, frozenset[str]]] = {
    "1.6": frozenset(
        {
            "Authorize",
            "BootNotification",
            "DataTransfer",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "Heartbeat",
            "LogStatusNotification",
            "MeterValues",
            "SecurityEventNotification",
            "SignCertificate",
            "SignedFirmwareStatusNotification",
            "StartTransaction",
            "StatusNotification",
            "StopTransaction",
        }
    ),
    "2.0.1": frozenset(
        {
            "Authorize",
            "BootNotification",
            "ClearedChargingLimit",
            "DataTransfer",
            "FirmwareStatusNotification",
            "Get15118EVCertificate",
            "GetCertificateStatus",
            "Heartbeat",
            "LogStatusNotification",
            "MeterValues",
            "NotifyChargingLimit",
            "NotifyCustomerInformation",
            "NotifyDisplayMessages",
            "NotifyEVChargingNeeds",
            "NotifyEVChargingSchedule",
            "NotifyEvent",
            "NotifyMonitoringReport",
            "NotifyReport",
            "PublishFirmwareStatusNotification",
            "ReportChargingProfiles",
            "ReservationStatusUpdate",
            "SecurityEventNotification",
            "SignCertificate",
            "StatusNotification",
            "TransactionEvent",
        }
    ),
}
"""Per version, the actions a charger sends (OCPP 1.6 §4 and the security
whitepaper, 2.0.1 Part 2); DataTransfer goes both ways, the rest the other way."""

_NOTES: Final[Mapping[str, str]] = {
    "BootNotification": (
        '`validation = "clip_strings"`: serial numbers over the schema\'s length '
        "are cut (else FormationViolation/FormatViolation)"
    ),
    "StartTransaction": '`energy_in_kwh` (meterStart), `clock = "gateway"`',
    "StopTransaction": "`energy_in_kwh` (meterStop, `transactionData`), `clock`",
    "MeterValues": "`energy_in_kwh`, `clock`",
    "TransactionEvent": "`energy_in_kwh`, `clock`",
    "DataTransfer": "stored as an event, answered `UnknownVendorId`",
    "Authorize": "`ocpp.id_tags`, `id_tag_cache_s`, `allow_unknown_id_tags`",
}


@dataclass(frozen=True, slots=True)
class Command:
    """An ``OcppServer`` method and the request it builds in each version
    (None: that version has no such command)."""

    method: str
    build: Mapping[str, Callable[[], tuple[str, Any]] | None]


_PROFILE: Final = ChargingProfile(
    id=1,
    stack_level=0,
    purpose=ProfilePurpose.TX_DEFAULT,
    kind=ProfileKind.ABSOLUTE,
    schedules=(
        ChargingSchedule(
            rate_unit=RateUnit.A,
            periods=(SchedulePeriod(0, 16.0, 3),),
            start_schedule=datetime(2020, 1, 1, tzinfo=UTC),
        ),
    ),
)


def _both(build: Callable[[str], tuple[str, Any]]) -> dict[str, Any]:
    return {v: (lambda v=v: build(v)) for v in VERSIONS}


_COMMANDS: Final = (
    Command(
        "set_charging_profile",
        _both(lambda v: commands.set_charging_profile_request(v, 1, _PROFILE)),
    ),
    Command(
        "clear_charging_profile",
        _both(lambda v: commands.clear_charging_profile_request(v, profile_id=1)),
    ),
    Command(
        "get_composite_schedule",
        _both(lambda v: commands.get_composite_schedule_request(v, 1, 60)),
    ),
    Command(
        "remote_start",
        _both(lambda v: commands.remote_start_request(v, "TAG1")),
    ),
    Command("remote_stop", _both(lambda v: commands.remote_stop_request(v, 1))),
    Command(
        "trigger_message",
        _both(lambda v: commands.trigger_message_request(v, "Heartbeat")),
    ),
    Command("reset", _both(lambda v: commands.reset_request(v, "soft"))),
    Command(
        "change_availability",
        _both(lambda v: commands.change_availability_request(v, 1, True)),
    ),
    Command(
        "get_configuration",
        {"1.6": lambda: commands.get_configuration_request(None), "2.0.1": None},
    ),
    Command(
        "change_configuration",
        {
            "1.6": lambda: commands.change_configuration_request("K", "1"),
            "2.0.1": None,
        },
    ),
    Command(
        "get_variables",
        {
            "1.6": None,
            "2.0.1": lambda: commands.get_variables_request(
                commands.CAPABILITY_VARIABLES_201
            ),
        },
    ),
    Command(
        "set_variables",
        {
            "1.6": None,
            "2.0.1": lambda: commands.set_variables_request(
                [(commands.BASIC_AUTH_PASSWORD_201, "x" * 16)]
            ),
        },
    ),
)


def commands_sent(version: str) -> dict[str, list[str]]:
    """action -> the ``OcppServer`` methods that send it in ``version``."""
    out: dict[str, list[str]] = {}
    for command in _COMMANDS:
        build = command.build[version]
        if build is not None:
            out.setdefault(build()[0], []).append(command.method)
    return out


def _from_charger(version: str, action: str) -> str:
    if action not in lib.known_actions(version):
        return "—"
    if action not in lib.routed_actions(CHARGE_POINT_CLASSES[version]):
        return "refused: `NotSupported`"
    if action in METER_VALUE_LISTS[version]:
        return "handled; bad sampled values tolerated or skipped"
    return "handled"


def _while_pending(action: str) -> str:
    answered = [v for v in VERSIONS if action in PENDING_ALLOWED[v]]
    present = [v for v in VERSIONS if action in lib.known_actions(v)]
    if answered == present:
        return "answered"
    if not answered:
        return "`SecurityError`"
    return "; ".join(
        f"{v}: {'answered' if v in answered else '`SecurityError`'}" for v in present
    )


def _from_edge(version: str, action: str, sent: Mapping[str, list[str]]) -> str:
    if action not in lib.known_actions(version):
        return "—"
    methods = sent.get(action)
    if not methods:
        return "never sent"
    return "sent: " + ", ".join(f"`{m}`" for m in methods)


def matrix_markdown() -> str:
    """The two tables (charger -> edge, edge -> charger) and their notes."""
    by_charger = sorted(set().union(*CHARGER_INITIATED.values()))
    rows = [
        "**Charger -> edge** (a CALL the charger sends):",
        "",
        "| message | 1.6 | 2.0.1 | while Pending | quirk setting |",
        "|---|---|---|---|---|",
    ]
    for action in by_charger:
        rows.append(
            f"| {action} | {_from_charger('1.6', action)} | "
            f"{_from_charger('2.0.1', action)} | {_while_pending(action)} | "
            f"{_NOTES.get(action, '')} |"
        )
    sent = {v: commands_sent(v) for v in VERSIONS}
    to_charger = sorted(
        (lib.known_actions("1.6") | lib.known_actions("2.0.1"))
        - set().union(*CHARGER_INITIATED.values())
    )
    used = [a for a in to_charger if any(a in sent[v] for v in VERSIONS)]
    unused = [a for a in to_charger if a not in used]
    rows += [
        "",
        "**Edge -> charger** (a CALL the edge sends; the charger's CALLERROR reaches "
        "the caller as `CommandFailed` with its code):",
        "",
        "| message | 1.6 | 2.0.1 |",
        "|---|---|---|",
    ]
    for action in used:
        rows.append(
            f"| {action} | {_from_edge('1.6', action, sent['1.6'])} | "
            f"{_from_edge('2.0.1', action, sent['2.0.1'])} |"
        )
    rows += [
        "",
        "Never sent by the edge: DataTransfer, " + ", ".join(unused) + ". A charger "
        "that sends one of these (DataTransfer aside) gets `NotSupported`, as for "
        "every action of the edge -> charger direction; an action its version "
        "does not know gets `NotImplemented`.",
        "",
        "Every charger -> edge message is checked against the OCPP JSON schema of "
        "its version first; a refusal is answered with the schema's code "
        "(`FormationViolation`, `OccurenceConstraintViolation`, "
        "`TypeConstraintViolation`, `ProtocolError` in 1.6; `FormatViolation`, "
        "`OccurrenceConstraintViolation`, `TypeConstraintViolation`, "
        "`ProtocolError` in 2.0.1). For meter values (MeterValues, 1.6 "
        "StopTransaction `transactionData`, 2.0.1 TransactionEvent `meterValue`) "
        "one bad sampled value never refuses the message, for every charger: it is "
        "tolerated (mended) or skipped and counted "
        "(`fusebox_ocpp_values_tolerated_total`, "
        "`fusebox_ocpp_values_skipped_total`, by charger and reason); "
        'only a message with no salvageable data is refused. `validation = "off"` '
        "(or `lenient = true`) turns the schema check off for a charger.",
    ]
    return "\n".join(rows) + "\n"


def readme_matrix(readme_text: str) -> str:
    """The README's matrix between ``MATRIX_BEGIN`` and ``MATRIX_END`` (stripped);
    ``ValueError`` when the markers are missing or out of order."""
    start = readme_text.find(MATRIX_BEGIN)
    end = readme_text.find(MATRIX_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError(
            f"the README has no interop matrix between {MATRIX_BEGIN!r} and "
            f"{MATRIX_END!r}: paste `python -m edge.ocpp.interop` between them"
        )
    return readme_text[start + len(MATRIX_BEGIN) : end].strip()


def main(argv: list[str] | None = None) -> int:
    """Print the matrix; exit 1 when the README's differs."""
    parser = argparse.ArgumentParser(prog="python -m edge.ocpp.interop")
    parser.add_argument(
        "--readme", type=Path, default=Path(__file__).resolve().parents[2] / "README.md"
    )
    args = parser.parse_args(argv)
    sys.stdout.write(matrix_markdown())
    try:
        same = readme_matrix(args.readme.read_text(encoding="utf-8")) == (
            matrix_markdown().strip()
        )
    except (OSError, ValueError) as err:
        print(f"{args.readme}: {err}", file=sys.stderr)
        return 1
    if not same:
        print(f"{args.readme}: the interop matrix differs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
