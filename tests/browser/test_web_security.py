"""The web app's session, CSRF and escaping, over HTTP without a browser."""

from __future__ import annotations

import httpx

from cloud.auth import create_user
from tests.browser.conftest import Web

PASSWORD = "correct horse battery"


async def test_session_cookie_csrf_and_escaping(web: Web) -> None:
    await create_user(web.conn, "inst@example.com", "installer", PASSWORD)
    origin = {"Origin": web.url}
    async with httpx.AsyncClient(base_url=web.url) as c:
        r = await c.get("/app")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fapp"

        # what the login form echoes back is escaped
        r = await c.post(
            "/login",
            data={"email": '"><script>alert(1)</script>@x.y', "password": "x"},
            headers=origin,
        )
        assert r.status_code == 401 and "Wrong e-mail or password" in r.text
        assert "<script>alert" not in r.text and "&lt;script&gt;" in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]

        # a login from another site's form is refused
        r = await c.post(
            "/login",
            data={"email": "inst@example.com", "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403 and "fusebox_session" not in r.cookies

        r = await c.post(
            "/login",
            data={
                "email": "inst@example.com",
                "password": PASSWORD,
                "next": "//evil.example/",
            },
            headers=origin,
        )
        assert r.status_code == 303 and r.headers["location"] == "/app"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        r = await c.get("/app/install")
        assert r.status_code == 200 and 'name="csrf"' in r.text

        # a POST without the form's token, or from another origin, does nothing
        r = await c.post(
            "/app/install/claim", data={"claim_code": "ABCD-1234"}, headers=origin
        )
        assert r.status_code == 403
        page = (await c.get("/app/install")).text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = await c.post(
            "/app/install/claim",
            data={"claim_code": "ABCD-1234", "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403
        r = await c.post(
            "/app/install/claim",
            data={"claim_code": "ABCD-1234", "csrf": csrf},
            headers=origin,
        )
        assert r.status_code == 303  # reached the API: no such gateway
        assert (
            "Not+claimed" in r.headers["set-cookie"]
            or "Not%20claimed" in (r.headers["set-cookie"])
        )

        # the pages are not part of the published API
        spec = (await c.get("/openapi.json")).json()
        assert not [p for p in spec["paths"] if p == "/" or p.startswith("/app")]

        # logging out revokes the token
        r = await c.post("/logout", data={"csrf": csrf}, headers=origin)
        assert r.status_code == 303
        revoked = await web.conn.fetchval(
            "SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL"
        )
        assert revoked == 1
        r = await c.get("/app/install")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
