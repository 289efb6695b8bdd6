"""The web app in real headless Chromium (issue 5, done-when 2).

Owner: logs in, sees the EV charging (state, power, session energy, SoC), sees the
plan the real scheduler made, changes the ready-by time and sees the new plan the
scheduler makes for it; boosts, submits a meter reading and reads the session
history; the dashboard on a phone-sized screen too. Installer: claims a gateway
with the code it shows, sets up the site, registers a charger and a meter, and gets
a failing then (with the devices' data in) a passing commissioning report.

Screenshots of every step go to ``test-artifacts/<test id>/``.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloud.auth import create_user
from cloud.scheduler import Scheduler, SchedulerSettings
from protocols.clock import Clock
from protocols.urls import parse_mqtt_url
from tests.browser.conftest import Seeder, Web, seed_charging, shot
from tests.harness.mosquitto import MosquittoServer
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.browser

LONDON = ZoneInfo("Europe/London")
SLOT = timedelta(minutes=30)
PASSWORD = "correct horse battery"


def slot_floor(t: datetime) -> datetime:
    return t.replace(minute=t.minute - t.minute % 30, second=0, microsecond=0)


async def login(page: Any, web: Web, email: str) -> None:
    await page.goto(f"{web.url}/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")


async def plan_version(page: Any) -> int:
    el = page.locator("#plan [data-plan-version]").first
    return int(await el.get_attribute("data-plan-version") or 0)


async def reload_until_plan_after(page: Any, version: int) -> int:
    async def newer() -> int:
        await page.reload()
        v = await plan_version(page)
        return v if v > version else 0

    got: int = await eventually(
        newer,
        timeout_s=timeout(20),
        interval_s=0.3,
        message=f"a plan newer than v{version} on the page",
    )
    return got


async def planned_slots(conn: Any, gw: str, version: int) -> list[datetime]:
    """Start times of the slots of plan ``version`` with charging planned."""
    lease = json.loads(
        await conn.fetchval(
            "SELECT lease FROM plans WHERE gateway_id = $1 AND version = $2",
            gw,
            version,
        )
    )
    out = []
    for c in lease["chargers"]:
        for p in c["periods"]:
            if p["limit_w"] <= 0:
                continue
            t = p["start_ms"]
            while t < p["end_ms"]:
                out.append(datetime.fromtimestamp(t / 1000, UTC))
                t += 1_800_000
    return sorted(set(out))


async def page_slots(page: Any) -> list[str]:
    return [
        s
        for s in await page.locator("#plan rect.bar").evaluate_all(
            "els => els.map(e => e.getAttribute('data-slot'))"
        )
        if s
    ]


# ------------------------------------------------------------------- owner


async def seed_owner_home(web: Web, now: datetime) -> tuple[str, str]:
    """A home with a charging EV and a price curve; the owner's ready-by now and
    a later one to change to: cheap (5 p) slots 8-10 h from now, 12 p slots 2-4 h
    from now, 30 p otherwise."""
    conn = web.conn
    gw = "gw-web"
    seeder = Seeder(conn, gw)
    await seeder.status(state="online", software="1.0.0")
    owner = await create_user(conn, "owner@example.com", "owner", PASSWORD)
    await conn.execute("INSERT INTO tariffs (id) VALUES ('tariff-web')")
    start = slot_floor(now)
    for i in range(-2, 96):
        t = start + SLOT * i
        hours = (t - start) / timedelta(hours=1)
        price = 5.0 if 8 <= hours < 10 else 12.0 if 2 <= hours < 4 else 30.0
        await conn.execute(
            "INSERT INTO tariff_slots VALUES ('tariff-web', $1, $2, 200)", t, price
        )
    await conn.execute(
        "INSERT INTO sites (gateway_id, main_fuse_a, phases, tariff_id, timezone,"
        " owner_id) VALUES ($1, 60, 1, 'tariff-web', 'Europe/London', $2)",
        gw,
        owner,
    )
    await conn.execute(
        "INSERT INTO site_chargers (gateway_id, charger_id, max_power_w)"
        " VALUES ($1, 'CP-1', 7400)",
        gw,
    )
    await conn.execute(
        "INSERT INTO site_meters (gateway_id, meter_id, type, topic, role) VALUES"
        " ($1, 'm-site', 'glow', 'glow/ABC', 'site'),"
        " ($1, 'm-paper', 'manual', NULL, 'other')",
        gw,
    )
    ready_by = (start + timedelta(hours=12)).astimezone(LONDON).time()
    await conn.execute(
        "INSERT INTO charging_preferences (gateway_id, charger_id, ready_by,"
        " target_energy_kwh) VALUES ($1, 'CP-1', $2, 8)",
        gw,
        dtime(ready_by.hour, ready_by.minute),
    )
    await seed_charging(seeder, "CP-1", "m-site")
    new_ready = (start + timedelta(hours=5)).astimezone(LONDON)
    return gw, f"{new_ready:%H:%M}"


async def test_owner_sees_charging_ev_and_replans_on_new_ready_by(
    web: Web, browser: Any, mosquitto: MosquittoServer, artifacts_dir: Path
) -> None:
    import asyncio
    import contextlib

    now = datetime.now(UTC)
    gw, new_ready_by = await seed_owner_home(web, now)
    scheduler = Scheduler(
        dsn=web.dsn,
        mqtt=parse_mqtt_url(mosquitto.url),
        clock=Clock(real=time.time),
        settings=SchedulerSettings(interval_s=0.2),
    )
    sched_task = asyncio.create_task(scheduler.run(), name="scheduler")
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(timeout(10) * 1000)
    page = await context.new_page()
    console_errors: list[str] = []  # a CSP violation or a script error lands here
    page.on(
        "console",
        lambda m: (
            console_errors.append(f"{m.text} ({m.location.get('url')})")
            if m.type == "error"
            else None
        ),
    )
    try:
        # log in: straight to the one home's dashboard
        await login(page, web, "owner@example.com")
        await page.wait_for_url(f"{web.url}/app/site/{gw}")
        await shot(page, artifacts_dir, "01-owner-dashboard")
        card = page.locator('.charger[data-charger="CP-1"]')
        assert await card.locator(".badge.state").inner_text() == "Charging"
        assert await card.locator(".power").inner_text() == "7.0 kW"
        assert (await card.locator(".soc").inner_text()).endswith("%")
        energy = await card.locator(".energy").inner_text()
        assert energy.endswith("kWh") and float(energy.split()[0]) > 1.0

        # the scheduler's first plan (plug-in) charges in the 5 p slots
        v1 = await reload_until_plan_after(page, 0)
        await shot(page, artifacts_dir, "02-owner-first-plan")
        first = await planned_slots(web.conn, gw, v1)
        start = slot_floor(now)
        assert first and all(
            start + timedelta(hours=8) <= t < start + timedelta(hours=10) for t in first
        ), first
        assert await page_slots(page) == [
            f"{t.astimezone(LONDON):%H:%M}" for t in first
        ]

        # a phone-sized screen
        await page.set_viewport_size({"width": 390, "height": 844})
        await shot(page, artifacts_dir, "03-owner-dashboard-phone")
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth > window.innerWidth + 1"
        )
        assert not overflow, "the dashboard scrolls sideways on a phone"
        await page.set_viewport_size({"width": 1200, "height": 900})

        # ready earlier: the cheap night slots are too late, so a new plan
        prefs = page.locator('[data-prefs="CP-1"]')
        await prefs.locator("input[name=ready_by]").fill(new_ready_by)
        await prefs.locator("form.grid button[type=submit]").click()
        await page.wait_for_url(f"{web.url}/app/site/{gw}")
        flash = await page.locator(".flash").inner_text()
        assert f"ready by {new_ready_by}" in flash, flash
        assert await prefs.locator("input[name=ready_by]").input_value() == new_ready_by
        await shot(page, artifacts_dir, "04-owner-ready-by-saved")
        v2 = await reload_until_plan_after(page, v1)
        await shot(page, artifacts_dir, "05-owner-new-plan")
        reason = await web.conn.fetchval(
            "SELECT reason FROM plans WHERE gateway_id = $1 AND version = $2", gw, v2
        )
        assert reason == "preferences"
        assert "preferences" in await page.locator("#plan .plan").inner_text()
        second = await planned_slots(web.conn, gw, v2)
        ready_at = start + timedelta(hours=5)
        assert second and all(t + SLOT <= ready_at for t in second), second
        assert await page_slots(page) == [
            f"{t.astimezone(LONDON):%H:%M}" for t in second
        ]

        # boost, a meter reading, the session history
        await prefs.locator("button.boost").click()
        await page.wait_for_url(f"{web.url}/app/site/{gw}")
        assert "Boost requested" in await page.locator(".flash").inner_text()
        assert await web.conn.fetchval(
            "SELECT count(*) FROM commands WHERE gateway_id = $1 AND action = 'boost'",
            gw,
        )
        await page.select_option("select[name=meter_id]", "m-paper")
        await page.fill("input[name=register_kwh]", "12345.6")
        await page.get_by_role("button", name="Submit reading", exact=True).click()
        await page.wait_for_url(f"{web.url}/app/site/{gw}")
        assert "Reading accepted" in await page.locator(".flash").inner_text()
        row = page.locator("table.sessions tbody tr").first
        assert "CP-1" in await row.inner_text()
        assert "charging" in await row.inner_text()
        await shot(page, artifacts_dir, "06-owner-boost-reading-history")
        assert not console_errors, console_errors
    finally:
        await context.close()
        sched_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(sched_task, timeout(15))


# --------------------------------------------------------------- installer


async def test_installer_claims_sets_up_and_commissions(
    web: Web, browser: Any, artifacts_dir: Path
) -> None:
    conn = web.conn
    gw = "gw-garage"
    seeder = Seeder(conn, gw)
    await seeder.status(
        state="online",
        software="1.0.0",
        claim_sha256=hashlib.sha256(b"WEB-CODE-42").hexdigest(),
    )
    await create_user(conn, "installer@example.com", "installer", PASSWORD)
    await create_user(conn, "home@example.com", "owner", PASSWORD)
    await conn.execute("INSERT INTO tariffs (id) VALUES ('tariff-web')")
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(timeout(10) * 1000)
    page = await context.new_page()
    try:
        await login(page, web, "installer@example.com")
        await page.wait_for_url(f"{web.url}/app/install")
        await shot(page, artifacts_dir, "01-installer-home")

        # a wrong code, then the code as read off the screen
        await page.fill("input[name=claim_code]", "NOPE-0000")
        await page.get_by_role("button", name="Claim", exact=True).click()
        assert "Not claimed" in await page.locator(".flash.error").inner_text()
        await page.fill("input[name=claim_code]", "web-code-42")
        await page.get_by_role("button", name="Claim", exact=True).click()
        await page.wait_for_url(f"{web.url}/app/install/{gw}")
        assert f"Claimed {gw}" in await page.locator(".flash").inner_text()
        await shot(page, artifacts_dir, "02-installer-claimed")

        # the site, for the owner's account
        await page.fill("input[name=owner_email]", "home@example.com")
        await page.fill("input[name=main_fuse_a]", "60")
        await page.select_option("select[name=phases]", "1")
        await page.fill("input[name=tariff_id]", "tariff-web")
        await page.get_by_role("button", name="Save site", exact=True).click()
        assert "Site saved" in await page.locator(".flash").inner_text()

        # devices
        await page.fill("input[name=charger_id]", "CP-7")
        await page.fill("input[name=max_power_w]", "7400")
        await page.get_by_role("button", name="Register charger", exact=True).click()
        assert "Charger CP-7 registered" in await page.locator(".flash").inner_text()
        await page.fill("input[name=meter_id]", "m-site")
        await page.select_option("select[name=type]", "glow")
        await page.fill("input[name=topic]", "glow/AABBCC")
        await page.select_option("select[name=role]", "site")
        await page.get_by_role("button", name="Register meter", exact=True).click()
        assert "Meter m-site registered" in await page.locator(".flash").inner_text()
        devices = page.locator("table.devices")
        assert await devices.locator('[data-device="CP-7"]').count() == 1
        assert await devices.locator('[data-device="m-site"]').count() == 1
        await shot(page, artifacts_dir, "03-installer-site-and-devices")

        # nothing has reported yet: the report fails, saying what is missing
        await page.get_by_role("link", name="Commissioning report").click()
        await page.wait_for_url(f"{web.url}/app/install/{gw}/commissioning")
        verdict = page.locator(".verdict")
        assert await verdict.get_attribute("data-passed") == "false"
        assert (
            await page.locator('tr[data-check="fuse_limit_set"]').get_attribute("class")
            == "pass"
        )
        assert (
            await page.locator('tr[data-check="charger_connected"]').get_attribute(
                "class"
            )
            == "fail"
        )
        await shot(page, artifacts_dir, "04-installer-commissioning-fails")

        # the charger boots and charges an EV, the meter reports, a profile applies
        await seed_charging(seeder, "CP-7", "m-site")
        await conn.execute(
            "INSERT INTO schedule_status (gateway_id, charger_id, lease_version,"
            " state, limit_w, at) VALUES ($1, 'CP-7', 1, 'applied', 7000, now())",
            gw,
        )
        await page.get_by_role("link", name="Check again").click()
        await page.wait_for_url(f"{web.url}/app/install/{gw}/commissioning")
        assert await verdict.get_attribute("data-passed") == "true"
        classes = await page.locator("table.checks tbody tr").evaluate_all(
            "els => els.map(e => e.className)"
        )
        assert classes and set(classes) == {"pass"}, classes
        await shot(page, artifacts_dir, "05-installer-commissioning-passes")
        await page.set_viewport_size({"width": 390, "height": 844})
        await shot(page, artifacts_dir, "06-installer-commissioning-phone")
    finally:
        await context.close()
