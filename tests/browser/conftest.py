"""Browser tests: the web app (``cloud.web``) in real headless Chromium.

Chromium is Debian's (``apt-get install -y chromium``; ``.ci/run`` and
``scripts/test`` install it as root), driven by Playwright for Python through its
bundled driver; ``playwright install`` is never needed. Set ``FUSEBOX_CHROMIUM`` to
use another binary. Without a Chromium the tests skip, saying so.

Fixtures: ``browser`` (a Playwright ``Browser``), ``web`` (the cloud API app served
by uvicorn on a free port of 127.0.0.1, on the test's PostgreSQL, with a
connection for seeding) and :class:`Seeder` for readings and events as the
ingest worker stores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn

from cloud.api import create_app
from cloud.auth import ApiSettings
from cloud.db import migrate
from cloud.ingest import BatchStore
from protocols import contract
from tests.harness.procs import free_port
from tests.harness.timing import eventually, timeout

playwright_api = pytest.importorskip(
    "playwright.async_api",
    reason="Playwright is missing: pip install -e '.[dev]'",
)


def chromium_path() -> str | None:
    wanted = os.environ.get("FUSEBOX_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no Chromium found: apt-get install -y chromium (or set FUSEBOX_CHROMIUM)"
        )
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=path, headless=True)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Web:
    url: str
    dsn: str
    conn: asyncpg.Connection


@pytest.fixture
async def web(pg_dsn: str) -> AsyncIterator[Web]:
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    await BatchStore.init_connection(conn)
    app = create_app(pg_dsn, settings=ApiSettings(claim_delay_s=0.01))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        await eventually(
            lambda: server.started or task.done(),
            timeout_s=timeout(15),
            message="uvicorn serving",
        )
        if task.done():
            task.result()
        yield Web(f"http://127.0.0.1:{port}", pg_dsn, conn)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout(15))
        await conn.close()


class Seeder:
    """Stores readings and events of one gateway as the ingest worker would."""

    def __init__(self, conn: asyncpg.Connection, gw: str) -> None:
        self.conn = conn
        self.gw = gw
        self.store = BatchStore()
        self.seq = 0

    async def status(self, **kw: Any) -> None:
        await self.store.update_status(
            self.conn, contract.GatewayStatus(gw=self.gw, **kw)
        )

    async def feed(
        self,
        streams: list[tuple[str, str]],
        readings: Sequence[tuple[int, int, float]] = (),
        events: Sequence[tuple[int, int, dict[str, Any]]] = (),
    ) -> None:
        first = n = self.seq + 1
        rows = []
        for ts, idx, value in readings:
            rows.append((n, ts, idx, value))
            n += 1
        evs = []
        for ts, idx, data in events:
            evs.append((n, ts, idx, data))
            n += 1
        self.seq = n - 1
        batch = contract.unpack_batch(
            contract.pack(
                contract.batch_dict(
                    gw=self.gw,
                    epoch=1,
                    first_seq=first,
                    last_seq=n - 1,
                    sent_ms=int(time.time() * 1000),
                    streams=streams,
                    readings=rows,
                    events=evs,
                )
            )
        )
        await self.store.store(self.conn, batch)


def minute_ms(minutes_ago: int) -> int:
    now = int(time.time() * 1000)
    return now - now % 60_000 - minutes_ago * 60_000


async def seed_charging(seeder: Seeder, cp: str, meter: str) -> None:
    """20 minutes of data: 10 idle, then an EV charging at 7 kW for the last 10,
    with the charger's boot, status, open session, register and SoC readings."""
    streams = [
        (meter, "power_w"),
        (cp, "power_w"),
        (cp, "import_energy_wh"),
        (cp, "soc_pct"),
        (cp, "boot"),
        (cp, "status"),
        (cp, "session_started"),
    ]
    readings: list[tuple[int, int, float]] = []
    for m in range(20, -1, -1):
        ts = minute_ms(m) + 5_000 if m else int(time.time() * 1000) - 1_000
        ev = 7000.0 if m <= 10 else 0.0
        readings.append((ts, 0, 500.0 + ev))
        readings.append((ts, 1, ev))
        if m <= 10:
            readings.append((ts, 2, 1000.0 + (11 - m) * 7000 / 60))
            readings.append((ts, 3, 40.0 + (11 - m)))
    start_ms = minute_ms(10)
    events: list[tuple[int, int, dict[str, Any]]] = [
        (minute_ms(15), 4, {"vendor": "Sim", "model": "X"}),
        (start_ms, 5, {"connector_id": 1, "status": "Charging"}),
        (
            start_ms,
            6,
            {
                "charger_id": cp,
                "transaction_id": "tx-web-1",
                "connector_id": 1,
                "started_at": datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(),
                "meter_start_wh": 1000.0,
            },
        ),
    ]
    await seeder.feed(streams, readings, events)


async def shot(page: Any, artifacts: Path, name: str) -> None:
    """A full-page screenshot into the test's artefacts folder."""
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
