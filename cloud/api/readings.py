"""The stored readings of a gateway, for its owner and the people it is shared with:
newest first a page at a time (``GET /v1/gateways/{gw}/readings``), and oldest first
as one streamed CSV file (``GET /v1/gateways/{gw}/readings.csv``).

Both walk an index in time order and stop when they have what they need, so a
request costs the rows it returns, not the gateway's history (issue 16: the page
used to sort every row the gateway ever sent). The page is keyset-paged: the
``Link: <...>; rel="next"`` header carries a ``before`` cursor (the last row's
``(ts, seq)``, unique per gateway), and without ``since`` a page looks back a
bounded window (``DEFAULT_WINDOW``) so PostgreSQL opens only the monthly
partitions it needs.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from cloud.api.deps import (
    Access,
    Db,
    GatewayPath,
    User,
    UtcDatetime,
    UtcOrNaiveDatetime,
    gateway_access,
)
from cloud.api.errors import field_error
from protocols.readings import QUANTITIES

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
DEFAULT_WINDOW = timedelta(days=31)
"""Without ``since``, a page reaches back this far from its upper bound (or, if
that holds nothing, from the newest reading below it)."""

_SEQ_MIN, _SEQ_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_UPPER = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)  # as cloud.api.deps accepts
_CURSOR = re.compile(r"^([0-9]{1,18})_(-?[0-9]{1,19})$")

router = APIRouter()

_CSV_ROWS_PER_CHUNK = 2000
# checked before the query: the CSV stream cannot turn a database error into a 4xx
# once it has started
DeviceQuery = Annotated[
    str | None, Query(min_length=1, max_length=128, pattern=r"^[^\x00]+$")
]
CursorQuery = Annotated[
    str | None,
    Query(
        pattern=_CURSOR.pattern,
        description="where the previous page ended: the `before` of its "
        '`Link: <...>; rel="next"` header',
    ),
]

# The page, without a device or quantity filter: one backward walk of
# readings_gateway_ts over the window's partitions, stopped by the LIMIT.
# Every bound is always given (no "$n IS NULL OR" terms): a generic plan keeps
# its index conditions and prunes partitions when it starts.
GATEWAY_PAGE = """
SELECT r.seq, r.ts, s.device_id, s.name AS quantity, r.value
FROM readings r JOIN streams s ON s.id = r.stream_id
WHERE r.gateway_id = $1 AND r.ts >= $2 AND r.ts <= $3 AND (r.ts, r.seq) < ($3, $4)
ORDER BY r.ts DESC, r.seq DESC LIMIT $5
"""

# With a filter: the matching streams (a few of the gateway's), each walked
# backward on readings_stream_ts for at most a page, then merged.
STREAMS_PAGE = """
SELECT x.seq, x.ts, s.device_id, s.name AS quantity, x.value
FROM streams s CROSS JOIN LATERAL (
    SELECT r.seq, r.ts, r.value FROM readings r
    WHERE r.stream_id = s.id AND r.ts >= $2 AND r.ts <= $3
      AND (r.ts, r.seq) < ($3, $4)
    ORDER BY r.ts DESC, r.seq DESC LIMIT $5) x
WHERE s.gateway_id = $1 AND ($6::text IS NULL OR s.device_id = $6)
  AND ($7::text IS NULL OR s.name = $7)
ORDER BY x.ts DESC, x.seq DESC LIMIT $5
"""

# The newest reading below the upper bound, when the default window was empty
# (a gateway offline for longer than the window).
GATEWAY_NEWEST = """
SELECT r.ts FROM readings r
WHERE r.gateway_id = $1 AND r.ts <= $2 AND (r.ts, r.seq) < ($2, $3)
ORDER BY r.ts DESC, r.seq DESC LIMIT 1
"""

STREAMS_NEWEST = """
SELECT max(x.ts) FROM streams s CROSS JOIN LATERAL (
    SELECT r.ts FROM readings r
    WHERE r.stream_id = s.id AND r.ts <= $2 AND (r.ts, r.seq) < ($2, $3)
    ORDER BY r.ts DESC LIMIT 1) x
WHERE s.gateway_id = $1 AND ($4::text IS NULL OR s.device_id = $4)
  AND ($5::text IS NULL OR s.name = $5)
"""

# Oldest first in readings_gateway_ts order, so the first bytes leave before the
# last row is read (it used to sort the whole range first).
CSV_ROWS = """
SELECT r.ts, s.device_id, s.name, r.value FROM readings r
JOIN streams s ON s.id = r.stream_id
WHERE r.gateway_id = $1 AND r.ts >= $4 AND r.ts < $5
  AND ($2::text IS NULL OR s.device_id = $2) AND ($3::text IS NULL OR s.name = $3)
ORDER BY r.ts, r.seq
"""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$")


def csv_text(value: str) -> str:
    """A text cell that a spreadsheet will not run as a formula: one starting
    with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
    ``'`` (OWASP's CSV injection advice), unless it is a plain number (``-1.5``
    is no formula). Numeric columns are written as numbers, unescaped."""
    if value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


class ReadingPublic(BaseModel):
    """One reading of a page."""

    seq: int
    ts: datetime
    device_id: str
    quantity: str
    value: float


def encode_cursor(ts: datetime, seq: int) -> str:
    """The ``before`` value that continues below ``(ts, seq)``."""
    delta = ts - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}_{seq}"


def decode_cursor(text: str) -> tuple[datetime, int]:
    """``(ts, seq)`` of a ``before`` value; a 422 naming ``before`` if it is not
    one this API could have written."""
    m = _CURSOR.match(text)
    try:
        if m is None:
            raise ValueError
        ts = _EPOCH + timedelta(microseconds=int(m.group(1)))
        seq = int(m.group(2))
    except (ValueError, OverflowError):
        raise field_error("before", "not a readings cursor", "query") from None
    if not (_EARLIEST <= ts <= _NO_UPPER and _SEQ_MIN <= seq <= _SEQ_MAX):
        raise field_error("before", "cursor out of range", "query")
    return ts, seq


class _Page:
    """One page's query: the selection, the upper bound ``(ts, seq)`` (exclusive)
    and the row count; :meth:`fetch` runs it over a window."""

    def __init__(
        self,
        gateway_id: str,
        device_id: str | None,
        quantity: str | None,
        upper: tuple[datetime, int],
        limit: int,
    ) -> None:
        self.gateway_id = gateway_id
        self.filters = (device_id, quantity)
        self.filtered = device_id is not None or quantity is not None
        self.upper = upper
        self.limit = limit

    async def fetch(self, db: asyncpg.Pool, since: datetime) -> list[asyncpg.Record]:
        """Up to ``limit + 1`` rows (one more tells whether a next page exists)."""
        args: tuple[Any, ...] = (self.gateway_id, since, *self.upper, self.limit + 1)
        rows: list[asyncpg.Record]
        if self.filtered:
            rows = await db.fetch(STREAMS_PAGE, *args, *self.filters)
        else:
            rows = await db.fetch(GATEWAY_PAGE, *args)
        return rows

    async def newest(self, db: asyncpg.Pool) -> datetime | None:
        """The newest reading's ``ts`` below the upper bound, None when none."""
        args = (self.gateway_id, *self.upper)
        if self.filtered:
            ts: datetime | None = await db.fetchval(
                STREAMS_NEWEST, *args, *self.filters
            )
        else:
            ts = await db.fetchval(GATEWAY_NEWEST, *args)
        return ts


def _window_start(end: datetime) -> datetime:
    try:
        return max(_EARLIEST, end - DEFAULT_WINDOW)
    except OverflowError:
        return _EARLIEST


async def readings_page(
    db: asyncpg.Pool,
    gateway_id: str,
    *,
    device_id: str | None,
    quantity: str | None,
    since: datetime | None,
    until: datetime | None,
    before: tuple[datetime, int] | None,
    limit: int,
) -> tuple[list[asyncpg.Record], str | None]:
    """Readings newest first and the ``before`` cursor of the next page, None when
    there is none. Without ``since`` the window is ``DEFAULT_WINDOW`` back from
    the upper bound (``until``, ``before`` or now); if that holds nothing, it is
    ``DEFAULT_WINDOW`` back from the newest reading below the bound, and a next
    page (possibly empty) then continues below the window."""
    upper = (_NO_UPPER, _SEQ_MAX)
    if until is not None:
        upper = min(upper, (until, _SEQ_MIN))
    if before is not None:
        upper = min(upper, before)
    page = _Page(gateway_id, device_id, quantity, upper, limit)
    window: datetime | None = None
    if since is None:
        window = _window_start(min(upper[0], datetime.now(UTC)))
        rows = await page.fetch(db, window)
        if not rows:
            newest = await page.newest(db)
            if newest is None:
                return [], None
            window = _window_start(newest)
            rows = await page.fetch(db, window)
    else:
        rows = await page.fetch(db, since)
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], encode_cursor(last["ts"], last["seq"])
    if window is not None:
        return rows, encode_cursor(window, _SEQ_MIN)
    return rows, None


@router.get(
    "/v1/gateways/{gateway_id}/readings",
    response_model=list[ReadingPublic],
    responses={
        200: {
            "headers": {
                "Link": {
                    "description": 'the next (older) page: `<URL>; rel="next"`, '
                    "absent after the last one",
                    "schema": {"type": "string"},
                }
            }
        }
    },
)
async def readings(
    gateway_id: GatewayPath,
    request: Request,
    response: Response,
    db: Db,
    user: User,
    device_id: DeviceQuery = None,
    quantity: str | None = None,
    since: UtcOrNaiveDatetime | None = None,
    until: UtcOrNaiveDatetime | None = None,
    before: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """Readings newest first (``ts``, then ``seq``), ``limit`` at a time, from
    ``since`` (inclusive) to ``until`` (exclusive). Without ``since`` a page
    covers at most 31 days: those before ``until`` / ``before`` / now, or, when
    they hold nothing, the 31 days up to the newest reading. Follow
    ``Link rel="next"`` for older pages."""
    if quantity is not None and quantity not in QUANTITIES:
        raise field_error("quantity", f"unknown quantity {quantity!r}", "query")
    if since is not None and until is not None and until <= since:
        raise field_error("until", "must be after since", "query")
    cursor = decode_cursor(before) if before is not None else None
    await gateway_access(db, user, gateway_id, Access.READ)
    rows, next_before = await readings_page(
        db,
        gateway_id,
        device_id=device_id,
        quantity=quantity,
        since=since,
        until=until,
        before=cursor,
        limit=limit,
    )
    if next_before is not None:
        url = request.url.include_query_params(before=next_before)
        response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return [dict(r) for r in rows]


@router.get(
    "/v1/gateways/{gateway_id}/readings.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
async def readings_csv(
    gateway_id: GatewayPath,
    db: Db,
    user: User,
    since: UtcDatetime,
    until: UtcDatetime | None = None,
    device_id: DeviceQuery = None,
    quantity: str | None = None,
) -> StreamingResponse:
    """Readings from ``since`` (to ``until``), oldest first, streamed as CSV
    (``ts,device_id,quantity,value``); text cells that a spreadsheet would run
    as a formula are escaped (``csv_text``)."""
    if quantity is not None and quantity not in QUANTITIES:
        raise field_error("quantity", f"unknown quantity {quantity!r}", "query")
    if until is not None and until <= since:
        raise field_error("until", "must be after since", "query")
    await gateway_access(db, user, gateway_id, Access.READ)
    args = (gateway_id, device_id, quantity, since, until or _NO_UPPER)

    async def rows() -> AsyncIterator[str]:
        """The CSV, a chunk of rows at a time, read in one read-only transaction."""
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(["ts", "device_id", "quantity", "value"])
        n = 0
        async with db.acquire() as conn, conn.transaction(readonly=True):
            async for r in conn.cursor(CSV_ROWS, *args, prefetch=1000):
                out.writerow(
                    [
                        r["ts"].isoformat(),
                        csv_text(r["device_id"]),
                        csv_text(r["name"]),
                        r["value"],
                    ]
                )
                n += 1
                if n % _CSV_ROWS_PER_CHUNK == 0:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    filename = f"{gateway_id}-readings.csv"
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
