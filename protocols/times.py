"""Time helpers every part shares: epoch milliseconds and UTC text.

The wire (sync contract v1, leases, the outbox) counts time in integer
milliseconds since the Unix epoch; people and logs read ISO 8601 in UTC with a
``Z``. Pure: every function takes the instant it converts (``now`` is the
caller's). OCPP's own dateTime text is ``protocols.ocpp.format_utc``.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["from_ms", "iso_z", "to_ms"]


def to_ms(ts: datetime) -> int:
    """Milliseconds since the Unix epoch of an aware datetime (truncated)."""
    return int(ts.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def iso_z(ts: datetime, timespec: str = "seconds") -> str:
    """``ts`` in UTC as ISO 8601 text ending in ``Z`` (``2026-01-15T16:00:00Z``);
    ``timespec`` as for ``datetime.isoformat``."""
    return ts.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
