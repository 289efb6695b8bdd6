"""The bottom layer of ``ChargerSim``: its configuration, state, connectors, clock
and the helpers every other layer uses."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from protocols.ocpp import InstalledProfile, format_utc
from simulators.charger._config import ChargerConfig
from simulators.charger._connectors import Connector
from simulators.charger._session import _Session
from simulators.charger._state import Ledger, StateStore
from simulators.ev import EvBattery

log = logging.getLogger("fusebox.sim.charger")


def utc_text(moment: datetime) -> str:
    """``moment`` as OCPP's UTC text (``protocols.ocpp.format_utc``)."""
    return format_utc(moment)


class ChargerCore:
    """One simulated charge point's data: configuration, state file, connectors,
    clock, events and tasks. The layers above add behaviour, one concern each."""

    def __init__(
        self,
        config: ChargerConfig,
        *,
        ledger: Ledger,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.version = config.version
        self.ledger = ledger
        self.clock: Callable[[], datetime] = clock or config.clock.now
        self.power_listener: Callable[[], None] | None = None
        self.state = StateStore(config.state_path)
        registers = self.state.data["energy_wh"]
        self.connectors = {
            c: Connector(id=c, energy_wh=float(registers.get(str(c), 0.0)))
            for c in range(1, config.connectors + 1)
        }
        values = self.state.data["config"]
        self.heartbeat_s: float | None = config.heartbeat_s
        if "HeartbeatInterval" in values:
            self.heartbeat_s = float(values["HeartbeatInterval"])
        self.meter_interval_s = float(
            values.get("MeterValueSampleInterval", config.meter_interval_s)
        )
        self.session: _Session | None = None
        # the CSMS answered this connection's boot Accepted: until then only
        # BootNotification (and messages the CSMS triggers) may be sent
        # (1.6 §4.2, 2.0.1 B02.FR.09: else SecurityError)
        self.accepted = False
        self.queue_changed = asyncio.Event()
        self.status_dirty = asyncio.Event()
        self.reconnect_now = asyncio.Event()
        self.heartbeat_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._installed: list[InstalledProfile] | None = None
        self._jitter = random.Random()
        self.reconnects = 0
        self.acked = 0
        self.scenario_done = config.scenario is None

    # -- helpers

    @property
    def simulated(self) -> bool:
        """True when the charger runs on a shared simulated clock."""
        return self.config.clock.simulated

    def clock_s(self) -> float:
        """A rising count of the charger's seconds: simulated epoch seconds on a
        simulated clock, else the monotonic clock."""
        if self.simulated:
            return self.config.clock.timestamp()
        return time.monotonic()

    def real_s(self, charger_s: float) -> float:
        """Real seconds to sleep while ``charger_s`` of the charger's seconds pass."""
        if self.simulated:
            return self.config.clock.real_seconds(charger_s)
        return max(0.0, charger_s)

    @property
    def ev_speed(self) -> float:
        """EV seconds per real second."""
        return self.config.clock.speed if self.simulated else self.config.speed

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task (handlers never await calls to the CSMS)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "charger %s: task failed",
                self.config.charger_id,
                exc_info=task.exception(),
            )

    def _new_ev(self) -> EvBattery:
        cfg = self.config
        return EvBattery.from_max_power(
            capacity_kwh=cfg.ev_battery_kwh,
            soc_pct=cfg.ev_soc_pct,
            max_power_kw=cfg.ev_max_kw,
            phases=cfg.phases,
        )

    @property
    def queue(self) -> list[dict[str, Any]]:
        """The undelivered transaction messages, oldest first (in the state file)."""
        return self.state.data["queue"]  # type: ignore[no-any-return]

    @property
    def tx_ids(self) -> dict[str, int]:
        """1.6: the CSMS's transaction id per local transaction reference."""
        return self.state.data["tx_ids"]  # type: ignore[no-any-return]

    def _save(self) -> None:
        self.state.data["energy_wh"] = {
            str(c.id): c.energy_wh for c in self.connectors.values()
        }
        self.state.data["saved_at"] = utc_text(self.clock())
        self.state.save()

    @property
    def idle(self) -> bool:
        """Scenario finished, no transaction open, nothing left to deliver."""
        return (
            self.scenario_done
            and not self.queue
            and all(c.tx is None for c in self.connectors.values())
        )
