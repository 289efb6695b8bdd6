"""What a gateway sends that the cloud must not store or plan with, item by item.

One bad value must never cost a batch, a gateway or a site. The ingest worker
used to hand a batch to PostgreSQL whole: a NUL character in a device id or in an
event (PostgreSQL's text and jsonb cannot hold one), a NaN inside an event, or
binary data there made the whole transaction fail, which the worker took for a
database outage: it answered every gateway "busy" and the batch came back
forever. And a session event whose charger id does not fit the lease's pattern
(``protocols.lease.ChargerId``: 1-48 of ``A-Za-z0-9*-_=:+|@.``) was folded into
``sessions``, after which the scheduler could not build that site's lease at all.

Seams (pure, no I/O):

* :func:`screen_batch` ``(batch) -> (batch, findings)``: the batch without the
  readings and events PostgreSQL cannot store (a stream whose device id holds a NUL;
  event data with a NUL, a non-finite number, binary or other non-JSON data, a
  non-text key, or nesting deeper than 32). Their sequence numbers stay covered,
  like thinned ones, so the gateway is acked for the whole range and moves on;
* :func:`charger_id_problem` ``(charger_id) -> reason | None``: the lease's rule,
  used by the ingest worker (a session with such an id is stored raw in
  ``events`` but never folded into ``sessions``) and by the scheduler (it skips
  such a charger and plans the rest of the site);
* :func:`compose_skipping`: the scheduler's ``compose_lease`` for a site that
  leaves out any charger whose part of the lease cannot be built (a connector
  over 64, a register the lease refuses, ...), found by composing each alone,
  and plans the others;
* :class:`Quarantine`: counts per reason, and logs each (gateway, reason) once at
  WARNING with one sample (the rest at DEBUG), so a gateway resending the same
  bad value cannot flood the log.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from protocols import contract
from protocols.lease import ChargerId
from protocols.planning.leasing import Composed, SiteInputs, compose_lease

__all__ = [
    "Finding",
    "Quarantine",
    "charger_id_problem",
    "compose_skipping",
    "screen_batch",
    "unstorable",
]

MAX_DEPTH = 32
_CHARGER_ID: TypeAdapter[str] = TypeAdapter(ChargerId)
_LOGGED_MAX = 10_000  # (gateway, reason) pairs remembered for log-once

# reasons, as counted and logged
DEVICE_ID_NUL = "device_id_nul"
EVENT_DATA_UNSTORABLE = "event_data_unstorable"
CHARGER_ID_PATTERN = "charger_id_pattern"
SESSION_EVENT_INVALID = "session_event_invalid"


@dataclass(frozen=True, slots=True)
class Finding:
    """One item quarantined: why (a reason above), whose, which seq, and a short
    sample of the bad value for the log."""

    reason: str
    gw: str
    seq: int
    detail: str


def charger_id_problem(charger_id: object) -> str | None:
    """Why ``charger_id`` cannot be in a lease (None if it can)."""
    try:
        _CHARGER_ID.validate_python(charger_id)
    except ValidationError:
        return (
            f"charger id {_sample(charger_id)} is outside the pattern 1-48 of "
            "A-Z a-z 0-9 * - _ = : + | @ ."
        )
    return None


def unstorable(data: object, depth: int = 0) -> str | None:
    """Why ``data`` (an event's, from MessagePack) cannot be stored as PostgreSQL
    jsonb, or None if it can."""
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH}"
    if data is None or isinstance(data, bool | int):
        return None
    if isinstance(data, str):
        return "a NUL character in a text" if "\x00" in data else None
    if isinstance(data, float):
        return None if math.isfinite(data) else f"a non-finite number ({data})"
    if isinstance(data, list | tuple):
        for item in data:
            problem = unstorable(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                return f"a key that is not text ({type(key).__name__})"
            problem = unstorable(key, depth + 1) or unstorable(value, depth + 1)
            if problem:
                return problem
        return None
    return f"a value of type {type(data).__name__} (not JSON)"


def screen_batch(batch: contract.Batch) -> tuple[contract.Batch, list[Finding]]:
    """``batch`` without what PostgreSQL cannot store, and what was taken out (the
    same object and ``[]`` when nothing was). Streams left without records are
    dropped and the indices renumbered; the range stays ``first_seq..last_seq``."""
    findings: list[Finding] = []
    bad_streams = {
        i for i, (device, _name) in enumerate(batch.streams) if "\x00" in device
    }
    for seq, _ts, idx, _value in (*batch.readings, *batch.events):
        if idx in bad_streams:
            device = batch.streams[idx][0]
            findings.append(
                Finding(DEVICE_ID_NUL, batch.gw, seq, f"device id {_sample(device)}")
            )
    events = []
    for event in batch.events:
        if event[2] in bad_streams:
            continue
        problem = unstorable(event[3])
        if problem:
            kind = batch.streams[event[2]][1]
            findings.append(
                Finding(EVENT_DATA_UNSTORABLE, batch.gw, event[0], f"{kind}: {problem}")
            )
            continue
        events.append(event)
    if not findings:
        return batch, []
    readings = [r for r in batch.readings if r[2] not in bad_streams]
    used = sorted({r[2] for r in readings} | {e[2] for e in events})
    index = {old: new for new, old in enumerate(used)}
    return (
        batch.model_copy(
            update={
                "streams": [batch.streams[i] for i in used],
                "readings": [(s, t, index[i], v) for s, t, i, v in readings],
                "events": [(s, t, index[i], d) for s, t, i, d in events],
            }
        ),
        findings,
    )


def compose_skipping(
    inputs: SiteInputs, *, now: datetime, version: int, validity: timedelta
) -> tuple[Composed, SiteInputs, list[tuple[str, str]]]:
    """``compose_lease`` of the site, leaving out the chargers it cannot be built
    with: ``(composed, the inputs used, [(charger id, reason)])``. Raises what
    ``compose_lease`` raised when the site fails with every charger taken alone
    fine, or with none (the site's own settings, not one charger's)."""
    try:
        composed = compose_lease(inputs, now=now, version=version, validity=validity)
    except Exception as whole:  # pure code: a bad input, not an outage
        skipped: list[tuple[str, str]] = []
        for charger in inputs.chargers:
            alone = dataclasses.replace(inputs, chargers=(charger,))
            try:
                compose_lease(alone, now=now, version=version, validity=validity)
            except Exception as exc:
                skipped.append((charger.charger_id, _reason(exc)))
        if not skipped:
            raise whole
        left = {cid for cid, _ in skipped}
        rest = dataclasses.replace(
            inputs,
            chargers=tuple(c for c in inputs.chargers if c.charger_id not in left),
        )
        composed = compose_lease(rest, now=now, version=version, validity=validity)
        return composed, rest, skipped
    return composed, inputs, []


def _reason(exc: Exception) -> str:
    """One line of why: a validation error's first problem, else the message."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg', 'invalid')}"[:200]
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class Quarantine:
    """Counters of quarantined items by reason, and the log-once rule."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.counts: Counter[str] = Counter()
        self._logged: set[tuple[str, str]] = set()

    @property
    def total(self) -> int:
        """Items quarantined since start, every reason."""
        return sum(self.counts.values())

    def record(self, finding: Finding, what: str) -> None:
        """Count ``finding``; log it at WARNING the first time its gateway shows its
        reason (``what`` says what became of the item), else at DEBUG."""
        self.counts[finding.reason] += 1
        key = (finding.gw, finding.reason)
        first = key not in self._logged
        if first:
            if len(self._logged) >= _LOGGED_MAX:
                self._logged.clear()
            self._logged.add(key)
        if first:
            self.log.warning(
                "ingest: %s seq %d %s: %s (%s; more of these from this gateway are "
                "only counted, and logged at debug level)",
                finding.gw,
                finding.seq,
                what,
                finding.detail,
                finding.reason,
            )
        else:
            self.log.debug(
                "ingest: %s seq %d %s: %s (%s)",
                finding.gw,
                finding.seq,
                what,
                finding.detail,
                finding.reason,
            )


def _sample(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
