"""The edge outbox: the system of record for every reading until the cloud stores it.

SQLite in WAL mode. Each record (a reading or an event) gets a gateway-local,
strictly rising sequence number when it is appended; the highest ever assigned is
kept in ``meta`` in the same transaction, so a number is never reused, not even
after every row was pruned or the process was killed mid-commit. Appends are
group-committed: whatever arrives while one commit runs goes into the next, so a
durable commit (``synchronous=FULL``) is paid per group, not per reading.

Rows leave the outbox only when the cloud acknowledges them (``prune_range`` for
one stored batch, ``prune_through`` for the cloud's contiguous watermark), or by
the full-disk policy below.

Full-disk policy: the outbox may hold up to ``cap_bytes``, or less when the file
system is short of space (``edge.outbox_space``: the WAL's room, a checkpoint's
growth of the file and a pre-allocated reserve are kept free). Past that limit,
instantaneous samples (power, voltage, current...) are thinned, oldest first, to
one sample per stream per bucket; the bucket grows 1 min -> 5 min -> 15 min -> 1 h
-> all until usage is below 90 % of the limit. Cumulative energy registers and
events are never thinned. Every thinned reading is counted (``thinned_total``; of
those, ``thinned_disk_total`` for the disk rather than the cap) and reported to the
cloud in the gateway status. If only registers and events remain, ``append``
raises ``OutboxFull`` and counts the items refused (``refused_cap_total``,
``refused_disk_total``); drivers then leave the device unacknowledged (the broker
keeps the message) and retry.

When SQLite still reports the disk full (``SQLITE_FULL``: something else filled
it), the reserve file is given back and a checkpoint run, so that pruning and
thinning can write; appends that still do not fit are refused. Pruning and
thinning run in transactions of ``SpacePlan.chunk_rows`` rows so each needs little
WAL. A prune that cannot run is remembered and retried (``maintain``, each write);
``acked_through`` in ``meta`` only ever covers rows actually deleted.

Per stream the outbox remembers the last timestamp and value it committed, in the
same transaction as the rows: a reading at or before that timestamp is a redelivery
of one already stored (dropped, counted as duplicate), and a cumulative register
below the last value is running backwards (dropped, counted as bad input).

All methods of ``OutboxStore`` are synchronous and must be called from one thread;
``Outbox`` wraps it for asyncio with a single worker thread and the group commit.

Layout: ``_records`` (the schema, counters and the records handed in and out),
``_store`` (``OutboxStore``, synchronous, one thread) and ``_async`` (``Outbox``,
the asyncio face with the group commit); the space policy is ``edge.outbox_space``.
"""

from __future__ import annotations

from edge.outbox._async import Outbox
from edge.outbox._records import (
    SCHEMA_VERSION,
    AppendResult,
    Event,
    Item,
    OutboxStats,
    Row,
)
from edge.outbox._store import OutboxStore

__all__ = [
    "SCHEMA_VERSION",
    "AppendResult",
    "Event",
    "Item",
    "Outbox",
    "OutboxStats",
    "OutboxStore",
    "Row",
]
