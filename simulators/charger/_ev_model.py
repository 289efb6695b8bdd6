"""The EV model on the connectors: charging state and the steps that move
power and energy."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from simulators.charger._connectors import Connector
from simulators.charger._profiles import ProfilesLayer


class EvModelLayer(ProfilesLayer):
    """The EVs charge at what the profiles offer; meter values fall due."""

    def _update_charging(self, connector: Connector, now: datetime) -> None:
        """Charging state of a connector with a transaction, from the EV and the
        offered limit; a change is reported (2.0.1: also as a TransactionEvent)."""
        if connector.tx is None or connector.ev is None:
            return
        offered_w = self.offered_limit_w(connector, now)
        connector.offered_w = offered_w
        ev = connector.ev
        if not connector.operative:
            status = "SuspendedEVSE"
        elif ev.full:
            status = "SuspendedEV"
        elif ev.power_for(offered_w) <= 0:
            status = "SuspendedEVSE"
        else:
            status = "Charging"
        if status != connector.status:
            connector.status = status
            self.status_dirty.set()
            if self.version == "2.0.1":
                self.enqueue(
                    "meter",
                    "TransactionEvent",
                    self._event_201(
                        connector, "Updated", "ChargingStateChanged", now, "Other"
                    ),
                    connector,
                )

    def tick(self, dt_real_s: float) -> None:
        """Advance every EV by ``dt_real_s * speed`` simulated seconds (the
        clock's speed when it is simulated, else ``--speed``)."""
        now = self.clock()
        mono = self.clock_s()
        for connector in self.connectors.values():
            if connector.tx is None or connector.ev is None:
                continue
            self._update_charging(connector, now)
            offered = connector.offered_w if connector.operative else 0.0
            power_w, energy_wh = connector.ev.step(dt_real_s * self.ev_speed, offered)
            connector.power_w = power_w
            connector.energy_wh += energy_wh
            if mono >= connector.next_meter_at:
                connector.next_meter_at = mono + self.meter_interval_s
                self._queue_meter_values(connector, now)
        if self.power_listener is not None:
            self.power_listener()

    def tick_interval_s(self) -> float:
        """Real seconds between EV steps: a quarter of the meter interval, at most
        0.5 s, and at most 10 simulated seconds on a simulated clock (the EV
        follows a new limit that soon)."""
        tick_s = min(0.5, self.real_s(self.meter_interval_s) / 4)
        if self.simulated:
            tick_s = min(tick_s, self.config.clock.real_seconds(10.0))
        return max(0.01, tick_s)

    async def _simulate(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_interval_s())
            mono = time.monotonic()
            self.tick(mono - last)
            last = mono
