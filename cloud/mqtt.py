"""The MQTT client every cloud service opens on the cloud broker.

One place for what ingest and the scheduler share: the target's host, port,
credentials and TLS, a clean session, a 30 s keepalive and a 10 s timeout. Also
the one cloud module that imports aiomqtt (an import-linter contract keeps it
so): the names the services use come from here.
"""

from __future__ import annotations

from typing import Any

import aiomqtt
from aiomqtt import Client, Message, MqttError, ProtocolVersion, TLSParameters, Will
from aiomqtt.exceptions import MqttConnectError

from protocols.urls import MqttTarget

__all__ = [
    "Client",
    "Message",
    "MqttConnectError",
    "MqttError",
    "ProtocolVersion",
    "TLSParameters",
    "Will",
    "cloud_client",
]


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
