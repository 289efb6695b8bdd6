"""The simulated gateway's outbox and send plan: the edge's semantics in memory.

``HeldSeqs`` is the outbox as the uplink sees it: sequence numbers assigned at
append, strictly rising, held until the cloud acknowledges them (``prune_range``
for one stored batch, ``prune_through`` for the cloud's contiguous watermark) or
rejects them (quarantined: counted and dropped from the sendable rows). Held
numbers are kept as disjoint ranges, so a gateway with an hour of backlog costs a
few tuples; the readings themselves are in the gateway's ledger. Not simulated:
the edge's full-disk thinning (a fleet gateway never runs out of room).

``FleetSendPlan`` is the edge's ``edge.uplink.SendPlan`` rule for rule (the
simulators may not import the edge, so it is restated here; a test runs both on
the same event sequence and compares every decision):

* at most ``window`` batches in flight; ranges are contiguous and cover every
  sequence number from ``acked_through + 1`` once per pass;
* on each connection the outbox splits at the last sequence number: records
  appended since (live) go first, after lingering ``linger_s`` for company;
  batches due for a resend next; then the backlog, oldest first;
* no answer within ``ack_timeout_s``: resent after a full-jitter backoff;
* ``Busy(retry_after_s)``: nothing is sent until ``retry_after_s`` plus up to a
  quarter more (jitter, so a fleet told "30 s" does not return in lockstep);
* an ingest worker coming or going: everything in flight is due again at once.

Pure: no I/O, ``now`` passed in, the random source given.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

from protocols.backoff import Backoff

__all__ = ["FleetSendPlan", "HeldSeqs"]


@dataclass(slots=True)
class HeldSeqs:
    """The sequence numbers an outbox still holds, as sorted disjoint ranges."""

    last_seq: int = 0
    acked_through: int = 0
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    count: int = 0

    def append(self, n: int) -> tuple[int, int]:
        """Assign the next ``n`` sequence numbers; returns ``(first, last)``."""
        first, last = self.last_seq + 1, self.last_seq + n
        if self.ends and self.ends[-1] == first - 1:
            self.ends[-1] = last
        else:
            self.starts.append(first)
            self.ends.append(last)
        self.last_seq = last
        self.count += n
        return first, last

    def remove(self, first: int, last: int) -> int:
        """Forget every held number in ``first..last``; returns how many."""
        if last < first or not self.starts:
            return 0
        i = max(0, bisect.bisect_right(self.ends, first - 1))
        removed = 0
        new_starts: list[int] = []
        new_ends: list[int] = []
        j = i
        while j < len(self.starts) and self.starts[j] <= last:
            s, e = self.starts[j], self.ends[j]
            lo, hi = max(s, first), min(e, last)
            if lo <= hi:
                removed += hi - lo + 1
                if s < lo:
                    new_starts.append(s)
                    new_ends.append(lo - 1)
                if hi < e:
                    new_starts.append(hi + 1)
                    new_ends.append(e)
            else:
                new_starts.append(s)
                new_ends.append(e)
            j += 1
        self.starts[i:j] = new_starts
        self.ends[i:j] = new_ends
        self.count -= removed
        return removed

    def prune_range(self, first: int, last: int) -> int:
        """The cloud stored batch ``first..last``."""
        return self.remove(first, last)

    def prune_through(self, seq: int) -> int:
        """The cloud stored everything up to ``seq``."""
        removed = self.remove(1, seq)
        self.acked_through = max(self.acked_through, seq)
        return removed

    def read(self, first: int, last: int | None, limit: int) -> list[int]:
        """Up to ``limit`` held numbers in ``first..last`` (``None``: no end)."""
        end = self.last_seq if last is None else last
        out: list[int] = []
        i = bisect.bisect_right(self.ends, first - 1)
        while i < len(self.starts) and len(out) < limit:
            s, e = max(self.starts[i], first), min(self.ends[i], end)
            if s > end:
                break
            if s <= e:
                out.extend(range(s, min(e, s + limit - len(out) - 1) + 1))
            i += 1
        return out

    def holds(self, seq: int) -> bool:
        """Whether ``seq`` is still held (not acknowledged, not rejected)."""
        i = bisect.bisect_left(self.ends, seq)
        return i < len(self.starts) and self.starts[i] <= seq

    @property
    def oldest(self) -> int | None:
        """The lowest held sequence number, if any."""
        return self.starts[0] if self.starts else None


@dataclass(slots=True)
class _Flight:
    first: int
    last: int
    sent_at: float
    attempt: int


@dataclass(slots=True)
class FleetSendPlan:
    """What to send next and what is in flight (see the module docstring)."""

    acked_through: int
    live_from: int
    window: int
    ack_timeout_s: float
    backoff: Backoff
    rng: random.Random
    linger_s: float = 0.0
    backlog_next: int = 0
    live_next: int = 0
    live_since: float | None = None
    paused_until: float = 0.0
    in_flight: dict[int, _Flight] = field(default_factory=dict)
    # (due_at, first, last, attempt), kept sorted
    retry: list[tuple[float, int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.backlog_next = self.acked_through + 1
        self.live_next = max(self.live_from, self.backlog_next)

    @property
    def has_room(self) -> bool:
        """Whether the window allows one more batch."""
        return len(self.in_flight) < self.window

    def live_ready(self, now: float, waiting: int, batch_max: int) -> bool:
        """Whether ``waiting`` live records go now: a full batch at once, fewer
        once the oldest has lingered ``linger_s``."""
        if waiting <= 0:
            self.live_since = None
            return False
        if self.live_since is None:
            self.live_since = now
        return waiting >= batch_max or now - self.live_since >= self.linger_s

    def take_live(self, last: int) -> tuple[int, int]:
        """Live records up to ``last`` went into a batch: its range."""
        first = self.live_next
        self.live_next = last + 1
        self.live_since = None
        return first, last

    def due_retry(self, now: float) -> tuple[int, int, int] | None:
        """The first resend whose time has come: ``(first, last, attempt)``."""
        if now < self.paused_until:
            return None
        for k, (at, first, last, attempt) in enumerate(self.retry):
            if at <= now:
                del self.retry[k]
                return first, last, attempt
        return None

    def sent(self, first: int, last: int, now: float, attempt: int = 0) -> None:
        """Batch ``first..last`` is on its way; its ack timeout starts."""
        self.in_flight[first] = _Flight(first, last, now, attempt)

    def expire(self, now: float) -> list[tuple[int, int]]:
        """Batches whose answer is overdue move to the resend list (backoff)."""
        late = [
            f for f in self.in_flight.values() if now - f.sent_at >= self.ack_timeout_s
        ]
        for f in late:
            self.in_flight.pop(f.first)
            due = now + self.backoff.delay(f.attempt, self.rng)
            self.retry.append((due, f.first, f.last, f.attempt + 1))
        return [(f.first, f.last) for f in late]

    def acked(self, first: int, stored_through: int) -> bool:
        """An ack for the batch starting at ``first``; True if it was in flight."""
        hit = self.in_flight.pop(first, None) is not None
        if stored_through > self.acked_through:
            self.acked_through = stored_through
            covered = [k for k, f in self.in_flight.items() if f.last <= stored_through]
            for k in covered:
                self.in_flight.pop(k)
            self.retry = [r for r in self.retry if r[2] > stored_through]
        return hit

    def busy(self, first: int, retry_after_s: float, now: float) -> None:
        """The cloud refused the batch for now: pause all sending, then resend."""
        wait_s = retry_after_s * (1.0 + 0.25 * self.rng.random())
        self.paused_until = max(self.paused_until, now + wait_s)
        f = self.in_flight.pop(first, None)
        if f is not None:
            self.retry.append((now + wait_s, f.first, f.last, f.attempt + 1))

    def rejected(self, first: int) -> bool:
        """The batch starting at ``first`` was rejected; True if it was in flight."""
        return self.in_flight.pop(first, None) is not None

    def resend_in_flight(self, now: float) -> int:
        """Everything in flight is due again now (an ingest worker came or went);
        the attempt counts stay. Returns how many batches."""
        flights = list(self.in_flight.values())
        self.in_flight.clear()
        self.retry.extend((now, f.first, f.last, f.attempt) for f in flights)
        self.retry.sort()
        return len(flights)

    def next_wakeup(self, now: float) -> float:
        """Seconds until something may need doing without outside input."""
        times = [self.paused_until]
        if self.live_since is not None:
            times.append(self.live_since + self.linger_s)
        times.extend(r[0] for r in self.retry)
        times.extend(f.sent_at + self.ack_timeout_s for f in self.in_flight.values())
        ahead = [t - now for t in times if t > now]
        return min(ahead, default=1.0)
