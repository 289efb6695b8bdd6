"""The request bodies of the local API (JSON; the page's forms carry the same)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from edge.ocpp.config import OcppVersion
from protocols.bodies import RequestBody

__all__ = ["ApproveBody", "BoostBody", "SiteBody"]


class ApproveBody(RequestBody):
    """What the installer tells about a pending charger to accept it."""

    password: SecretStr = Field(
        min_length=16,
        max_length=40,
        description=(
            "the charger's HTTP Basic password (OCPP profile 1/2): set on the "
            "charger by the edge while it is connected (1.6 AuthorizationKey, "
            "2.0.1 BasicAuthPassword), else by the installer"
        ),
    )
    ocpp_version: OcppVersion | None = Field(
        default=None, description="pin the version; unset: the charger's choice"
    )
    max_current_a: float = Field(default=32, ge=6, le=80)
    phases: Literal[1, 3] = 1
    phase: Literal[1, 2, 3] = 1


class SiteBody(RequestBody):
    """A new main fuse limit for the site."""

    main_fuse_a: float = Field(gt=0, le=2000, description="main fuse, A per phase")


class BoostBody(RequestBody):
    """Full power for one charger, for a while or until the EV is unplugged."""

    duration_min: float | None = Field(
        default=None, gt=0, le=24 * 60, description="unset: until the EV is unplugged"
    )
