"""The edge's local API throttles wrong Basic-auth passwords (issue 10): on a real
``EdgeAgent`` over real HTTP, and on its app with chosen client addresses.

After 3 wrong passwords in a row from one address, each try waits 1 s, doubling
per further failure (``protocols.throttle``), answered 429 with ``Retry-After``
before the password is looked at; the installer on another address is not held
up, and the wait is a delay, never a lock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from edge.local_api import create_app
from tests.component.test_edge_local_api import API_PASSWORD, edge_config, running
from tests.harness.timing import timeout

WRONG = ("installer", "not-the-password")
RIGHT = ("installer", API_PASSWORD)


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


async def test_wrong_passwords_are_delayed_over_real_http(tmp_path: Path) -> None:
    async with (
        running(edge_config(tmp_path)) as (_, url),
        httpx.AsyncClient(base_url=url, timeout=timeout(5)) as c,
    ):
        for _ in range(3):
            r = await c.get("/api/status", auth=WRONG)
            assert r.status_code == 401
        r = await c.get("/api/status", auth=RIGHT)  # even the right one waits
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "1"
        assert "try again in 1 s" in r.json()["detail"]
        # no credentials at all (the browser's first request) is not a failure,
        # and health stays open
        assert (await c.get("/api/status")).status_code == 401
        assert (await c.get("/api/health")).status_code == 200
        await asyncio.sleep(1.05)
        assert (await c.get("/api/status", auth=WRONG)).status_code == 401
        r = await c.get("/api/status", auth=RIGHT)
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"  # doubled
        await asyncio.sleep(2.05)
        assert (await c.get("/api/status", auth=RIGHT)).status_code == 200
        # a success starts afresh: three free failures again
        for _ in range(3):
            assert (await c.get("/api/status", auth=WRONG)).status_code == 401
        assert (await c.get("/api/status", auth=RIGHT)).status_code == 429


async def test_another_address_is_not_held_up(tmp_path: Path) -> None:
    async with running(edge_config(tmp_path)) as (agent, _):
        assert agent.local_api is not None
        app = create_app(agent.local_api.site)
        clock = FakeClock()
        app.state.basic_auth_throttle.clock = clock

        def client(address: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app, client=(address, 40000))
            return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

        async with client("192.168.1.66") as attacker, client("192.168.1.20") as fitter:
            for _ in range(15):
                clock.now += 1000  # past every wait: the attacker's pace
                r = await attacker.get("/api/status", auth=WRONG)
                assert r.status_code == 401
            r = await attacker.get("/api/status", auth=RIGHT)
            assert r.status_code == 429 and r.headers["Retry-After"] == "900"  # cap
            assert (await fitter.get("/api/status", auth=RIGHT)).status_code == 200
            clock.now += 900
            assert (await attacker.get("/api/status", auth=RIGHT)).status_code == 200
