"""Claiming a gateway (``POST /v1/claims``): the gateway shows a claim code at
first start and reports sha256(code) in its status; an installer who types the
code becomes the gateway's installer. Every answer takes the same time and
repeated failures are refused with 429, so the codes cannot be guessed online."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import Field

from cloud.api.deps import Db, Settings, User, require_role
from cloud.auth import FailureLimiter, client_ip, too_many
from protocols.bodies import RequestBody

log = logging.getLogger("fusebox.cloud.api")

router = APIRouter()


class ClaimBody(RequestBody):
    """The claim code a new gateway shows at first start."""

    claim_code: Annotated[
        str, Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9 \-]+$")
    ]


def claim_hashes(code: str) -> list[str]:
    """sha256 hex of the code as typed and of its usual normalisations (case,
    spaces and dashes), so a code read off a screen matches however it is typed."""
    base = code.strip()
    forms = {
        base,
        base.upper(),
        base.replace("-", "").replace(" ", ""),
        base.upper().replace("-", "").replace(" ", ""),
    }
    return sorted(hashlib.sha256(f.encode()).hexdigest() for f in forms)


@router.post("/v1/claims")
async def claim(
    body: ClaimBody, request: Request, db: Db, user: User, st: Settings
) -> dict[str, Any]:
    """Claim an unclaimed gateway with the code it shows: the caller becomes
    its installer. A wrong code is 404; every answer takes the same time and
    repeated failures are refused with 429."""
    require_role(user, "installer")
    limiter: FailureLimiter = request.app.state.claims_by_user
    keys = (f"user:{user.id}", f"ip:{client_ip(request)}")
    wait = max(limiter.retry_after(k) for k in keys)
    if wait > 0:
        raise too_many(wait, "claims")
    started = time.monotonic()
    async with db.acquire() as conn, conn.transaction():
        gw = await conn.fetchval(
            "UPDATE gateways SET claimed_by = $2, claimed_at = now()"
            " WHERE id = (SELECT id FROM gateways WHERE claim_sha256 = ANY($1)"
            " AND claimed_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE)"
            " RETURNING id",
            claim_hashes(body.claim_code),
            user.id,
        )
        if gw is not None:
            await conn.execute(
                "INSERT INTO site_installers (gateway_id, user_id)"
                " VALUES ($1, $2) ON CONFLICT DO NOTHING",
                gw,
                user.id,
            )
    # the same time for a hit and a miss, so timing says nothing
    await asyncio.sleep(max(0.0, st.claim_delay_s - (time.monotonic() - started)))
    if gw is None:
        for k in keys:
            limiter.fail(k)
        raise HTTPException(
            404, "no unclaimed gateway shows this code; check it on its screen"
        )
    log.info("gateway %s claimed by user %d", gw, user.id)
    return {"gateway_id": gw, "claimed": True}
