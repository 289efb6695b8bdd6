"""What a charger keeps on disk: its state file and the ledger of answered
transaction messages."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO


class StateStore:
    """The charger's durable state as one JSON document, replaced atomically."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "profiles": [],
            "queue": [],
            "energy_wh": {},
            "tx_ids": {},
            "seq_no": 0,
            "config": {},
            "open_tx": {},
            "clean_shutdown": False,
        }
        if path is not None and path.exists():
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self.data.update(loaded)

    def save(self) -> None:
        """Write the state file (a temporary file, then an atomic rename)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, self.path)


class Ledger:
    """Append-only JSON lines, flushed per line; shared by a fleet."""

    def __init__(self, path: Path | None) -> None:
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` as one JSON line."""
        if self._file is not None:
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file (nothing to do without a ledger)."""
        if self._file is not None:
            self._file.close()
