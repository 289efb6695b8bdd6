"""Typed payloads of the events the edge ships in batches (``Batch.events``).

An event travels as ``[seq, ts_ms, stream_index, data]`` where the stream names the
source (a charger or meter id) and the event kind. The kinds below carry a fixed
shape that the cloud relies on; ``parse_event`` validates ``data`` against it.
Unknown kinds are stored as they are (forward compatible), known kinds that fail
their model are a contract error of that batch.

Charging sessions (issue 3): the edge issues one ``session_started`` and one
``session_stopped`` per transaction, keyed by ``(charger_id, transaction_id)``.
The cloud folds them into one ``sessions`` row, idempotently, in whatever order
they arrive (a stop can overtake its start after an outage).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Wh = Annotated[float, Field(ge=0, le=1e12)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class SessionStarted(_Event):
    """A charging session began (1.6 StartTransaction, 2.0.1 TransactionEvent
    Started)."""

    charger_id: Name
    transaction_id: Name
    connector_id: Annotated[int, Field(ge=0, le=1000)]
    id_tag: Annotated[str, Field(max_length=64)] = ""
    started_at: datetime
    meter_start_wh: Wh


class SessionStopped(_Event):
    """A charging session ended (1.6 StopTransaction, 2.0.1 TransactionEvent Ended)."""

    charger_id: Name
    transaction_id: Name
    stopped_at: datetime
    meter_stop_wh: Wh
    reason: Annotated[str, Field(max_length=64)] = ""
    id_tag: Annotated[str, Field(max_length=64)] = ""


EVENT_MODELS: dict[str, type[_Event]] = {
    "session_started": SessionStarted,
    "session_stopped": SessionStopped,
}

SessionEvent = SessionStarted | SessionStopped


class EventError(ValueError):
    """An event of a known kind whose data does not fit its model."""


def parse_event(kind: str, data: dict[str, Any]) -> _Event | None:
    """The typed event for a known ``kind``; ``None`` for kinds without a model.

    Raises ``EventError`` naming the field when ``data`` does not fit.
    """
    model = EVENT_MODELS.get(kind)
    if model is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or kind
        raise EventError(f"{kind}.{where}: {first.get('msg', 'invalid')}") from None


def is_session_event(kind: str) -> bool:
    return kind in ("session_started", "session_stopped")
