"""Clocks: the real one, and simulated time shared by every process of a scenario.

A whole night of charging must run in seconds in tests and demos, with the edge,
the simulated meters and chargers and the cloud scheduler all agreeing on what
time it is. They do so without talking to each other: each process gets the same
**clock spec** (flag ``--clock`` or variable ``FUSEBOX_CLOCK``)::

    real                                      the wall clock (default)
    sim:2026-01-15T16:00:00Z@1764345600.25x600

which reads "simulated time was 2026-01-15T16:00:00Z at real (Unix) time
1764345600.25 and runs 600 times faster". Simulated time is then a pure function
of the real clock, identical in every process: ``start + (real - anchor) * speed``.
A scenario runner picks ``anchor`` = now when it starts the processes.

``Clock.now()`` gives aware UTC datetimes; ``Clock.real_seconds(s)`` converts a
simulated duration into the real seconds to sleep (``asyncio.sleep`` stays with
the caller, and so does reading the real clock: a ``Clock`` is given its
``real`` source, ``time.time`` outside tests; this module reads neither the
environment nor the time itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from protocols.times import iso_z

__all__ = ["CLOCK_ENV", "Clock", "ClockSpecError", "sim_spec"]

CLOCK_ENV = "FUSEBOX_CLOCK"
_SPEC = re.compile(
    r"^sim:(?P<start>[^@]+)@(?P<anchor>[0-9]+(\.[0-9]+)?)x(?P<speed>[0-9]+(\.[0-9]+)?)$"
)
_MAX_SPEED = 100_000.0


class ClockSpecError(ValueError):
    """A clock spec that cannot be read; the message shows the expected form."""


@dataclass(frozen=True)
class Clock:
    """Real time (``speed`` 1, no ``start``) or simulated time.

    ``real`` is the wall-clock source (seconds since the epoch): ``time.time``,
    or a test's own. It is required so that this module reads no clock."""

    start: datetime | None = None
    anchor: float = 0.0
    speed: float = 1.0
    real: Callable[[], float] = field(kw_only=True)

    @classmethod
    def parse(cls, spec: str | None, *, real: Callable[[], float]) -> Clock:
        """A clock from its spec (see the module docstring); None or "" is real."""
        if spec is None or spec.strip() in ("", "real"):
            return cls(real=real)
        match = _SPEC.match(spec.strip())
        if match is None:
            raise ClockSpecError(
                f"clock spec {spec!r} is not 'real' or "
                "'sim:<ISO start>@<real anchor seconds>x<speed>', e.g. "
                "'sim:2026-01-15T16:00:00Z@1764345600x600'"
            )
        text = match["start"].replace("Z", "+00:00")
        try:
            start = datetime.fromisoformat(text)
        except ValueError:
            raise ClockSpecError(
                f"clock start {match['start']!r} is not ISO 8601"
            ) from None
        if start.tzinfo is None:
            raise ClockSpecError(f"clock start {match['start']!r} needs a zone (Z)")
        speed = float(match["speed"])
        if not 0 < speed <= _MAX_SPEED:
            raise ClockSpecError(
                f"clock speed {speed:g} must be in (0, {_MAX_SPEED:g}]"
            )
        return cls(start.astimezone(UTC), float(match["anchor"]), speed, real=real)

    @property
    def simulated(self) -> bool:
        return self.start is not None

    def now(self) -> datetime:
        """Now, aware UTC (simulated if this clock is)."""
        real = self.real()
        if self.start is None:
            return datetime.fromtimestamp(real, UTC)
        return self.start + timedelta(seconds=(real - self.anchor) * self.speed)

    def timestamp(self) -> float:
        """Now as seconds since the epoch (simulated if this clock is)."""
        return self.now().timestamp()

    def real_seconds(self, simulated_s: float) -> float:
        """Real seconds that pass while ``simulated_s`` simulated seconds do."""
        return max(0.0, simulated_s) / self.speed

    def spec(self) -> str:
        """The spec that gives this clock in another process."""
        if self.start is None:
            return "real"
        return sim_spec(self.start, anchor=self.anchor, speed=self.speed)


def sim_spec(start: datetime, *, anchor: float, speed: float) -> str:
    """``sim:<start>@<anchor>x<speed>`` for ``Clock.parse``."""
    if start.tzinfo is None:
        raise ClockSpecError("the simulated start needs a time zone")
    iso = iso_z(start, "auto")
    return f"sim:{iso}@{anchor:.3f}x{speed:g}"
