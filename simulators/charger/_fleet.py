"""Fleet mode (``--fleet N`` chargers in one process) and the power file the
process's EVs share (``--power-file``)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from simulators.charger._config import ChargerConfig
from simulators.charger._core import utc_text
from simulators.charger._sim import ChargerSim

log = logging.getLogger("fusebox.sim.charger")


def _fleet_configs(base: ChargerConfig, fleet: int | None) -> list[ChargerConfig]:
    if fleet is None:
        return [base]
    configs = []
    for n in range(1, fleet + 1):
        charger_id = f"{base.charger_id}-{n:04d}"
        state = base.state_path
        if state is not None:
            state = state.with_name(f"{state.stem}.{charger_id}{state.suffix}")
        configs.append(
            ChargerConfig(
                **{
                    **{f: getattr(base, f) for f in base.__dataclass_fields__},
                    "charger_id": charger_id,
                    "state_path": state,
                }
            )
        )
    return configs


class PowerFile:
    """``--power-file``: the total power the process's EVs draw now, as JSON,
    replaced atomically when it changes and at least every ``every_s`` seconds."""

    def __init__(
        self, path: Path, sims: list[ChargerSim], *, every_s: float = 1.0
    ) -> None:
        self.path = path
        self.sims = sims
        self.every_s = every_s
        self._last: dict[str, float] | None = None
        self._written = 0.0
        self._failed = False

    def update(self) -> None:
        """Write the file if the power changed or ``every_s`` has passed."""
        chargers = {
            sim.config.charger_id: round(
                sum(c.power_w for c in sim.connectors.values()), 1
            )
            for sim in self.sims
        }
        mono = time.monotonic()
        if chargers == self._last and mono - self._written < self.every_s:
            return
        document = {
            "power_w": round(sum(chargers.values()), 1),
            "ts": utc_text(self.sims[0].clock()),
            "chargers": chargers,
        }
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps(document), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            if not self._failed:
                log.error("cannot write the power file %s: %s", self.path, exc)
            self._failed = True
            return
        self._failed = False
        self._last = chargers
        self._written = mono
