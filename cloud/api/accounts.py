"""Accounts: login (e-mail and password for a bearer token, rate limited),
logout of this token or of every token of the account, and who the caller is."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import Field

from cloud.api.deps import VISIBLE_GATEWAYS, Db, Settings, User
from cloud.auth import (
    FailureLimiter,
    client_ip,
    issue_token,
    normalise_email,
    too_many,
    verify_password,
)
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
    """E-mail and password for a bearer token. Repeated failures for one
    e-mail or from one address are refused with 429 and ``Retry-After``."""
    by_email: FailureLimiter = request.app.state.login_by_email
    by_ip: FailureLimiter = request.app.state.login_by_ip
    email = normalise_email(body.email)
    ip = client_ip(request)
    wait = max(by_email.retry_after(email), by_ip.retry_after(ip))
    if wait > 0:
        raise too_many(wait, "logins")
    row = await db.fetchrow(
        "SELECT id, email, role, password_hash FROM users WHERE lower(email) = $1",
        email,
    )
    ok = await asyncio.to_thread(
        verify_password, body.password, row["password_hash"] if row else None
    )
    if not ok or row is None:
        by_email.fail(email)
        by_ip.fail(ip)
        raise HTTPException(
            401, "wrong e-mail or password", headers={"WWW-Authenticate": "Bearer"}
        )
    by_email.reset(email)
    token, tok = await issue_token(db, row["id"], timedelta(seconds=st.token_ttl_s), ip)
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_at": tok["expires_at"],
        "user": {"id": row["id"], "email": row["email"], "role": row["role"]},
    }


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
async def me(db: Db, user: User) -> dict[str, Any]:
    """The caller's account and the gateways they may see (an operator: all,
    given as null)."""
    gws = await db.fetch(VISIBLE_GATEWAYS + " ORDER BY g.id", user.id, user.role)
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "gateway_ids": [r["id"] for r in gws] if user.role != "operator" else None,
    }
