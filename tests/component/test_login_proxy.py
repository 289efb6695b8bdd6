"""Whose address the login throttle keys on, through real uvicorn on a free port as
``fusebox cloud api`` starts it (``cloud.run.api_config``), on a real PostgreSQL.

Without ``FUSEBOX_TRUSTED_PROXIES`` the address is the socket's: a client on
loopback sending a made-up ``X-Forwarded-For`` per try (uvicorn's own default
would believe it from loopback) gets no fresh budget from it. With loopback
named as the trusted proxy, the header is the client's address.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from cloud.api import create_app
from cloud.auth import ApiSettings, create_user
from cloud.db import migrate
from cloud.run import api_config
from cloud.settings import CloudSettings
from tests.harness.procs import free_port
from tests.harness.timing import eventually, timeout

PASSWORD = "correct horse battery"
SETTINGS = ApiSettings(login_free_failures=3)


@contextlib.asynccontextmanager
async def served(dsn: str, trusted: str) -> AsyncIterator[str]:
    settings = CloudSettings(
        database_url=dsn,
        cloud_mqtt_url="mqtt://127.0.0.1:1",
        api_host="127.0.0.1",
        api_port=free_port(),
        trusted_proxies=trusted,
    )
    server = uvicorn.Server(api_config(settings, create_app(dsn, settings=SETTINGS)))
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        await eventually(
            lambda: server.started or task.done(),
            timeout_s=timeout(15),
            message="uvicorn serving",
        )
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{settings.api_port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout(15))


@pytest.fixture
async def dsn(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # uvicorn's own fallback must not matter: only our setting decides
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    monkeypatch.delenv("FUSEBOX_TRUSTED_PROXIES", raising=False)
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await create_user(conn, "owner@example.com", "owner", PASSWORD)
        await create_user(conn, "second@example.com", "owner", PASSWORD)
    finally:
        await conn.close()
    return pg_dsn


async def attempt(
    c: httpx.AsyncClient, forwarded_for: str, pw: str = "wrong", who: str = "owner"
) -> httpx.Response:
    return await c.post(
        "/v1/auth/login",
        json={"email": f"{who}@example.com", "password": pw},
        headers={"X-Forwarded-For": forwarded_for},
    )


async def token_address(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        ip: str = await conn.fetchval(
            "SELECT client_ip FROM api_tokens ORDER BY created_at DESC LIMIT 1"
        )
        return ip
    finally:
        await conn.close()


async def test_spoofed_forwarded_for_from_loopback_is_ignored(dsn: str) -> None:
    async with served(dsn, "") as url, httpx.AsyncClient(base_url=url) as c:
        for i in range(3):
            assert (await attempt(c, f"203.0.113.{i}")).status_code == 401
        # a fourth "address" is still this socket: throttled
        r = await attempt(c, "203.0.113.200", PASSWORD)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        r = await attempt(c, "198.51.100.1", PASSWORD, who="second")
        assert r.status_code == 200
        assert await token_address(dsn) == "127.0.0.1"


async def test_a_trusted_proxy_gives_the_client_address(dsn: str) -> None:
    async with (
        served(dsn, "127.0.0.1, ::1") as url,
        httpx.AsyncClient(base_url=url) as c,
    ):
        for i in range(6):  # one try from each of six clients: none waits
            assert (await attempt(c, f"203.0.113.{i}")).status_code == 401
        for _ in range(3):  # three from one client: that one waits
            assert (await attempt(c, "203.0.113.77")).status_code == 401
        assert (await attempt(c, "203.0.113.77", PASSWORD)).status_code == 429
        r = await attempt(c, "198.51.100.1", PASSWORD)  # the owner, at home
        assert r.status_code == 200
        assert await token_address(dsn) == "198.51.100.1"


def test_trusted_proxies_setting() -> None:
    assert CloudSettings(trusted_proxies="").trusted_proxy_list == []
    s = CloudSettings(trusted_proxies=" 10.0.0.5 , 192.168.1.0/24,::1")
    assert s.trusted_proxy_list == ["10.0.0.5", "192.168.1.0/24", "::1"]
    with pytest.raises(ValidationError, match="no IP address or network"):
        CloudSettings(trusted_proxies="proxy.example.com")
    app = create_app("postgresql://unused@127.0.0.1:1/unused", settings=SETTINGS)
    off = api_config(CloudSettings(), app)
    assert off.proxy_headers is False
    on = api_config(CloudSettings(trusted_proxies="10.0.0.5"), app)
    assert on.proxy_headers is True and on.forwarded_allow_ips == ["10.0.0.5"]
