"""Ledger reconciliation: every reading a fleet produced against PostgreSQL's
``readings`` table.

Each worker process COPYs its gateways' ledgers (gateway, seq, timestamp, value,
stream name) into a temporary table and one query compares them with what the
cloud stored for those gateways:

* ``stored``: ledger readings found with the exact timestamp, value and stream;
* ``lost``: ledger readings with no row that the gateway no longer holds (it
  pruned them: the one fault that must never happen); ``pending`` counts the
  readings still in the outboxes (stored or not);
* ``mismatched``: a row with the sequence number but another timestamp, value or
  stream;
* ``duplicates``: extra rows for a (gateway, seq) already stored once;
* ``unexpected``: rows for these gateways the ledger never produced.

A clean run after the fleet drained: ``lost == pending == mismatched ==
duplicates == unexpected == 0``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import asyncpg

from simulators.fleet._gateway import STREAMS, SimGateway

__all__ = ["Reconciliation", "reconcile"]

_QUERY = """
WITH r AS (
    SELECT r.gateway_id, r.seq, count(*) AS n, min(r.ts) AS ts,
           min(r.value) AS value, min(s.name) AS name
    FROM readings r JOIN streams s ON s.id = r.stream_id
    WHERE r.gateway_id = ANY($1::text[])
    GROUP BY r.gateway_id, r.seq
)
SELECT
    count(*) FILTER (WHERE l.seq IS NOT NULL AND r.seq IS NULL AND NOT l.held)
        AS lost,
    count(*) FILTER (WHERE l.seq IS NULL) AS unexpected,
    coalesce(sum(r.n - 1) FILTER (WHERE r.n > 1), 0) AS duplicates,
    count(*) FILTER (
        WHERE l.seq IS NOT NULL AND r.seq IS NOT NULL AND (
            r.ts <> timestamptz 'epoch' + l.ts_ms * interval '1 millisecond'
            OR r.value <> l.value OR r.name <> l.name)
    ) AS mismatched,
    count(*) FILTER (WHERE l.seq IS NOT NULL AND r.seq IS NOT NULL) AS found
FROM fleet_ledger l
FULL JOIN r ON r.gateway_id = l.gateway_id AND r.seq = l.seq
"""


@dataclass(slots=True)
class Reconciliation:
    """The outcome for a set of gateways (add them up with ``+``)."""

    gateways: int = 0
    produced: int = 0
    stored: int = 0
    lost: int = 0
    pending: int = 0
    mismatched: int = 0
    duplicates: int = 0
    unexpected: int = 0

    def __add__(self, other: Reconciliation) -> Reconciliation:
        a, b = asdict(self), asdict(other)
        return Reconciliation(**{k: a[k] + b[k] for k in a})

    @property
    def clean(self) -> bool:
        """Every reading stored exactly once with its exact value, none pending."""
        return (
            self.lost + self.pending + self.mismatched + self.duplicates
            == self.unexpected
            == 0
        )


def _rows(
    gateways: Sequence[SimGateway],
) -> Iterator[tuple[str, int, int, float, str, bool]]:
    names = [name for _, name in STREAMS]
    for gw in gateways:
        ts, values, holds = gw.ledger_ts_ms, gw.ledger_value, gw.outbox.holds
        for i in range(len(values)):
            seq = i + 1
            yield gw.id, seq, ts[i], values[i], names[i % len(names)], holds(seq)


async def reconcile(dsn: str, gateways: Sequence[SimGateway]) -> Reconciliation:
    """Compare the ledgers of ``gateways`` with ``readings`` in ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE fleet_ledger (gateway_id text, seq bigint, "
            "ts_ms bigint, value double precision, name text, held boolean, "
            "PRIMARY KEY (gateway_id, seq))"
        )
        await conn.copy_records_to_table(
            "fleet_ledger",
            records=_rows(gateways),
            columns=["gateway_id", "seq", "ts_ms", "value", "name", "held"],
        )
        row = await conn.fetchrow(_QUERY, [gw.id for gw in gateways])
    finally:
        await conn.close()
    assert row is not None
    pending = sum(gw.outbox.count for gw in gateways)
    return Reconciliation(
        gateways=len(gateways),
        produced=sum(gw.produced for gw in gateways),
        stored=int(row["found"]) - int(row["mismatched"]),
        lost=int(row["lost"]),
        pending=pending,
        mismatched=int(row["mismatched"]),
        duplicates=int(row["duplicates"]),
        unexpected=int(row["unexpected"]),
    )
