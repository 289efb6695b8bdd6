"""Accounts, login, tokens and the login rate limit, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from cloud.api import create_app
from cloud.auth import (
    ApiSettings,
    FailureLimiter,
    create_user,
    hash_password,
    verify_password,
)
from cloud.db import migrate
from fusebox import cli

PASSWORD = "correct horse battery"


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(pg_dsn)
    c = await asyncpg.connect(pg_dsn)
    try:
        await create_user(c, "Owner@Example.com", "owner", PASSWORD)
        yield c
    finally:
        await c.close()


@pytest.fixture
async def client(
    conn: asyncpg.Connection, pg_dsn: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        pg_dsn, settings=ApiSettings(login_max_failures=5, login_max_failures_per_ip=8)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


async def login(
    client: httpx.AsyncClient, email: str = "owner@example.com", pw: str = PASSWORD
) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": email, "password": pw})


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ hashing


def test_password_hash_is_salted_scrypt_and_verifies() -> None:
    a, b = hash_password("pw-1"), hash_password("pw-1")
    assert a != b  # per-user salt
    assert a.startswith("scrypt$16384$8$1$")
    assert verify_password("pw-1", a)
    assert not verify_password("pw-2", a)
    assert not verify_password("pw-1", None)
    assert not verify_password("pw-1", "md5$garbage")


def test_failure_limiter_slides() -> None:
    lim = FailureLimiter(max_failures=2, window_s=10)
    lim.fail("k", now=0)
    assert lim.retry_after("k", now=1) == 0
    lim.fail("k", now=1)
    assert lim.retry_after("k", now=2) == pytest.approx(8)
    assert lim.retry_after("k", now=10.5) == 0  # the first left the window
    lim.reset("k")
    assert lim.retry_after("k", now=2) == 0
    small = FailureLimiter(max_failures=1, window_s=10, max_keys=4)
    for i in range(10):
        small.fail(f"k{i}", now=i)
    assert len(small._failures) <= 4


# -------------------------------------------------------------------- login


async def test_login_me_logout(client: httpx.AsyncClient) -> None:
    r = await login(client, "  OWNER@example.COM")  # case-insensitive
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["user"]["role"] == "owner"
    expires = datetime.fromisoformat(body["expires_at"])
    left = expires - datetime.now(UTC)
    assert timedelta(hours=11, minutes=59) < left <= timedelta(hours=12)
    token = body["access_token"]
    me = await client.get("/v1/me", headers=auth(token))
    assert me.status_code == 200
    assert me.json()["email"] == "owner@example.com" and me.json()["gateway_ids"] == []
    assert (
        await client.post("/v1/auth/logout", headers=auth(token))
    ).status_code == 204
    r = await client.get("/v1/me", headers=auth(token))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


async def test_only_the_token_hash_is_stored(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    token = (await login(client)).json()["access_token"]
    stored = await conn.fetchval("SELECT token_sha256 FROM api_tokens")
    assert len(stored) == 32 and token.encode() not in stored
    pw = await conn.fetchval("SELECT password_hash FROM users")
    assert PASSWORD not in pw


async def test_logout_all_revokes_every_token(client: httpx.AsyncClient) -> None:
    t1 = (await login(client)).json()["access_token"]
    t2 = (await login(client)).json()["access_token"]
    r = await client.post("/v1/auth/logout_all", headers=auth(t1))
    assert r.status_code == 200 and r.json()["revoked"] == 2
    for t in (t1, t2):
        assert (await client.get("/v1/me", headers=auth(t))).status_code == 401


async def test_expired_and_bogus_tokens_are_401(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    token = (await login(client)).json()["access_token"]
    await conn.execute("UPDATE api_tokens SET expires_at = now() - interval '1 s'")
    assert (await client.get("/v1/me", headers=auth(token))).status_code == 401
    for header in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer " + "x" * 5000},
    ):
        r = await client.get("/v1/me", headers=header)
        assert r.status_code == 401, header


async def test_wrong_password_and_unknown_account_look_the_same(
    client: httpx.AsyncClient,
) -> None:
    a = await login(client, pw="wrong")
    b = await login(client, email="nobody@example.com")
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json()


async def test_login_rate_limit_per_email(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert (await login(client, pw="wrong")).status_code == 401
    r = await login(client)  # even the right password, for now
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 300
    assert "try again" in r.json()["detail"]
    # another account from the same address is not locked out by this one
    r = await login(client, email="other@example.com", pw="x")
    assert r.status_code == 401


async def test_login_rate_limit_per_address(client: httpx.AsyncClient) -> None:
    for i in range(8):
        r = await login(client, email=f"guess{i}@example.com", pw="x")
        assert r.status_code == 401
    r = await login(client)
    assert r.status_code == 429 and "Retry-After" in r.headers


async def test_success_resets_the_email_counter(client: httpx.AsyncClient) -> None:
    # 4 + 3 failures: under the address's 8, over the e-mail's 5 without a reset
    for _ in range(4):
        await login(client, pw="wrong")
    assert (await login(client)).status_code == 200
    for _ in range(3):
        assert (await login(client, pw="wrong")).status_code == 401
    assert (await login(client)).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "x"}, "email"),
        ({"email": "not-an-email", "password": "x"}, "email"),
        ({"email": "a@b.c"}, "password"),
        ({"email": "a@b.c", "password": ""}, "password"),
        ({"email": "a@b.c", "password": "x" * 2000}, "password"),
        ({"email": "a@b.c", "password": "x", "remember": True}, "remember"),
        ({"email": 5, "password": "x"}, "email"),
    ],
)
async def test_login_422_names_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    r = await client.post("/v1/auth/login", json=body)
    assert r.status_code == 422, r.text
    assert field in {str(d["loc"][-1]) for d in r.json()["detail"]}


async def test_login_odd_bodies_are_4xx(client: httpx.AsyncClient) -> None:
    for content in (b"", b"{", b"[]", b"null", "\u00e9".encode("latin-1")):
        r = await client.post(
            "/v1/auth/login",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        assert 400 <= r.status_code < 500, (content, r.status_code)


async def test_openapi_declares_bearer_auth(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    for path in (
        "/v1/auth/login",
        "/v1/me",
        "/v1/sites",
        "/v1/claims",
        "/v1/fleet",
        "/v1/gateways/{gateway_id}/commissioning",
        "/v1/gateways/{gateway_id}/meters/{meter_id}/readings",
    ):
        assert path in spec["paths"], path


# ---------------------------------------------------------------------- CLI


def test_cli_user_add(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(email: str, role: str, stdin: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        argv = ["cloud", "user", "add", "--database-url", pg_dsn, "--email", email]
        return cli.main([*argv, "--role", role, "--password-stdin"])

    async def fetch() -> asyncpg.Record:
        c = await asyncpg.connect(pg_dsn)
        try:
            row: asyncpg.Record = await c.fetchrow(
                "SELECT * FROM users WHERE email = 'inst@example.com'"
            )
            return row
        finally:
            await c.close()

    assert run("Inst@Example.com", "installer", "s3cret-enough\n") == 0
    row = asyncio.run(fetch())
    assert row["role"] == "installer"
    assert verify_password("s3cret-enough", row["password_hash"])
    assert run("inst@example.com", "owner", "s3cret-enough\n") == 1  # exists
    assert run("x@example.com", "owner", "short\n") == 2


async def test_bootstrap_operator(conn: asyncpg.Connection, pg_dsn: str) -> None:
    settings = ApiSettings(
        bootstrap_operator_email="Root@Example.com",
        bootstrap_operator_password="first-password",  # type: ignore[arg-type]
    )
    for _ in range(2):  # a restart keeps the account as it is
        app = create_app(pg_dsn, settings=settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await login(c, "root@example.com", "first-password")
                assert r.status_code == 200 and r.json()["user"]["role"] == "operator"
    assert (
        await conn.fetchval("SELECT count(*) FROM users WHERE role = 'operator'") == 1
    )
