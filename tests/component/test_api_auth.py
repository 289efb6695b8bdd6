"""Accounts, login, tokens, the login throttle and the password policy, against a
real PostgreSQL through the real app."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from cloud.api import create_app
from cloud.auth import (
    ApiSettings,
    FailureLimiter,
    LoginThrottle,
    create_user,
    hash_password,
    verify_password,
)
from cloud.db import migrate
from cloud.passwords import WeakPassword
from fusebox import cli

PASSWORD = "correct horse battery"
HOME, ELSEWHERE = "198.51.100.7", "203.0.113.9"  # the owner's and an attacker's
SETTINGS = ApiSettings(login_address_free_failures=8, login_address_max_delay_s=30)


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app(
    conn: asyncpg.Connection, pg_dsn: str, clock: FakeClock
) -> AsyncIterator[FastAPI]:
    app = create_app(pg_dsn, settings=SETTINGS)
    app.state.login_throttle = LoginThrottle.from_settings(SETTINGS, clock=clock)
    async with app.router.lifespan_context(app):
        yield app


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(app, ELSEWHERE) as c:
        yield c


@pytest.fixture
async def home(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(app, HOME) as c:
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


async def test_wrong_passwords_elsewhere_never_lock_the_owner_out(
    client: httpx.AsyncClient, home: httpx.AsyncClient, clock: FakeClock
) -> None:
    # the attack of issue 10: wrong passwords typed for the owner's e-mail
    for _ in range(3):
        assert (await login(client, pw="wrong")).status_code == 401
    r = await login(client)  # even the right password waits, from there
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "1"
    assert "try again in 1 s" in r.json()["detail"]
    # another account from the attacker's address is not delayed by this one
    r = await login(client, email="other@example.com", pw="x")
    assert r.status_code == 401
    # the owner at home logs in at once, however long the attack goes on
    assert (await login(home)).status_code == 200
    for _ in range(20):
        clock.now += 1000
        assert (await login(client, pw="wrong")).status_code == 401
        assert (await login(home)).status_code == 200


async def test_the_delay_doubles_per_failure_up_to_the_cap(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    for _ in range(3):
        assert (await login(client, pw="wrong")).status_code == 401
    waits = []
    for _ in range(12):
        r = await login(client, pw="wrong")
        assert r.status_code == 429
        wait = int(r.headers["Retry-After"])
        waits.append(wait)
        clock.now += wait - 0.5
        assert (await login(client, pw="wrong")).status_code == 429  # not yet
        clock.now += 0.5
        # the next try is allowed (and wrong again: the wait doubles)
        assert (await login(client, pw="wrong")).status_code == 401
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
    # a day without failures: from zero again
    clock.now += 86400
    assert (await login(client)).status_code == 200


async def test_address_ceiling_delays_and_does_not_lock(
    client: httpx.AsyncClient, home: httpx.AsyncClient, clock: FakeClock
) -> None:
    for i in range(8):  # 8 accounts guessed from one address
        r = await login(client, email=f"guess{i}@example.com", pw="x")
        assert r.status_code == 401
    r = await login(client)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert (await login(home)).status_code == 200  # other addresses: untouched
    clock.now += 1
    assert (await login(client)).status_code == 200  # a delay, not a lock


async def test_success_resets_the_pair(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    # 2 + 2 failures: under the 3 free ones each time, thanks to the success
    for _ in range(2):
        assert (await login(client, pw="wrong")).status_code == 401
    assert (await login(client)).status_code == 200
    for _ in range(2):
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


def test_cli_user_add(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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
    capsys.readouterr()
    for weak, rule in (
        ("short", "at least 10 characters"),
        ("password123", "most common"),
        ("1234567890", "most common"),
        ("xavier-2024-home", "name part of the account's e-mail"),
    ):
        assert run("xavier@example.com", "owner", weak + "\n") == 2
        assert rule in capsys.readouterr().err, weak
    assert asyncio.run(fetch_count(pg_dsn)) == 1  # the installer alone


async def fetch_count(dsn: str) -> int:
    c = await asyncpg.connect(dsn)
    try:
        n: int = await c.fetchval("SELECT count(*) FROM users")
        return n
    finally:
        await c.close()


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


def test_cli_refuses_to_start_the_api_with_a_weak_bootstrap_password(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FUSEBOX_BOOTSTRAP_OPERATOR_EMAIL", "root@example.com")
    monkeypatch.setenv("FUSEBOX_BOOTSTRAP_OPERATOR_PASSWORD", "x")
    with pytest.raises(SystemExit) as exited:
        cli.main(["cloud", "api", "--database-url", pg_dsn, "--api-port", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "FUSEBOX_BOOTSTRAP_OPERATOR_PASSWORD" in err
    assert "at least 10 characters" in err
    assert "fusebox cloud user add --role operator" in err


async def test_create_user_applies_the_policy(conn: asyncpg.Connection) -> None:
    for weak in ("password", "12345678", "qwertyuiop", "newperson-pass"):
        with pytest.raises(WeakPassword):
            await create_user(conn, "newperson@example.com", "owner", weak)
    assert not await conn.fetchval(
        "SELECT count(*) FROM users WHERE email = 'newperson@example.com'"
    )


async def test_change_password(
    client: httpx.AsyncClient, home: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    t1 = (await login(home)).json()["access_token"]
    t2 = (await login(home)).json()["access_token"]
    path = "/v1/auth/password"
    for new, rule in (
        ("short", "at least 10 characters"),
        ("password123", "most common"),
        ("the owner's key", "name part"),
    ):
        r = await home.post(
            path,
            json={"current_password": PASSWORD, "new_password": new},
            headers=auth(t1),
        )
        assert r.status_code == 422, r.text
        [d] = r.json()["detail"]
        assert d["loc"] == ["body", "new_password"] and rule in d["msg"], d
    r = await home.post(
        path,
        json={"current_password": "wrong", "new_password": "a better one, at last"},
        headers=auth(t1),
    )
    assert r.status_code == 403
    r = await home.post(
        path,
        json={"current_password": PASSWORD, "new_password": "a better one, at last"},
        headers=auth(t1),
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"changed": True, "revoked_other_tokens": 1}
    assert (await home.get("/v1/me", headers=auth(t1))).status_code == 200
    assert (await home.get("/v1/me", headers=auth(t2))).status_code == 401
    assert (await login(home)).status_code == 401  # the old one is gone
    assert (await login(home, pw="a better one, at last")).status_code == 200
    assert (await client.post(path, json={})).status_code in (401, 422)
