"""Installer access after hand-over, and site creation without an account oracle
(issue 10), through the real app on a real PostgreSQL.

The world of ``test_api_roles``: installer A claimed gw-a, created the site for
owner A (who took it over at their next visit) and registered charger CP-A and
meters; the same for B. Here: the owner sees their installers, who lose access
14 days after hand-over unless kept, or at once when revoked; everything an
installer could do to the home (boost, sessions, CSV, broker credentials,
config) is then refused exactly like a home they never had.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from cloud.auth import create_user
from cloud.db import migrations
from cloud.web.session import SESSION_COOKIE, csrf_token
from tests.component import test_api_roles as roles
from tests.component.test_api_roles import CODE_A, CODE_B, World

# the fixtures of test_api_roles, used here too
world = roles.world
installed = roles.installed

GW = "/v1/gateways/gw-a"

# what an installer can do to a home, and the status while they may
INSTALLER_REACH: list[tuple[str, str, Any, int]] = [
    ("GET", "/v1/sites/gw-a", None, 200),
    ("GET", f"{GW}/sessions", None, 200),
    ("GET", f"{GW}/readings.csv?since=2026-01-01T00:00:00Z", None, 200),
    ("POST", f"{GW}/chargers/CP-A/boost", {"duration_min": 30}, 202),
    ("POST", f"{GW}/broker_credentials", None, 200),
    ("GET", f"{GW}/config_bundle", None, 200),
    ("PUT", f"{GW}/site", {"main_fuse_a": 63}, 200),
]


@pytest.fixture(autouse=True)
def _broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Broker credentials without a Mosquitto (their real path is tested in
    test_broker_auth): only who may ask is under test here."""

    async def issue(gateway_id: str) -> tuple[str, str]:
        return f"gw-{gateway_id}", "p" * 32

    import cloud.broker_auth

    monkeypatch.setattr(cloud.broker_auth, "issue_gateway_credentials", issue)


async def reach(w: World, who: str) -> list[int]:
    """The statuses ``who`` gets for everything in ``INSTALLER_REACH``."""
    out = []
    for method, path, body, _ in INSTALLER_REACH:
        out.append((await w.req(who, method, path, json=body)).status_code)
    return out


ALLOWED = [ok for *_, ok in INSTALLER_REACH]
REFUSED = [404] * len(INSTALLER_REACH)


async def inst_a_id(w: World) -> int:
    uid: int = await w.conn.fetchval(
        "SELECT id FROM users WHERE email = 'inst_a@example.com'"
    )
    return uid


# ------------------------------------------------------------------ listing


async def test_owner_sees_the_installer_and_when_access_ends(installed: World) -> None:
    w = installed
    r = await w.req("owner_a", "GET", f"{GW}/installers")
    assert r.status_code == 200, r.text
    body = r.json()
    handed_over = datetime.fromisoformat(body["handed_over_at"])
    assert abs(handed_over - datetime.now(UTC)) < timedelta(minutes=1)
    [i] = body["installers"]
    assert i["email"] == "inst_a@example.com" and i["user_id"] == await inst_a_id(w)
    assert i["state"] == "expires" and i["has_access"] is True
    ends = datetime.fromisoformat(i["expires_at"])
    assert ends - handed_over == timedelta(days=14)  # FUSEBOX_INSTALLER_ACCESS_DAYS
    # operators may look; the installer and other homes may not
    assert (await w.req("op", "GET", f"{GW}/installers")).status_code == 200
    assert (await w.req("inst_a", "GET", f"{GW}/installers")).status_code == 403
    assert (await w.req("owner_b", "GET", f"{GW}/installers")).status_code == 404
    assert (await w.req("inst_b", "GET", f"{GW}/installers")).status_code == 404


# ------------------------------------------------------------------- expiry


async def test_installer_loses_access_when_it_expires(installed: World) -> None:
    w = installed
    assert await reach(w, "inst_a") == ALLOWED  # within the 14 days
    await w.conn.execute(
        "UPDATE site_installers SET expires_at = now() - interval '1 second'"
        " WHERE gateway_id = 'gw-a'"
    )
    assert await reach(w, "inst_a") == REFUSED
    me = (await w.req("inst_a", "GET", "/v1/me")).json()
    assert me["gateway_ids"] == []
    assert (await w.req("inst_a", "GET", "/v1/sites")).json() == []
    assert (await w.req("inst_a", "GET", "/v1/gateways")).json() == []
    # the owner's home works on, and the list says what happened
    boost = {"duration_min": 30}
    r = await w.req("owner_a", "POST", f"{GW}/chargers/CP-A/boost", json=boost)
    assert r.status_code == 202
    [i] = (await w.req("owner_a", "GET", f"{GW}/installers")).json()["installers"]
    assert i["state"] == "expired" and i["has_access"] is False
    # installer B's home is untouched
    r = await w.req("inst_b", "GET", "/v1/gateways/gw-b/sessions")
    assert r.status_code == 200


# ------------------------------------------------------------ revoke / keep


async def test_owner_revokes_then_keeps(installed: World) -> None:
    w = installed
    uid = await inst_a_id(w)
    r = await w.req("owner_a", "POST", f"{GW}/installers/{uid}/revoke")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "revoked" and r.json()["has_access"] is False
    assert await reach(w, "inst_a") == REFUSED
    # the installer cannot give it back to themselves
    r = await w.req("inst_a", "POST", f"{GW}/installers/{uid}/keep")
    assert r.status_code == 404
    assert await reach(w, "inst_a") == REFUSED
    # the owner can
    r = await w.req("owner_a", "POST", f"{GW}/installers/{uid}/keep")
    assert r.status_code == 200
    kept = r.json()
    assert kept["state"] == "kept" and kept["expires_at"] is None
    assert await reach(w, "inst_a") == ALLOWED


async def test_kept_access_outlives_the_expiry(installed: World) -> None:
    w = installed
    uid = await inst_a_id(w)
    await w.conn.execute(
        "UPDATE site_installers SET expires_at = now() - interval '1 second'"
        " WHERE gateway_id = 'gw-a'"
    )
    assert (await w.req("owner_a", "POST", f"{GW}/installers/{uid}/keep")).is_success
    assert await reach(w, "inst_a") == ALLOWED
    row = await w.conn.fetchrow(
        "SELECT expires_at, kept_at FROM site_installers WHERE gateway_id = 'gw-a'"
    )
    assert row["expires_at"] is None and row["kept_at"] is not None


async def test_only_the_owner_keeps_or_revokes(installed: World) -> None:
    w = installed
    uid = await inst_a_id(w)
    for who, status in (("op", 403), ("owner_b", 404), ("inst_b", 404)):
        for action in ("keep", "revoke"):
            r = await w.req(who, "POST", f"{GW}/installers/{uid}/{action}")
            assert r.status_code == status, (who, action, r.text)
    # someone who never installed gw-a (installer B) is no installer of it
    inst_b = await w.conn.fetchval(
        "SELECT id FROM users WHERE email = 'inst_b@example.com'"
    )
    r = await w.req("owner_a", "POST", f"{GW}/installers/{inst_b}/keep")
    assert r.status_code == 404 and "no installer" in r.json()["detail"]
    assert await reach(w, "inst_b") == REFUSED
    for bad in ("0", "-1", "x", str(2**63)):
        r = await w.req("owner_a", "POST", f"{GW}/installers/{bad}/revoke")
        assert r.status_code == 422, bad
    assert await reach(w, "inst_a") == ALLOWED


async def test_owner_page_shows_and_revokes(installed: World) -> None:
    w = installed
    token = w.tokens["owner_a"]["Authorization"].removeprefix("Bearer ")
    w.client.cookies.set(SESSION_COOKIE, token)
    try:
        page = await w.client.get("/app/site/gw-a")
        assert page.status_code == 200, page.text
        section = page.text[page.text.index('id="access"') :]
        assert "inst_a@example.com" in section and "until " in section
        uid = await inst_a_id(w)
        action = f"/app/site/gw-a/installers/{uid}/revoke"
        assert f'action="{action}"' in section
        r = await w.client.post(
            action,
            data={"csrf": csrf_token(token)},
            headers={"Origin": "http://t"},
        )
        assert r.status_code == 303 and r.headers["location"] == "/app/site/gw-a"
        page = await w.client.get("/app/site/gw-a")
        assert "inst_a@example.com no longer has access" in page.text
        assert re.search(r'class="state">revoked ', page.text)
        # a form without the session's token changes nothing
        await w.conn.execute("UPDATE site_installers SET revoked_at = NULL")
        r = await w.client.post(action, data={"csrf": "nope"})
        assert r.status_code == 403
    finally:
        w.client.cookies.clear()
    assert await reach(w, "inst_a") == ALLOWED


# ------------------------------------------------------- no account oracle


async def post_site(w: World, gw: str, email: str, who: str = "inst_a") -> Any:
    return await w.req(
        who,
        "POST",
        "/v1/sites",
        json={"gateway_id": gw, "owner_email": email, "main_fuse_a": 40},
    )


async def test_site_creation_tells_nothing_about_accounts(world: World) -> None:
    w = world
    await w.req("inst_a", "POST", "/v1/claims", json={"claim_code": CODE_A})
    answers = {}
    for email in ("nobody@example.com", "inst_b@example.com", "owner_b@example.com"):
        r = await post_site(w, "gw-a", email)
        answers[email] = (r.status_code, {**r.json(), "owner_email": "-"})
        assert r.json()["owner_email"] == email
    assert len({repr(a) for a in answers.values()}) == 1  # all alike
    assert answers["nobody@example.com"][0] == 201
    # owner B has an account but has not visited: the e-mail can be corrected
    r = await post_site(w, "gw-a", "owner_a@example.com")
    assert r.status_code == 201
    assert (await w.req("owner_b", "GET", "/v1/sites/gw-a")).status_code == 404
    # owner A's next visit takes the site over; from then on any other e-mail
    # is one and the same 409, account or not
    assert "gw-a" in (await w.req("owner_a", "GET", "/v1/me")).json()["gateway_ids"]
    refusals = []
    for email in ("owner_b@example.com", "nobody@example.com"):
        r = await post_site(w, "gw-a", email)
        refusals.append((r.status_code, r.json()))
    assert refusals[0] == refusals[1] and refusals[0][0] == 409
    assert (await post_site(w, "gw-a", "OWNER_A@example.com")).status_code == 201
    # an installer's e-mail never takes a site over
    await w.req("inst_b", "POST", "/v1/claims", json={"claim_code": CODE_B})
    assert (await post_site(w, "gw-b", "inst_a@example.com", "inst_b")).is_success
    assert "gw-b" not in (await w.req("inst_a", "GET", "/v1/me")).json()["gateway_ids"]


async def test_an_account_made_later_takes_the_site_over_at_login(
    world: World,
) -> None:
    w = world
    await w.req("inst_a", "POST", "/v1/claims", json={"claim_code": CODE_A})
    assert (await post_site(w, "gw-a", "New.Owner@example.com")).status_code == 201
    # before the owner exists, the installer's access has no end
    row = await w.conn.fetchrow("SELECT expires_at FROM site_installers")
    assert row["expires_at"] is None
    await create_user(w.conn, "new.owner@example.com", "owner", "a garden of lupins")
    r = await w.client.post(
        "/v1/auth/login",
        json={"email": "new.owner@example.com", "password": "a garden of lupins"},
    )
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    r = await w.client.get("/v1/sites", headers={"Authorization": f"Bearer {token}"})
    [site] = r.json()
    assert (
        site["gateway_id"] == "gw-a" and site["owner_email"] == "new.owner@example.com"
    )
    row = await w.conn.fetchrow("SELECT expires_at FROM site_installers")
    left = row["expires_at"] - datetime.now(UTC)
    assert timedelta(days=13, hours=23) < left <= timedelta(days=14)


# ---------------------------------------------------------------- migration


async def test_migration_starts_the_clock_for_homes_handed_over_before(
    pg_dsn: str,
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        steps = migrations()
        assert (7, "0007_installer_access.sql") in [(v, n) for v, n, _ in steps]
        for version, _, sql in steps:
            if version == 7:
                await conn.execute(
                    "INSERT INTO users (id, email, role) VALUES"
                    " (1, 'o@x.test', 'owner'), (2, 'i@x.test', 'installer');"
                    "INSERT INTO gateways (id) VALUES ('gw-old'), ('gw-new');"
                    "INSERT INTO sites (gateway_id, main_fuse_a, owner_id) VALUES"
                    " ('gw-old', 60, 1), ('gw-new', 60, NULL);"
                    "INSERT INTO site_installers (gateway_id, user_id) VALUES"
                    " ('gw-old', 2), ('gw-new', 2)"
                )
            await conn.execute(sql)
        rows = {
            r["gateway_id"]: r["expires_at"]
            for r in await conn.fetch("SELECT * FROM site_installers")
        }
        assert rows["gw-new"] is None  # not handed over: no end yet
        left = rows["gw-old"] - datetime.now(UTC)
        assert timedelta(days=13, hours=23) < left <= timedelta(days=14)
    finally:
        await conn.close()
