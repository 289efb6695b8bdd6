"""The meter's ledger: one JSON line per reading the broker acknowledged."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protocols.readings import ts_to_ms

log = logging.getLogger("fusebox.sim.meter")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One published and acknowledged reading, as written to the ledger."""

    n: int
    device: str
    format: str
    topic: str
    ts: datetime
    import_energy_wh: float
    export_energy_wh: float
    power_w: float
    phase_import_energy_wh: tuple[float, ...] | None = None

    def to_json(self) -> str:
        """The entry as one ledger line (without the newline)."""
        record: dict[str, Any] = {
            "n": self.n,
            "device": self.device,
            "format": self.format,
            "topic": self.topic,
            "ts": self.ts.isoformat(),
            "ts_ms": ts_to_ms(self.ts),
            "import_energy_wh": self.import_energy_wh,
            "export_energy_wh": self.export_energy_wh,
            "power_w": self.power_w,
        }
        if self.phase_import_energy_wh is not None:
            record["phase_import_energy_wh"] = list(self.phase_import_energy_wh)
        return json.dumps(record, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> LedgerEntry:
        """Parse a ledger line; raises ``ValueError`` if it is not one."""
        try:
            record = json.loads(line)
            phases = record.get("phase_import_energy_wh")
            return cls(
                n=int(record["n"]),
                device=str(record["device"]),
                format=str(record["format"]),
                topic=str(record["topic"]),
                ts=datetime.fromisoformat(record["ts"]).astimezone(UTC),
                import_energy_wh=float(record["import_energy_wh"]),
                export_energy_wh=float(record["export_energy_wh"]),
                power_w=float(record["power_w"]),
                phase_import_energy_wh=None
                if phases is None
                else tuple(float(v) for v in phases),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a ledger line: {line[:80]!r} ({exc})") from None


def read_ledger(path: Path) -> Iterator[LedgerEntry]:
    """Every complete line of a ledger, in order (a torn last line is skipped)."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.endswith("\n") and line.strip():
                yield LedgerEntry.from_json(line)


def last_ledger_entry(path: Path) -> LedgerEntry | None:
    """The last complete entry of the ledger at ``path``, or ``None`` if it does
    not exist or is empty. A torn last line (the process died while writing it) is
    cut off so that appending continues on a line boundary."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    with path.open("rb+") as ledger:
        tail_start = max(0, size - 65536)
        ledger.seek(tail_start)
        tail = ledger.read()
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            log.warning("ledger %s ends with a torn line; cutting it off", path)
            ledger.truncate(tail_start + cut)
            tail = tail[:cut]
    for raw in reversed(tail.splitlines()):
        if raw.strip():
            return LedgerEntry.from_json(raw.decode("utf-8"))
    return None
