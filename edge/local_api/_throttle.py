"""Throttling of wrong Basic-auth passwords on the local API (issue 10).

The pure policy of ``protocols.throttle``, keyed by (user name, client
address): after ``FREE_FAILURES`` wrong passwords in a row from one address,
each further try waits 1 s, doubling up to 15 min; the answer meanwhile is 429
with ``Retry-After``, before the password is looked at. A request with no
credentials (the browser asking for the login prompt) is no failure. The
installer on another address (or after the wait) is never held up by it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import HTTPException

from protocols.throttle import DelayPolicy, Throttle

__all__ = ["BasicAuthThrottle"]

FREE_FAILURES = 3
POLICY = DelayPolicy(free_failures=FREE_FAILURES, first_delay_s=1.0, max_delay_s=900.0)


class BasicAuthThrottle:
    """Wrong Basic-auth passwords per (user, address); ``clock`` in monotonic
    seconds (tests pass a fake one)."""

    def __init__(
        self,
        policy: DelayPolicy = POLICY,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.throttle = Throttle(policy, max_keys=max_keys)
        self.clock = clock

    def check(self, user: str, address: str) -> None:
        """Raise 429 with ``Retry-After`` while ``user`` must wait on
        ``address``."""
        wait = self.throttle.retry_after_s(_key(user, address), self.clock())
        if wait > 0:
            seconds = max(1, int(wait + 0.999))
            raise HTTPException(
                status_code=429,
                detail=f"too many wrong passwords; try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )

    def failed(self, user: str, address: str) -> None:
        """Count a wrong password of ``user`` from ``address``."""
        self.throttle.failed(_key(user, address), self.clock())

    def succeeded(self, user: str, address: str) -> None:
        """A right password: this pair starts afresh."""
        self.throttle.succeeded(_key(user, address))


def _key(user: str, address: str) -> tuple[str, str]:
    # a user name is the client's to choose: bound what one key can hold
    return user[:64], address
