"""An electric vehicle's battery as an AC charger sees it (pure: ``dt`` passed in).

The model the charge-point simulator (``simulators.charger``) plugs into a connector::

    ev = EvBattery(capacity_kwh=60, soc_pct=20, max_current_a=16, phases=3)
    power_w, energy_wh = ev.step(dt_s=10, offered_limit_w=7_400)

* The on-board charger draws at most ``max_current_a`` per phase on ``phases``
  phases at ``VOLTAGE_V``, and never more than the limit the charger offers.
* Above ``taper_start_pct`` state of charge the current it accepts falls linearly
  to ``taper_end_current_a`` at 100 %; a full battery draws nothing.
* An offer below ``MIN_CHARGE_CURRENT_A`` per phase (IEC 61851: 6 A) is not enough to
  charge: the EV draws nothing, the charger reports SuspendedEVSE.
* ``energy_wh`` is grid-side energy (what the charger's register counts);
  ``efficiency`` of it reaches the battery. Each step's energy is exactly
  ``power_w * dt_s / 3600``, so the register is the integral of the reported power.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

VOLTAGE_V: Final = 230.0
"""Nominal line-to-neutral voltage."""
MIN_CHARGE_CURRENT_A: Final = 6.0
"""Smallest per-phase current an AC EV charges with (IEC 61851-1)."""


@dataclass(slots=True)
class EvBattery:
    """One EV: battery, on-board charger limits and state of charge (mutable)."""

    capacity_kwh: float = 60.0
    soc_pct: float = 20.0
    max_current_a: float = 16.0
    phases: int = 3
    efficiency: float = 0.9
    taper_start_pct: float = 80.0
    taper_end_current_a: float = 1.0

    def __post_init__(self) -> None:
        if self.capacity_kwh <= 0:
            raise ValueError(f"capacity_kwh must be > 0, got {self.capacity_kwh}")
        if not 0 <= self.soc_pct <= 100:
            raise ValueError(f"soc_pct must be 0..100, got {self.soc_pct}")
        if self.phases not in (1, 2, 3):
            raise ValueError(f"phases must be 1, 2 or 3, got {self.phases}")
        if self.max_current_a <= 0:
            raise ValueError(f"max_current_a must be > 0, got {self.max_current_a}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")

    @classmethod
    def from_max_power(
        cls,
        *,
        capacity_kwh: float,
        soc_pct: float,
        max_power_kw: float,
        phases: int,
        efficiency: float = 0.9,
    ) -> EvBattery:
        """An EV whose on-board charger takes ``max_power_kw`` on ``phases``."""
        return cls(
            capacity_kwh=capacity_kwh,
            soc_pct=soc_pct,
            max_current_a=max_power_kw * 1000.0 / (VOLTAGE_V * phases),
            phases=phases,
            efficiency=efficiency,
        )

    @property
    def full(self) -> bool:
        """True once the battery is at 100 % state of charge."""
        return self.soc_pct >= 100.0

    @property
    def max_power_w(self) -> float:
        """Power the EV accepts now with an unlimited offer."""
        return self.accepted_current_a() * VOLTAGE_V * self.phases

    def accepted_current_a(self) -> float:
        """Per-phase current the EV accepts at its present state of charge."""
        if self.full:
            return 0.0
        if self.soc_pct <= self.taper_start_pct:
            return self.max_current_a
        span = 100.0 - self.taper_start_pct
        fraction_left = (100.0 - self.soc_pct) / span
        end = min(self.taper_end_current_a, self.max_current_a)
        return end + (self.max_current_a - end) * fraction_left

    def power_for(self, offered_limit_w: float | None) -> float:
        """Power drawn for ``offered_limit_w`` total watts (``None``: no limit)."""
        accepted_w = self.max_power_w
        if offered_limit_w is None:
            return accepted_w
        offered_a = max(offered_limit_w, 0.0) / (VOLTAGE_V * self.phases)
        if offered_a < MIN_CHARGE_CURRENT_A:
            return 0.0
        return min(accepted_w, offered_limit_w)

    def step(self, dt_s: float, offered_limit_w: float | None) -> tuple[float, float]:
        """Charge for ``dt_s`` seconds; return ``(power_w, energy_wh)`` drawn.

        The power is held over the step (set at its start); a step that would
        overfill the battery draws only what fills it, and ``power_w`` is then the
        step's average so that ``energy_wh == power_w * dt_s / 3600`` always holds.
        """
        if dt_s <= 0:
            return 0.0, 0.0
        power_w = self.power_for(offered_limit_w)
        energy_wh = power_w * dt_s / 3600.0
        room_wh = (100.0 - self.soc_pct) / 100.0 * self.capacity_kwh * 1000.0
        if energy_wh * self.efficiency >= room_wh:
            energy_wh = room_wh / self.efficiency
            power_w = energy_wh * 3600.0 / dt_s
            self.soc_pct = 100.0
        else:
            self.soc_pct += energy_wh * self.efficiency / (self.capacity_kwh * 10.0)
        return power_w, energy_wh

    def phase_currents_a(self, power_w: float) -> tuple[float, ...]:
        """Per-phase currents of ``power_w`` spread evenly over the EV's phases."""
        current_a = power_w / (VOLTAGE_V * self.phases)
        return tuple(current_a for _ in range(self.phases))
