"""Capped exponential backoff with full jitter (AWS architecture blog, 2015).

Full jitter spreads a reconnect storm of thousands of gateways evenly over the
window instead of synchronising them into waves. Pure: the caller passes the
random source, so tests can make it deterministic (or instant with ``base_s=0``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.5
    cap_s: float = 60.0

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, 62))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A delay drawn uniformly from ``[0, ceiling(attempt)]``."""
        return rng.uniform(0.0, self.ceiling(attempt))


@dataclass(slots=True)
class Reconnect:
    """The one reconnect rule every connection loop consults (uplink, meters,
    ingest, scheduler, simulators): after a failure wait a full-jitter delay
    that grows per consecutive failure up to ``backoff.cap_s``; say so once per
    outage, not per attempt; start again from the shortest delay once through.

    Pure: the shell does the sleeping and logging::

        try:
            async with connect() as link:
                if reconnect.succeeded():
                    log.info("connected again")
                ...
        except LinkError as exc:
            delay_s = reconnect.failed(rng)
            if reconnect.first_failure:
                log.warning("link lost (%s); retrying", exc)
            await asyncio.sleep(delay_s)
    """

    backoff: Backoff
    failures: int = 0  # consecutive, since the last success
    outages: int = 0  # ended by a success

    @property
    def first_failure(self) -> bool:
        """Whether the last ``failed`` began an outage (log it then, once)."""
        return self.failures == 1

    def failed(self, rng: random.Random) -> float:
        """One more failure in a row; returns the seconds to wait."""
        delay_s = self.backoff.delay(self.failures, rng)
        self.failures += 1
        return delay_s

    def succeeded(self) -> bool:
        """Connected; returns whether that ended an outage."""
        ended = self.failures > 0
        if ended:
            self.outages += 1
        self.failures = 0
        return ended
