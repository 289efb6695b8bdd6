"""Config models of the edge's OCPP server: the ``[ocpp]`` table and ``[[chargers]]``.

Secure by default: security profile 1 (HTTP Basic per charger) on the site LAN
address; profile 0 (no authentication at all) needs ``allow_unsecured_lab = true``;
profile 2 needs a certificate and key. Passwords are ``SecretStr`` so they never
reach a log line or a repr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

__all__ = [
    "CHARGE_POINT_ID_CHARACTERS",
    "CHARGE_POINT_ID_PATTERN",
    "MAX_CHARGE_POINT_ID",
    "ChargerConfig",
    "ChargerList",
    "IdTagConfig",
    "IdTagStatus",
    "OcppServerConfig",
    "OcppVersion",
    "ToleranceConfig",
]

OcppVersion = Literal["1.6", "2.0.1"]

# OCPP 2.0.1 identifierString (Part 2 §2.1.3), at most 48 characters; 1.6 chargers
# use the same characters in practice. The cloud checks charger ids against the
# same pattern (``protocols.lease``, ``cloud.api.deps.CHARGER_PATTERN``), so an id
# the edge lets in never stops the cloud (tests/unit/test_ocpp_pending.py)
CHARGE_POINT_ID_CHARACTERS = r"[A-Za-z0-9*\-_=:+|@.]"
MAX_CHARGE_POINT_ID = 48
CHARGE_POINT_ID_PATTERN = rf"^{CHARGE_POINT_ID_CHARACTERS}{{1,{MAX_CHARGE_POINT_ID}}}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToleranceConfig(_Strict):
    """How far the edge bends for one charger's known firmware quirks
    (``[chargers.tolerance]``). Tolerated for every charger anyway: no subprotocol
    offered (1.6), unit spellings such as ``Hz``/``Celcius``/``C``, values as
    strings, a sampled value that cannot be read (skipped, the rest stored),
    missing or unset (1970) timestamps (the time of reception is used)."""

    validation: Literal["strict", "clip_strings", "off"] = Field(
        default="strict",
        description=(
            "strict: the OCPP JSON schemas; clip_strings: strings over the schema's "
            "maxLength (e.g. 26-33 character serial numbers) are cut to fit, then "
            "the schema applies; off: no schema validation (the last resort)"
        ),
    )
    energy_in_kwh: bool = Field(
        default=False,
        description="energy registers labelled Wh (or unlabelled) are really kWh",
    )
    clock: Literal["charger", "gateway"] = Field(
        default="charger",
        description=(
            "charger: use the charger's timestamps (checked for sanity); gateway: "
            "its clock is wrong, stamp everything with the time of reception"
        ),
    )


class ChargerConfig(_Strict):
    """One charger the edge accepts, by its charge point identity."""

    id: str = Field(
        pattern=CHARGE_POINT_ID_PATTERN,
        description="charge point identity, the last segment of the charger's URL",
    )
    password: SecretStr | None = Field(
        default=None,
        min_length=16,
        max_length=40,
        description=(
            "HTTP Basic password (profiles 1 and 2). A hex string is also accepted "
            "as the raw bytes it encodes (1.6 AuthorizationKey)"
        ),
    )
    ocpp_version: OcppVersion | None = Field(
        default=None, description="pin the OCPP version; unset: the charger's choice"
    )
    lenient: bool = Field(
        default=False,
        description="shorthand for tolerance.validation = 'off'",
    )
    tolerance: ToleranceConfig = Field(
        default_factory=ToleranceConfig,
        description="the firmware quirks to tolerate for this charger",
    )
    max_current_a: float = Field(
        default=32, ge=6, le=80, description="the charger's rating, A per phase"
    )
    phases: Literal[1, 3] = Field(default=1, description="phases the charger uses")
    phase: Literal[1, 2, 3] = Field(
        default=1, description="the site phase a single-phase charger is wired to"
    )

    @field_validator("id")
    @classmethod
    def _no_dot_segment(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError(
                "a charger id may not be '.' or '..' (URLs resolve them away)"
            )
        return value

    @property
    def validation(self) -> str:
        """The effective schema validation: strict, clip_strings or off."""
        return "off" if self.lenient else self.tolerance.validation


def _unique_ids(chargers: list[ChargerConfig]) -> list[ChargerConfig]:
    seen: set[str] = set()
    for c in chargers:
        if c.id in seen:
            raise ValueError(f"charger id {c.id!r} is used twice; ids must be unique")
        seen.add(c.id)
    return chargers


ChargerList = Annotated[list[ChargerConfig], AfterValidator(_unique_ids)]


# the authorisation statuses that OCPP 1.6 (AuthorizationStatus) and 2.0.1
# (AuthorizationStatusEnumType) have in common
IdTagStatus = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]


class IdTagConfig(_Strict):
    """One entry of the local authorisation list (``[[ocpp.id_tags]]``)."""

    id: str = Field(
        min_length=1,
        max_length=36,
        description="RFID uid / id token; compared case-insensitively (1.6 IdToken)",
    )
    status: IdTagStatus = Field(
        default="Accepted", description="what Authorize and transactions answer"
    )


def _tag_entries(value: object) -> object:
    # ``id_tags = ["TAG1", "TAG2"]`` is shorthand for Accepted entries
    if isinstance(value, list):
        return [{"id": v} if isinstance(v, str) else v for v in value]
    return value


def _unique_tags(tags: list[IdTagConfig]) -> list[IdTagConfig]:
    seen: set[str] = set()
    for t in tags:
        key = t.id.casefold()
        if key in seen:
            raise ValueError(f"id tag {t.id!r} is listed twice")
        seen.add(key)
    return tags


IdTagList = Annotated[
    list[IdTagConfig], BeforeValidator(_tag_entries), AfterValidator(_unique_tags)
]


class OcppServerConfig(_Strict):
    """The OCPP-J listener chargers connect to (``ws://host:port/<identity>``)."""

    host: str = Field(default="127.0.0.1", description="the site LAN address to bind")
    port: int = Field(default=9000, ge=0, le=65535, description="0: any free port")
    security_profile: Literal[0, 1, 2] = Field(
        default=1, description="0 none (lab only), 1 Basic auth, 2 TLS + Basic auth"
    )
    allow_unsecured_lab: bool = Field(
        default=False, description="must be true to run security profile 0"
    )
    tls_cert: Path | None = Field(default=None, description="PEM chain, profile 2")
    tls_key: Path | None = Field(default=None, description="PEM key, profile 2")
    tls_client_ca: Path | None = Field(
        default=None,
        description=(
            "profile 2: PEM CA(s) for chargers' TLS client certificates (OCPP "
            "profile 3 style). Asked for, optional, verified when presented; a "
            "pending charger is then bound to its certificate, not its address"
        ),
    )
    allow_discovery: bool = Field(
        default=False,
        description="hold unknown chargers as pending for the installer, not 404",
    )
    max_pending: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="pending (discovered) chargers the gateway holds at most",
    )
    max_pending_per_address: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="pending chargers one source address may hold at most",
    )
    pending_expiry_s: int = Field(
        default=24 * 3600,
        ge=60,
        description=(
            "a pending charger (or an approved one whose password waits for it) "
            "with no connection this long is dropped"
        ),
    )
    ping_interval_s: float | None = Field(
        default=30, gt=0, description="websocket ping interval; unset: no pings"
    )
    ping_timeout_s: float | None = Field(
        default=30, gt=0, description="close when a ping is unanswered this long"
    )
    max_message_bytes: int = Field(
        default=1024 * 1024, ge=4096, description="larger frames close the link (1009)"
    )
    heartbeat_interval_s: int = Field(
        default=300, ge=10, description="interval in BootNotification Accepted"
    )
    pending_retry_s: int = Field(
        default=60, ge=10, description="interval in BootNotification Pending"
    )
    response_timeout_s: float = Field(
        default=30, gt=0, description="wait for a charger's answer to our CALLs"
    )
    id_tags: IdTagList = Field(
        default_factory=list,
        description=(
            "local authorisation list: [[ocpp.id_tags]] id + status, or a list of "
            "ids (all Accepted); the cloud is not consulted"
        ),
    )
    allow_unknown_id_tags: bool = Field(
        default=False,
        description=(
            "answer Accepted for tags neither in id_tags nor in the authorisation "
            "cache (default: Invalid); listed Blocked/Expired/Invalid tags stay "
            "refused"
        ),
    )
    id_tag_cache_s: int = Field(
        default=86400,
        ge=0,
        description=(
            "how long a tag once answered Accepted stays accepted after it left "
            "the list (authorisation cache; 0: no cache)"
        ),
    )

    @model_validator(mode="after")
    def _safe_profile(self) -> OcppServerConfig:
        if self.security_profile == 0 and not self.allow_unsecured_lab:
            raise ValueError(
                "security_profile 0 lets any device on the LAN act as a charger; "
                "use 1 or 2, or set allow_unsecured_lab = true for a lab"
            )
        if self.security_profile == 2 and (
            self.tls_cert is None or self.tls_key is None
        ):
            raise ValueError("security_profile 2 needs tls_cert and tls_key")
        if self.tls_client_ca is not None and self.security_profile != 2:
            raise ValueError(
                "tls_client_ca needs security_profile 2 (client certificates "
                "travel over TLS)"
            )
        return self
