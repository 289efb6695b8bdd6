"""The MQTT client every cloud service opens on the cloud broker.

One place for what ingest and the scheduler share: the target's host, port,
credentials and TLS, a clean session, a 30 s keepalive and a 10 s timeout.
"""

from __future__ import annotations

from typing import Any

import aiomqtt

from protocols.urls import MqttTarget

__all__ = ["cloud_client"]


def cloud_client(target: MqttTarget, identifier: str, **options: Any) -> aiomqtt.Client:
    """An (unconnected) aiomqtt client for ``target``; ``options`` add to or
    override the defaults (e.g. ``max_inflight_messages``)."""
    settings: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "identifier": identifier,
        "clean_session": True,
        "tls_params": aiomqtt.TLSParameters() if target.tls else None,
        "keepalive": 30,
        "timeout": 10,
    }
    settings.update(options)
    return aiomqtt.Client(target.host, target.port, **settings)
