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
