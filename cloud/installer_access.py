"""Hand-over of a home from its installer to its owner, and the installers'
access after it (issue 10).

* **Invitation.** ``POST /v1/sites`` stores the owner's e-mail on the site
  (``sites.owner_invite_email``) whether or not an account has it, and answers
  the same either way, so the installer cannot tell which e-mails have
  accounts. The owner takes the site over (``take_over_invited_sites``) when
  they next log in or their client next asks ``GET /v1/me`` or ``GET
  /v1/sites``; an account made later for that e-mail does the same. Until then
  the installer may correct the e-mail; after it, only that owner's e-mail is
  accepted (409 for any other).
* **Expiry.** At take-over every installer of the site who is neither kept nor
  revoked gets ``expires_at = now + FUSEBOX_INSTALLER_ACCESS_DAYS`` (default
  14 days). Before hand-over an installer's access has no end.
* **The owner decides.** ``installers`` lists who has (had) access and until
  when; ``keep`` gives an installer lasting access (also back after expiry or
  revocation); ``revoke`` ends it now.
* **Enforcement** is in one place, the tenancy check of ``cloud.auth``
  (``ACTIVE_INSTALLER`` in ``gateway_access`` and ``VISIBLE_GATEWAYS``), which
  every gateway route calls: an installer whose access ended gets 404 for
  the home, exactly as for one they never had (boost, sessions, CSV, broker
  credentials, everything).

The SQL is here; ``cloud.api.sites`` has the routes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import asyncpg

__all__ = [
    "InstallerState",
    "installer_state",
    "installers",
    "keep",
    "revoke",
    "take_over_invited_sites",
]

InstallerState = Literal["active", "expires", "expired", "kept", "revoked"]

_TAKE_OVER = """
WITH taken AS (
    UPDATE sites SET owner_id = $1, owner_invite_email = NULL,
                     handed_over_at = now(), updated_at = now()
    WHERE owner_id IS NULL AND lower(owner_invite_email) = $2
    RETURNING gateway_id
), ending AS (
    UPDATE site_installers i SET expires_at = now() + $3::interval
    FROM taken t
    WHERE i.gateway_id = t.gateway_id AND i.kept_at IS NULL
      AND i.revoked_at IS NULL AND i.expires_at IS NULL
    RETURNING i.gateway_id
)
SELECT gateway_id FROM taken ORDER BY gateway_id
"""

_LIST = """
SELECT i.user_id, u.email, i.created_at, i.expires_at, i.kept_at, i.revoked_at,
       i.expires_at IS NOT NULL AND i.expires_at <= now() AS lapsed
FROM site_installers i JOIN users u ON u.id = i.user_id
WHERE i.gateway_id = $1
"""


async def take_over_invited_sites(
    db: asyncpg.Pool | asyncpg.Connection,
    owner_id: int,
    email: str,
    installer_access: timedelta,
) -> list[str]:
    """Give the owner account ``owner_id`` (e-mail ``email``, normalised) every
    site waiting for that e-mail, and start its installers' expiry; returns the
    gateway ids taken over."""
    rows = await db.fetch(_TAKE_OVER, owner_id, email, installer_access)
    return [r["gateway_id"] for r in rows]


def installer_state(row: asyncpg.Record | dict[str, Any]) -> InstallerState:
    """``revoked``, ``kept`` (no end), ``expired``, ``expires`` (at
    ``expires_at``) or ``active`` (not handed over yet: no end)."""
    if row["revoked_at"] is not None:
        return "revoked"
    if row["kept_at"] is not None:
        return "kept"
    if row["expires_at"] is None:
        return "active"
    return "expired" if row["lapsed"] else "expires"


def _out(row: asyncpg.Record) -> dict[str, Any]:
    state = installer_state(row)
    return {
        "user_id": row["user_id"],
        "email": row["email"],
        "since": row["created_at"],
        "state": state,
        "has_access": state in ("active", "expires", "kept"),
        "expires_at": row["expires_at"],
        "kept_at": row["kept_at"],
        "revoked_at": row["revoked_at"],
    }


async def installers(db: asyncpg.Pool, gateway_id: str) -> list[dict[str, Any]]:
    """Every installer the home has had, with their state, oldest first."""
    rows = await db.fetch(_LIST + " ORDER BY i.created_at, i.user_id", gateway_id)
    return [_out(r) for r in rows]


async def _change(
    db: asyncpg.Pool, gateway_id: str, user_id: int, assignments: str
) -> dict[str, Any] | None:
    done = await db.fetchval(
        f"UPDATE site_installers SET {assignments}"
        " WHERE gateway_id = $1 AND user_id = $2 RETURNING user_id",
        gateway_id,
        user_id,
    )
    if done is None:
        return None
    row = await db.fetchrow(_LIST + " AND i.user_id = $2", gateway_id, user_id)
    return _out(row) if row is not None else None


async def keep(
    db: asyncpg.Pool, gateway_id: str, user_id: int
) -> dict[str, Any] | None:
    """Lasting access for installer ``user_id`` (back too, if it had ended);
    None if they never were this home's installer."""
    return await _change(
        db,
        gateway_id,
        user_id,
        "kept_at = now(), expires_at = NULL, revoked_at = NULL",
    )


async def revoke(
    db: asyncpg.Pool, gateway_id: str, user_id: int
) -> dict[str, Any] | None:
    """End installer ``user_id``'s access now; None if they never were this
    home's installer."""
    return await _change(
        db,
        gateway_id,
        user_id,
        "revoked_at = coalesce(revoked_at, now()), kept_at = NULL",
    )
