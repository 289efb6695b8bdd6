"""Accounts, passwords, bearer tokens, login throttling and tenancy (issues 5, 10).

* Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1, 16-byte salt per user, 32-byte
  key), stored as ``scrypt$n$r$p$salt_b64$key_b64`` so the cost can be raised later
  without breaking old hashes; compared in constant time. A login for an unknown
  e-mail still runs one scrypt, so timing does not tell which accounts exist. New
  passwords must pass the policy of ``cloud.passwords`` (``create_user`` and the
  bootstrap operator's setting check it).
* Tokens: 32 random bytes (urlsafe base64 to the client); only their sha256 is
  stored. They expire (default 12 h) and are revoked on logout or "log out
  everywhere".
* Hashing on the request path goes through the process's ``HashPool``
  (``hash_pool(request)``), which refuses at once when full; ``hashing_busy``
  answers that 503 with ``Retry-After``.
* Login throttling (``LoginThrottle``, the pure ``protocols.throttle`` inside):
  exponential delay per (account, client address) pair, never a lock, so wrong
  passwords typed for someone's e-mail elsewhere do not keep them out; per address
  only a high ceiling, with delay too. The client address is the socket's unless
  ``FUSEBOX_TRUSTED_PROXIES`` names the proxy in front (``cloud.run``). In memory
  per API process: with N processes an attacker gets N times the budget. Claims
  keep the sliding-window ``FailureLimiter``.
* Tenancy (``gateway_access``): an owner sees the gateways of the sites they own, an
  installer the gateways they claimed or were assigned while that access is live
  (``ACTIVE_INSTALLER``: not revoked by the owner, not expired after hand-over,
  see ``cloud.installer_access``), an operator every gateway but read-only. A
  gateway someone may not see is answered 404, exactly like one that does not
  exist, so existence is never revealed; a visible one the role may not change is
  403.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal

import asyncpg
from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud.passwords import (
    HashPool,
    HashPoolFull,
    check_password,
    common_passwords,
    password_problem,
)
from protocols.throttle import DelayPolicy, Throttle

Role = Literal["owner", "installer", "operator"]
ROLES: tuple[Role, ...] = ("owner", "installer", "operator")

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAX_PASSWORD_BYTES = 1024


class ApiSettings(BaseSettings):
    """Settings of the API's people side, from ``FUSEBOX_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="FUSEBOX_", extra="ignore")

    token_ttl_s: int = Field(default=12 * 3600, ge=60, le=30 * 86400)
    login_free_failures: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="wrong passwords per (account, address) pair before any delay",
    )
    login_first_delay_s: float = Field(default=1, gt=0, le=3600)
    login_max_delay_s: float = Field(
        default=900, gt=0, le=86400, description="the delay doubles up to this"
    )
    login_address_free_failures: int = Field(
        default=100,
        ge=0,
        le=1_000_000,
        description="wrong passwords from one address (any account) before delay",
    )
    login_address_max_delay_s: float = Field(default=60, gt=0, le=86400)
    login_forget_after_s: float = Field(
        default=86400,
        gt=0,
        le=30 * 86400,
        description="a pair or address with no failure for this long starts afresh",
    )
    claim_max_failures: int = Field(default=10, ge=1, le=1000)
    claim_window_s: float = Field(default=300, gt=0, le=86400)
    claim_delay_s: float = Field(
        default=0.4, ge=0, le=10, description="every claim answer takes this long"
    )
    public_mqtt_url: str | None = Field(
        default=None,
        description="the cloud broker URL written into gateways' config bundles; "
        "default: FUSEBOX_CLOUD_MQTT_URL without its credentials",
    )
    cloud_mqtt_url: str | None = None
    bootstrap_operator_email: str | None = Field(
        default=None,
        description="with bootstrap_operator_password: create this operator account "
        "at start if it does not exist (first install, demo, end-to-end tests)",
    )
    bootstrap_operator_password: SecretStr | None = None
    online_within_s: float = Field(
        default=120, gt=0, description="a gateway whose last status is older: offline"
    )
    installer_access_days: float = Field(
        default=14,
        ge=0,
        le=3650,
        description="installers keep access this long after the owner takes over "
        "the site, unless the owner keeps them (cloud.installer_access)",
    )

    @model_validator(mode="after")
    def _strong_bootstrap_password(self) -> ApiSettings:
        password = self.bootstrap_operator_password
        if password is not None:
            problem = password_problem(
                password.get_secret_value(),
                email=self.bootstrap_operator_email,
                common=common_passwords(),
            )
            if problem is not None:
                raise ValueError(
                    f"FUSEBOX_BOOTSTRAP_OPERATOR_PASSWORD: the password {problem}. "
                    "Set a stronger one, or unset it and create the operator with "
                    "`fusebox cloud user add --role operator`"
                )
        return self


# ----------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    """The storable hash of ``password`` (slow on purpose: run it off the loop)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password.encode(), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        (
            "scrypt",
            str(SCRYPT_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(key).decode(),
        )
    )


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored``; always does one scrypt, also when
    there is no stored hash (unknown account), so timing tells nothing."""
    params = _parse(stored) if stored else None
    if params is None:
        _scrypt(password.encode(), _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    n, r, p, salt, key = params
    got = _scrypt(password.encode(), salt, n, r, p)
    return hmac.compare_digest(got, key)


_DUMMY_SALT = secrets.token_bytes(_SALT_BYTES)


def hash_pool(request: Request) -> HashPool:
    """The API process's bounded hashing pool (``cloud.passwords.HashPool``):
    ``await hash_pool(request).run(verify_password, ...)``."""
    pool: HashPool = request.app.state.hash_pool
    return pool


async def hashing_busy(request: Request, exc: Exception) -> JSONResponse:
    """The answer to ``HashPoolFull``: 503 with ``Retry-After``, at once."""
    seconds = exc.retry_after_s if isinstance(exc, HashPoolFull) else 1
    return JSONResponse(
        status_code=503,
        content={"detail": f"too many logins at once; retry after {seconds} s"},
        headers={"Retry-After": str(seconds)},
    )


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password[:_MAX_PASSWORD_BYTES],
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * 1024 * 1024,
        dklen=_KEY_BYTES,
    )


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        return n, r, p, base64.b64decode(parts[4]), base64.b64decode(parts[5])
    except ValueError:
        return None


def normalise_email(email: str) -> str:
    """The form e-mails are stored and compared in: trimmed, lower case."""
    return email.strip().lower()


async def create_user(
    conn: asyncpg.Connection | asyncpg.Pool,
    email: str,
    role: Role,
    password: str | None,
) -> int:
    """Insert an account and return its id; raises ``WeakPassword`` if the policy
    refuses ``password`` (None: the account cannot log in) and
    ``asyncpg.UniqueViolationError`` if the e-mail is taken."""
    if password is not None:
        check_password(password, email=email)
    pw_hash = await asyncio.to_thread(hash_password, password) if password else None
    user_id: int = await conn.fetchval(
        "INSERT INTO users (email, role, password_hash) VALUES ($1, $2, $3)"
        " RETURNING id",
        normalise_email(email),
        role,
        pw_hash,
    )
    return user_id


async def bootstrap_operator(pool: asyncpg.Pool, settings: ApiSettings) -> None:
    """Create the configured first operator unless an account has that e-mail."""
    email, password = (
        settings.bootstrap_operator_email,
        settings.bootstrap_operator_password,
    )
    if not email or password is None:
        return
    exists = await pool.fetchval(
        "SELECT 1 FROM users WHERE lower(email) = $1", normalise_email(email)
    )
    if exists:
        return
    # another API process may be first
    with contextlib.suppress(asyncpg.UniqueViolationError):
        await create_user(pool, email, "operator", password.get_secret_value())


# -------------------------------------------------------------------- tokens


def new_token() -> tuple[str, bytes]:
    """A fresh bearer token and the sha256 digest to store."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> bytes:
    """The SHA-256 of a bearer token, as stored (the token itself never is)."""
    return hashlib.sha256(token.encode()).digest()


async def issue_token(
    db: asyncpg.Pool | asyncpg.Connection,
    user_id: int,
    ttl: timedelta,
    client_ip: str | None,
) -> tuple[str, asyncpg.Record]:
    """A new bearer token for ``user_id``, valid for ``ttl``, and its row
    (``expires_at``); drops the user's tokens expired over 7 days ago."""
    token, digest = new_token()
    # tokens long expired are of no use, not even for an audit: drop this user's
    await db.execute(
        "DELETE FROM api_tokens WHERE user_id = $1"
        " AND expires_at < now() - interval '7 days'",
        user_id,
    )
    row = await db.fetchrow(
        "INSERT INTO api_tokens (token_sha256, user_id, expires_at, client_ip)"
        " VALUES ($1, $2, now() + $3::interval, $4) RETURNING expires_at",
        digest,
        user_id,
        ttl,
        client_ip,
    )
    assert row is not None
    return token, row


# --------------------------------------------------------------- rate limits


class FailureLimiter:
    """At most ``max_failures`` failures per key within ``window_s`` (sliding), in
    this process. ``retry_after(key)`` is 0 while allowed, else the seconds until
    the oldest counted failure leaves the window."""

    def __init__(
        self, *, max_failures: int, window_s: float, max_keys: int = 100_000
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self._failures.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._failures[key]
            return None
        return q

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may try again; 0 while it is under the limit."""
        now = time.monotonic() if now is None else now
        q = self._recent(key, now)
        if q is None or len(q) < self.max_failures:
            return 0.0
        return max(0.0, q[0] + self.window_s - now)

    def fail(self, key: str, now: float | None = None) -> None:
        """Count one failure of ``key`` now (the oldest keys are pruned past
        ``max_keys``)."""
        now = time.monotonic() if now is None else now
        q = self._recent(key, now)
        if q is None:
            if len(self._failures) >= self.max_keys:
                self._prune(now)
            q = self._failures.setdefault(key, deque())
        q.append(now)
        while len(q) > self.max_failures:
            q.popleft()

    def reset(self, key: str) -> None:
        """Forget ``key``'s failures (after a success)."""
        self._failures.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        if len(self._failures) >= self.max_keys:
            # still full of live keys: forget the oldest half rather than grow
            oldest = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for key in oldest[: len(oldest) // 2]:
                del self._failures[key]


class LoginThrottle:
    """Failed logins, throttled by exponential delay (``protocols.throttle``) per
    (account e-mail, client address) pair, and with a far higher allowance per
    address alone (one address guessing across many accounts). A success clears
    the pair only: an attacker's own account cannot reset their address.
    ``clock``: monotonic seconds (tests pass a fake one)."""

    def __init__(
        self,
        pair: DelayPolicy,
        address: DelayPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.pairs = Throttle(pair, max_keys=max_keys)
        self.addresses = Throttle(address, max_keys=max_keys)
        self.clock = clock

    @classmethod
    def from_settings(
        cls, s: ApiSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> LoginThrottle:
        """The throttle ``ApiSettings`` describe (``login_*``)."""
        forget = max(s.login_forget_after_s, s.login_max_delay_s)
        pair = DelayPolicy(
            free_failures=s.login_free_failures,
            first_delay_s=min(s.login_first_delay_s, s.login_max_delay_s),
            max_delay_s=s.login_max_delay_s,
            forget_after_s=forget,
        )
        address = DelayPolicy(
            free_failures=s.login_address_free_failures,
            first_delay_s=min(s.login_first_delay_s, s.login_address_max_delay_s),
            max_delay_s=s.login_address_max_delay_s,
            forget_after_s=max(forget, s.login_address_max_delay_s),
        )
        return cls(pair, address, clock=clock)

    def retry_after_s(self, email: str, address: str) -> float:
        """Seconds until ``email`` may try again from ``address`` (0: now)."""
        now = self.clock()
        return max(
            self.pairs.retry_after_s((email, address), now),
            self.addresses.retry_after_s(address, now),
        )

    def failed(self, email: str, address: str) -> None:
        """Count a wrong password for ``email`` from ``address``."""
        now = self.clock()
        self.pairs.failed((email, address), now)
        self.addresses.failed(address, now)

    def succeeded(self, email: str, address: str) -> None:
        """A right password: the pair starts afresh (the address does not)."""
        self.pairs.succeeded((email, address))


def too_many(retry_after_s: float, what: str) -> HTTPException:
    """The 429 to raise when ``retry_after_s`` > 0, with ``Retry-After`` in whole
    seconds."""
    seconds = max(1, int(retry_after_s + 0.999))
    return HTTPException(
        429,
        f"too many failed {what}; try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def client_ip(request: Request) -> str:
    """The client address of ``request`` ("unknown" if the server has none): the
    socket's peer, or what a proxy named in ``FUSEBOX_TRUSTED_PROXIES`` said in
    ``X-Forwarded-For`` (uvicorn resolves it, ``cloud.run.api_config``)."""
    return request.client.host if request.client else "unknown"


# --------------------------------------------------------- the current user


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: account id, e-mail, role and the digest of the token
    used."""

    id: int
    email: str
    role: Role
    token_sha256: bytes


_bearer = HTTPBearer(auto_error=False, description="POST /v1/auth/login gives one")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def current_user(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The account behind the request's bearer token, or 401."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise _unauthorized("log in first: Authorization: Bearer <token>")
    if len(creds.credentials) > 256:
        raise _unauthorized("invalid, expired or revoked token")
    digest = token_digest(creds.credentials)
    pool: asyncpg.Pool = request.app.state.pool
    row = await pool.fetchrow(
        "SELECT u.id, u.email, u.role FROM api_tokens t JOIN users u"
        " ON u.id = t.user_id WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL"
        " AND t.expires_at > now()",
        digest,
    )
    if row is None:
        raise _unauthorized("invalid, expired or revoked token")
    return Principal(row["id"], row["email"], row["role"], digest)


User = Annotated[Principal, Depends(current_user)]


def require_role(user: Principal, *roles: Role) -> None:
    """Raise 403 unless ``user`` has one of ``roles``."""
    if user.role not in roles:
        raise HTTPException(403, f"this needs the role {' or '.join(roles)}")


# ------------------------------------------------------------------ tenancy


class Access(enum.Enum):
    """What a request needs to do to a gateway; which roles may do it is in the member
    comments."""

    READ = "read"  # owner, installer, operator
    CONTROL = "control"  # owner or installer: preferences, boost
    INSTALL = "install"  # installer only: site, devices, credentials
    OWN = "own"  # owner only: who else has access to the home


# The one rule for an installer's access (a ``site_installers`` row ``i``): not
# revoked by the owner and not expired (expiry is set at hand-over, cleared
# when the owner keeps the installer; cloud.installer_access).
ACTIVE_INSTALLER = (
    "i.revoked_at IS NULL AND (i.expires_at IS NULL OR i.expires_at > now())"
)

_VISIBLE = {
    "owner": "SELECT EXISTS (SELECT 1 FROM sites WHERE gateway_id = $1"
    " AND owner_id = $2)",
    "installer": "SELECT EXISTS (SELECT 1 FROM site_installers i"
    f" WHERE i.gateway_id = $1 AND i.user_id = $2 AND {ACTIVE_INSTALLER})",
    "operator": "SELECT EXISTS (SELECT 1 FROM gateways WHERE id = $1"
    " AND $2::bigint IS NOT NULL)",
}

_ALLOWED: dict[Access, tuple[Role, ...]] = {
    Access.READ: ("owner", "installer", "operator"),
    Access.CONTROL: ("owner", "installer"),
    Access.INSTALL: ("installer",),
    Access.OWN: ("owner",),
}


async def gateway_access(
    db: asyncpg.Pool | asyncpg.Connection,
    user: Principal,
    gateway_id: str,
    access: Access = Access.READ,
) -> None:
    """Return if ``user`` may do ``access`` on ``gateway_id``; 404 if they may not
    see it (or it does not exist), 403 if they see it but their role may not."""
    if not await db.fetchval(_VISIBLE[user.role], gateway_id, user.id):
        raise HTTPException(404, f"no gateway {gateway_id!r}")
    if user.role not in _ALLOWED[access]:
        raise HTTPException(
            403,
            f"{user.role}s may not change gateway {gateway_id!r}"
            if access is not Access.OWN
            else f"only the owner of gateway {gateway_id!r} may do this",
        )


VISIBLE_GATEWAYS = f"""
SELECT g.id FROM gateways g WHERE $2 = 'operator'
   OR ($2 = 'owner' AND EXISTS (SELECT 1 FROM sites s WHERE s.gateway_id = g.id
                                AND s.owner_id = $1))
   OR ($2 = 'installer' AND EXISTS (SELECT 1 FROM site_installers i
                                    WHERE i.gateway_id = g.id AND i.user_id = $1
                                    AND {ACTIVE_INSTALLER}))
"""
