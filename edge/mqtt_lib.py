"""aiomqtt, and the paho client under it, for the edge: the one module that imports
them (an import-linter contract keeps it so).

Besides the names the uplink and the meter driver use, it holds the three reaches
below aiomqtt's public API that the meter driver needs, so a new aiomqtt version
is checked in one place: manual PUBACKs (paho's ``manual_ack_set``; aiomqtt has no
switch), the CONNACK's session-present flag (aiomqtt drops it), and the messages a
client received but had not handed out when its link dropped.
"""

from __future__ import annotations

from typing import Any

from aiomqtt import Client, Message, MqttError, TLSParameters, Topic, Will

__all__ = [
    "Client",
    "Message",
    "MqttError",
    "TLSParameters",
    "Topic",
    "Will",
    "manual_acks",
    "undelivered",
    "watch_session_present",
]


def manual_acks(client: Client) -> Any:
    """Make ``client`` acknowledge a QoS 1 message only when told; returns the
    paho client whose ``ack(mid, qos)`` does it."""
    paho = client._client
    paho.manual_ack_set(True)
    return paho


def watch_session_present(paho: Any) -> list[bool]:
    """Record the CONNACK's session-present flag of ``paho`` in the returned list
    (one entry per connect), still calling aiomqtt's own handler."""
    seen: list[bool] = []
    aiomqtt_on_connect = paho.on_connect

    def on_connect(
        client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        """paho's CONNACK callback: note the flag, then run aiomqtt's handler."""
        seen.append(bool(getattr(flags, "session_present", False)))
        aiomqtt_on_connect(client, userdata, flags, reason_code, properties)

    paho.on_connect = on_connect
    return seen


def undelivered(client: Client) -> list[Message]:
    """Messages ``client`` received but had not handed out (its iterator stops at
    a disconnect and leaves them); taken out of the client."""
    queue = client._queue
    out: list[Message] = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
