"""``GET /healthz``: whether PostgreSQL answers, within a bounded time whatever
state it is in (a load balancer's check must not hang)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cloud.api.deps import Db

log = logging.getLogger("fusebox.cloud.api")

router = APIRouter()

HEALTHZ_TIMEOUT_S = 2.0
"""``/healthz`` answers within this, whatever state PostgreSQL is in."""


async def database_problem(pool: asyncpg.Pool, timeout_s: float) -> str | None:
    """What keeps ``pool`` from answering ``SELECT 1`` within ``timeout_s``, in
    words, or None when it answered.

    One deadline covers all of it: waiting for a free pooled connection, opening a
    new one (the pool's own connect timeout is longer), the query, and handing the
    connection back. A pooled connection found dead (the server restarted, the link
    was cut) is replaced within the same deadline, so a database that is back
    reports healthy at once.
    """
    deadline_s = time.monotonic() + timeout_s
    problem, stale = await _select_one(pool, timeout_s, deadline_s)
    while stale and time.monotonic() < deadline_s:
        problem, stale = await _select_one(pool, timeout_s, deadline_s)
    return problem


def _terminate(conn: asyncpg.pool.PoolConnectionProxy) -> None:
    with contextlib.suppress(asyncpg.InterfaceError):  # released already
        conn.terminate()


async def _select_one(
    pool: asyncpg.Pool, timeout_s: float, deadline_s: float
) -> tuple[str | None, bool]:
    """One attempt of :func:`database_problem`: ``(problem, the pooled connection
    was dead)``. A connection that does not answer is terminated rather than
    cancelled: a cancel request needs a new connection to the same unreachable
    server, and releasing a connection waits for its cancellation to finish."""

    def remaining_s() -> float:
        """What is left of the deadline, at least 10 ms."""
        return max(0.01, deadline_s - time.monotonic())

    busy = pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()
    try:
        async with asyncio.timeout(remaining_s()):
            conn = await pool.acquire()
    except TimeoutError:
        if busy:
            return (
                f"no free database connection within {timeout_s:g} s: all "
                f"{pool.get_max_size()} pooled connections are in use (pool exhausted)"
            ), False
        return (
            f"could not connect to PostgreSQL within {timeout_s:g} s "
            "(unreachable or not answering)"
        ), False
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"could not connect to PostgreSQL: {type(exc).__name__}: {exc}", False
    try:
        await conn.fetchval("SELECT 1", timeout=remaining_s())
        return None, False
    except TimeoutError:
        _terminate(conn)
        return f"PostgreSQL did not answer SELECT 1 within {timeout_s:g} s", False
    except asyncpg.PostgresConnectionError as exc:
        _terminate(conn)
        return f"database connection lost: {exc}", True
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _terminate(conn)
        return f"database error: {type(exc).__name__}: {exc}", False
    finally:
        # shielded inside asyncpg: a release that hangs is left to finish alone
        with contextlib.suppress(TimeoutError, OSError, asyncpg.InterfaceError):
            async with asyncio.timeout(remaining_s()):
                await pool.release(conn)


@router.get(
    "/healthz",
    responses={503: {"description": "the database did not answer in time"}},
)
async def healthz(db: Db) -> Any:
    """200 ``{"ok": true}`` when PostgreSQL answers ``SELECT 1`` within
    ``HEALTHZ_TIMEOUT_S``, else 503 ``{"ok": false, "detail": why}``, also
    within that time (a load balancer's check must not hang)."""
    problem = await database_problem(db, HEALTHZ_TIMEOUT_S)
    if problem is not None:
        log.warning("healthz: %s", problem)
        return JSONResponse(status_code=503, content={"ok": False, "detail": problem})
    return {"ok": True}
