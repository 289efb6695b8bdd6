"""Throttling of failed logins by exponential delay, never by a hard lock (issue 10).

Pure: the caller passes the time (``now_s``, any monotonic seconds) and does the
refusing (HTTP 429 with ``Retry-After``). The cloud API keys it by (account,
client address) pairs and, with a much higher allowance, by address alone
(``cloud.auth.LoginThrottle``); the edge's local API by (user, address)
(``edge.local_api._throttle``).

**Policy** (``DelayPolicy``). The first ``free_failures`` failures of a key cost
nothing; from then on each failure makes the key wait ``first_delay_s`` doubled
per further failure, capped at ``max_delay_s``. With the defaults (3 free, 1 s,
cap 900 s)::

    failures in a row   0-2   3    4    5    6  ...  12     13 and more
    wait after (s)      0     1    2    4    8  ...  512    900

A key that has not failed for ``forget_after_s`` starts again from zero, and a
success clears it. Attempts made while a key must wait are refused before the
password is checked, so they neither count nor extend the wait.

**Why not a lock.** A counter per account lets anyone lock an owner out by
typing wrong passwords for their e-mail; a counter per address locks out every
user behind one NAT. Keyed by the pair, an attacker only slows down their own
guesses: the owner logging in from their own address is never delayed by them.

**Bounded memory** (``Throttle``). At most ``max_keys`` keys are kept. When full,
keys quiet for ``forget_after_s`` go first, then the keys with the fewest
failures (oldest first among equals), so flooding the table with fresh keys
cannot wash out the counter of a key that has failed many times.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["DelayPolicy", "Throttle"]

_MAX_DOUBLINGS = 62  # 2**62 s is far beyond any cap; keeps the float finite


@dataclass(frozen=True, slots=True)
class DelayPolicy:
    """How long a key waits after ``n`` failures in a row (see the module)."""

    free_failures: int = 3
    first_delay_s: float = 1.0
    max_delay_s: float = 900.0
    forget_after_s: float = 86_400.0

    def __post_init__(self) -> None:
        if self.free_failures < 0:
            raise ValueError("free_failures must be 0 or more")
        if not 0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < first_delay_s <= max_delay_s")
        if self.forget_after_s < self.max_delay_s:
            raise ValueError(
                "forget_after_s must be at least max_delay_s, or a key would be "
                "forgotten before its wait is over"
            )

    def delay_s(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (0 while
        under ``free_failures``)."""
        if failures < self.free_failures:
            return 0.0
        doublings = min(failures - self.free_failures, _MAX_DOUBLINGS)
        return min(self.max_delay_s, self.first_delay_s * 2.0**doublings)


@dataclass(slots=True)
class _Entry:
    failures: int
    last_s: float


class Throttle:
    """Failures per key and the wait they impose, under one ``DelayPolicy``.

    ``retry_after_s(key, now_s)`` before checking a password (refuse while > 0),
    then ``failed(key, now_s)`` or ``succeeded(key)``.
    """

    def __init__(self, policy: DelayPolicy, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.policy = policy
        self.max_keys = max_keys
        self._entries: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def failures(self, key: Hashable, now_s: float) -> int:
        """The failures in a row ``key`` has now (0 once forgotten)."""
        entry = self._live(key, now_s)
        return entry.failures if entry else 0

    def retry_after_s(self, key: Hashable, now_s: float) -> float:
        """Seconds until ``key`` may try again; 0 if it may now."""
        entry = self._live(key, now_s)
        if entry is None:
            return 0.0
        until = entry.last_s + self.policy.delay_s(entry.failures)
        return max(0.0, until - now_s)

    def failed(self, key: Hashable, now_s: float) -> float:
        """Count one failure of ``key`` at ``now_s``; returns the wait it now
        has (``retry_after_s`` right after)."""
        entry = self._live(key, now_s)
        if entry is None:
            if len(self._entries) >= self.max_keys:
                self._make_room(now_s)
            entry = self._entries[key] = _Entry(0, now_s)
        entry.failures += 1
        entry.last_s = now_s
        return self.policy.delay_s(entry.failures)

    def succeeded(self, key: Hashable) -> None:
        """Forget ``key``'s failures (a correct password)."""
        self._entries.pop(key, None)

    def _live(self, key: Hashable, now_s: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now_s - entry.last_s >= self.policy.forget_after_s:
            del self._entries[key]
            return None
        return entry

    def _make_room(self, now_s: float) -> None:
        forget = self.policy.forget_after_s
        for key in [k for k, e in self._entries.items() if now_s - e.last_s >= forget]:
            del self._entries[key]
        if len(self._entries) < self.max_keys:
            return
        # still full of live keys: drop the half that says least (fewest
        # failures, then oldest), keeping the keys that have failed most
        order = sorted(
            self._entries,
            key=lambda k: (self._entries[k].failures, self._entries[k].last_s),
        )
        for key in order[: max(1, len(order) // 2)]:
            del self._entries[key]
