"""Accounts: login (e-mail and password for a bearer token, throttled by
exponential delay per account and client address, ``cloud.auth.LoginThrottle``),
changing one's password (under the policy of ``cloud.passwords``), logout of
this token or of every token of the account, and who the caller is. An owner
takes over the sites set up for their e-mail at login and at ``GET /v1/me``
(``cloud.installer_access``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field

from cloud.api.deps import VISIBLE_GATEWAYS, Db, Settings, User
from cloud.api.errors import field_error
from cloud.auth import (
    LoginThrottle,
    client_ip,
    hash_password,
    hash_pool,
    issue_token,
    normalise_email,
    too_many,
    verify_password,
)
from cloud.installer_access import take_over_invited_sites
from cloud.passwords import WeakPassword, check_password
from protocols.bodies import RequestBody

router = APIRouter()

_EMAIL = r"^\s*[^@\s]{1,64}@[^@\s]{1,189}\s*$"


class LoginBody(RequestBody):
    """E-mail and password of an account."""

    email: Annotated[str, Field(pattern=_EMAIL, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


@router.post("/v1/auth/login")
async def login(
    body: LoginBody, request: Request, db: Db, st: Settings
) -> dict[str, Any]:
    """E-mail and password for a bearer token. Wrong passwords for one account
    from one address are answered 429 with ``Retry-After`` after a few, with a
    delay doubling per failure (``cloud.auth.LoginThrottle``): never a lock that
    keeps the owner out from their own address."""
    throttle: LoginThrottle = request.app.state.login_throttle
    email = normalise_email(body.email)
    ip = client_ip(request)
    wait = throttle.retry_after_s(email, ip)
    if wait > 0:
        raise too_many(wait, "logins")
    row = await db.fetchrow(
        "SELECT id, email, role, password_hash FROM users WHERE lower(email) = $1",
        email,
    )
    # on the bounded hashing pool: 503 with Retry-After when it is full
    ok = await hash_pool(request).run(
        verify_password, body.password, row["password_hash"] if row else None
    )
    if not ok or row is None:
        throttle.failed(email, ip)
        raise HTTPException(
            401, "wrong e-mail or password", headers={"WWW-Authenticate": "Bearer"}
        )
    throttle.succeeded(email, ip)
    if row["role"] == "owner":
        grace = timedelta(days=st.installer_access_days)
        await take_over_invited_sites(db, row["id"], email, grace)
    token, tok = await issue_token(db, row["id"], timedelta(seconds=st.token_ttl_s), ip)
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_at": tok["expires_at"],
        "user": {"id": row["id"], "email": row["email"], "role": row["role"]},
    }


class PasswordChange(RequestBody):
    """The password in use and the new one (``cloud.passwords`` policy)."""

    current_password: Annotated[str, Field(min_length=1, max_length=1024)]
    new_password: Annotated[str, Field(min_length=1, max_length=1024)]


@router.post("/v1/auth/password")
async def change_password(
    body: PasswordChange, request: Request, db: Db, user: User
) -> dict[str, Any]:
    """Change the caller's password; every other token of the account is
    revoked (this one stays). A wrong current password is 403 and counts like a
    failed login; a new one the policy refuses is 422 naming ``new_password``."""
    throttle: LoginThrottle = request.app.state.login_throttle
    ip = client_ip(request)
    wait = throttle.retry_after_s(user.email, ip)
    if wait > 0:
        raise too_many(wait, "password checks")
    try:
        check_password(body.new_password, email=user.email)
    except WeakPassword as exc:
        raise field_error("new_password", str(exc)) from None
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    pool = hash_pool(request)
    if not await pool.run(verify_password, body.current_password, stored):
        throttle.failed(user.email, ip)
        raise HTTPException(403, "the current password is wrong")
    throttle.succeeded(user.email, ip)
    new_hash = await pool.run(hash_password, body.new_password)
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1", user.id, new_hash
        )
        done = await conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1"
            " AND revoked_at IS NULL AND token_sha256 <> $2",
            user.id,
            user.token_sha256,
        )
    return {"changed": True, "revoked_other_tokens": int(done.split()[-1])}


@router.post("/v1/auth/logout", status_code=204)
async def logout(db: Db, user: User) -> Response:
    """Revoke the token of this request."""
    await db.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE token_sha256 = $1"
        " AND revoked_at IS NULL",
        user.token_sha256,
    )
    return Response(status_code=204)


@router.post("/v1/auth/logout_all")
async def logout_all(db: Db, user: User) -> dict[str, Any]:
    """Revoke every token of this account (all devices)."""
    done = await db.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1"
        " AND revoked_at IS NULL",
        user.id,
    )
    return {"revoked": int(done.split()[-1])}


@router.get("/v1/me")
async def me(db: Db, user: User, st: Settings) -> dict[str, Any]:
    """The caller's account and the gateways they may see (an operator: all,
    given as null). An owner takes over the sites set up for their e-mail."""
    if user.role == "owner":
        grace = timedelta(days=st.installer_access_days)
        await take_over_invited_sites(db, user.id, user.email, grace)
    gws = await db.fetch(VISIBLE_GATEWAYS + " ORDER BY g.id", user.id, user.role)
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "gateway_ids": [r["id"] for r in gws] if user.role != "operator" else None,
    }
