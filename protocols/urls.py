"""Connection URLs for brokers, parsed without touching the network."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_MQTT_SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True), "tcp": (1883, False)}


class BadURL(ValueError):
    """A connection URL that cannot be used; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def url(self, *, with_password: bool = False) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        auth = ""
        if self.username:
            auth = self.username
            if self.password and with_password:
                auth += f":{self.password}"
            elif self.password:
                auth += ":***"
            auth += "@"
        return f"{scheme}://{auth}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://user:pass@host:1883`` (or ``mqtts://`` for TLS) to a ``MqttTarget``."""
    parts = urlsplit(url)
    if parts.scheme not in _MQTT_SCHEMES:
        raise BadURL(
            f"{url!r}: scheme must be mqtt:// or mqtts://, e.g. mqtt://127.0.0.1:1883"
        )
    default_port, tls = _MQTT_SCHEMES[parts.scheme]
    if not parts.hostname:
        raise BadURL(f"{url!r}: no host, e.g. mqtt://127.0.0.1:1883")
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise BadURL(f"{url!r}: {exc}") from None
    return MqttTarget(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
