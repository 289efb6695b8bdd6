"""The MQTT client every cloud service opens on the cloud broker.

One place for what ingest and the scheduler share: the target's host, port,
credentials and TLS, a clean session, a 30 s keepalive and a 10 s timeout. Also
the one cloud module that imports aiomqtt (an import-linter contract keeps it
so): the names the services use come from here.

Client ids: ``fusebox-edge-<gateway id>`` belongs to that gateway (its broker
account is bound to it, ``cloud.broker_auth``). A cloud service connecting under
such an id would take the gateway's session over, and the two would kick each
other off forever; :func:`check_cloud_client_id` refuses it (``ValueError``), and
``cloud_client`` and the services' constructors call it.
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
    "check_cloud_client_id",
    "cloud_client",
]

# the gateways' client ids (cloud.broker_auth.EDGE_CLIENT_PREFIX)
_GATEWAY_CLIENT_PREFIX = "fusebox-edge-"


def check_cloud_client_id(identifier: str) -> str:
    """``identifier`` if a cloud service may use it; ``ValueError`` saying what to do
    if it is empty or a gateway's (``fusebox-edge-...``)."""
    if not identifier:
        raise ValueError("an empty MQTT client id: leave it unset for a random one")
    if identifier.startswith(_GATEWAY_CLIENT_PREFIX):
        raise ValueError(
            f"MQTT client id {identifier[:80]!r}: ids starting with "
            f"{_GATEWAY_CLIENT_PREFIX!r} belong to gateways; a cloud service using "
            "one would take that gateway's connection over. Leave the client id "
            "unset (a random fusebox-ingest-/fusebox-scheduler- id) or pick another"
        )
    return identifier


def cloud_client(target: MqttTarget, identifier: str, **options: Any) -> aiomqtt.Client:
    """An (unconnected) aiomqtt client for ``target``; ``options`` add to or
    override the defaults (e.g. ``max_inflight_messages``)."""
    settings: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "identifier": check_cloud_client_id(identifier),
        "clean_session": True,
        "tls_params": aiomqtt.TLSParameters() if target.tls else None,
        "keepalive": 30,
        "timeout": 10,
    }
    settings.update(options)
    return aiomqtt.Client(target.host, target.port, **settings)
