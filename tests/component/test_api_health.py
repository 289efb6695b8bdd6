"""``/healthz`` answers within its own timeout whatever state PostgreSQL is in.

The API reaches PostgreSQL through a TCP proxy the test controls: refusing
connections, blackholed (connections accepted, never answered, as a dead network
does), stalled (open connections stop forwarding, as a paused server does), and a
pool whose every connection is held elsewhere. Each must give a 503 that says what
is wrong within ``HEALTHZ_TIMEOUT_S`` plus a margin in test time units, and 200
again once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from cloud.api import HEALTHZ_TIMEOUT_S, create_app
from cloud.db import migrate
from tests.harness.procs import ProxyFactory, TcpProxy
from tests.harness.timing import eventually, timeout

MARGIN_UNITS = 1.0
"""Scheduling slack on top of the endpoint's own timeout, in test time units."""


class StallingProxy(TcpProxy):
    """A :class:`TcpProxy` that can also keep its connections open while it stops
    forwarding bytes: a PostgreSQL that is paused (SIGSTOP, a frozen VM), which the
    proxy's own ``pause`` cannot show since it cuts open connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stalled = threading.Event()

    async def _pump(  # type: ignore[override]
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                # set from the test's thread: an asyncio.Event is one loop's
                while self.stalled.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                writer.write(data)
                await writer.drain()


@dataclass
class Api:
    client: httpx.AsyncClient
    pool: asyncpg.Pool

    async def health(self) -> tuple[int, dict[str, Any], float]:
        """Status, body and seconds taken of one ``GET /healthz``."""
        started = time.monotonic()
        # ASGITransport applies no client timeout: bound the wait here
        async with asyncio.timeout(timeout(30)):
            r = await self.client.get("/healthz")
        return r.status_code, r.json(), time.monotonic() - started

    async def unhealthy_in_time(self) -> str:
        """Asserts a timely 503 and returns its ``detail``."""
        status, body, took_s = await self.health()
        assert status == 503, body
        assert body["ok"] is False
        assert took_s <= HEALTHZ_TIMEOUT_S + timeout(MARGIN_UNITS), (took_s, body)
        return str(body["detail"])

    async def healthy_again(self) -> None:
        async def ok() -> bool:
            status, body, _ = await self.health()
            return status == 200 and body == {"ok": True}

        await eventually(ok, timeout_s=timeout(10), message="/healthz is 200 again")


@contextlib.asynccontextmanager
async def _api(dsn: str) -> AsyncIterator[Api]:
    app = create_app(dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield Api(client=c, pool=app.state.pool)


@pytest.fixture
async def migrated(pg_dsn: str) -> str:
    await migrate(pg_dsn)
    return pg_dsn


async def test_blackholed_database_is_503_within_the_timeout(
    migrated: str, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(migrated)
    async with _api(proxy.url_for(migrated)) as api:
        status, body, _ = await api.health()
        assert (status, body) == (200, {"ok": True})
        proxy.pause(mode="blackhole")
        # more checks at once than the pool has connections, then one more: each
        # answers in time, and none leaves a pooled connection stuck
        checks = [api.unhealthy_in_time() for _ in range(api.pool.get_max_size() + 2)]
        for detail in [*await asyncio.gather(*checks), await api.unhealthy_in_time()]:
            assert "could not connect to PostgreSQL within" in detail, detail
        proxy.resume()
        await api.healthy_again()


async def test_refused_connections_are_503_within_the_timeout(
    migrated: str, tcp_proxy_factory: ProxyFactory
) -> None:
    proxy = tcp_proxy_factory(migrated)
    async with _api(proxy.url_for(migrated)) as api:
        await api.healthy_again()
        proxy.pause()
        detail = await api.unhealthy_in_time()
        assert "could not connect to PostgreSQL" in detail, detail
        proxy.resume()
        await api.healthy_again()


async def test_stalled_database_is_503_within_the_timeout(migrated: str) -> None:
    stalling = StallingProxy.for_url(migrated)
    assert isinstance(stalling, StallingProxy)
    with stalling as proxy:
        async with _api(proxy.url_for(migrated)) as api:
            await api.healthy_again()  # a pooled connection is open and idle
            proxy.stalled.set()
            detail = await api.unhealthy_in_time()
            assert "did not answer SELECT 1 within" in detail, detail
            # that connection was dropped; the next ones try to connect into the stall
            for _ in range(2):
                detail = await api.unhealthy_in_time()
                assert "could not connect to PostgreSQL within" in detail, detail
            proxy.stalled.clear()
            await api.healthy_again()


async def test_exhausted_pool_is_503_within_the_timeout(migrated: str) -> None:
    async with _api(migrated) as api:
        held = [await api.pool.acquire() for _ in range(api.pool.get_max_size())]
        try:
            detail = await api.unhealthy_in_time()
            assert "pool exhausted" in detail, detail
        finally:
            for conn in held:
                await api.pool.release(conn)
        await api.healthy_again()
