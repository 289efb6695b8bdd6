"""nats-server configuration for the Fusebox backbone: one node or an N-node cluster.

Pure: :func:`render_node_config` turns a :class:`NodeSpec` (ports, store dir), the
:class:`ClusterSpec` it belongs to and the accounts (:class:`BackboneUser`) into the
text of a nats-server config file; nothing here starts a process or picks a port
(``cloud.backbone.cluster`` does).

Every node of the backbone runs, on loopback only:

* a NATS client listener (``nats://127.0.0.1:PORT``) for the cloud services;
* JetStream with its own store dir (file storage), bounded by ``max_file_store``;
* an MQTT listener (``mqtt://127.0.0.1:PORT``) for the gateways. nats-server's MQTT
  needs JetStream and a ``server_name``: it keeps sessions, retained messages and
  QoS 1 messages in its own streams ``$MQTT_sess``, ``$MQTT_rmsgs`` and
  ``$MQTT_msgs``. In a cluster those are replicated (``stream_replicas`` = min(3, N))
  so a gateway may reconnect to any node and find its session;
* a monitoring listener (``/healthz``, ``/varz``, ``/jsz``) used for readiness;
* in a cluster, a route listener and routes to every node (itself included, which
  nats-server ignores), all named ``fusebox``.

``max_payload`` is the cloud broker's packet limit
(:data:`protocols.broker_limits.CLOUD_MAX_PACKET_BYTES`, 3 MiB): nats-server's
default of 1 MiB would refuse the edge's largest legitimate batch (2 MiB).

Accounts: with ``users`` empty the node has no authorization at all (loopback tests
and the demo); otherwise only the listed users may connect, each with its publish
and subscribe permissions (``cloud.backbone.accounts`` builds them). Passwords are
written as given: pass bcrypt hashes (``$2a$...``/``$2b$...``), which nats-server
checks without ever holding the clear password.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocols.broker_limits import CLOUD_MAX_PACKET_BYTES

__all__ = [
    "CLUSTER_NAME",
    "DEFAULT_MAX_FILE_STORE_BYTES",
    "DEFAULT_MAX_MEMORY_STORE_BYTES",
    "BackboneUser",
    "ClusterSpec",
    "NodeSpec",
    "mqtt_stream_replicas",
    "render_node_config",
]

CLUSTER_NAME = "fusebox"
DEFAULT_MAX_FILE_STORE_BYTES = 8 * 1024**3
"""JetStream file storage per node: the streams' ``max_bytes`` must fit in it."""
DEFAULT_MAX_MEMORY_STORE_BYTES = 256 * 1024**2
HOST = "127.0.0.1"


@dataclass(frozen=True)
class NodeSpec:
    """One nats-server: its name, loopback ports and JetStream store dir."""

    name: str
    client_port: int
    mqtt_port: int
    monitor_port: int
    cluster_port: int | None
    store_dir: Path

    @property
    def nats_url(self) -> str:
        """``nats://127.0.0.1:PORT`` for NATS clients (the cloud services)."""
        return f"nats://{HOST}:{self.client_port}"

    @property
    def mqtt_url(self) -> str:
        """``mqtt://127.0.0.1:PORT`` for MQTT clients (the gateways)."""
        return f"mqtt://{HOST}:{self.mqtt_port}"

    @property
    def monitor_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the monitoring endpoints."""
        return f"http://{HOST}:{self.monitor_port}"


@dataclass(frozen=True)
class ClusterSpec:
    """All nodes of one backbone; a single node has ``cluster_port`` None."""

    nodes: tuple[NodeSpec, ...]
    max_file_store_bytes: int = DEFAULT_MAX_FILE_STORE_BYTES
    max_memory_store_bytes: int = DEFAULT_MAX_MEMORY_STORE_BYTES
    max_payload_bytes: int = CLOUD_MAX_PACKET_BYTES

    @property
    def clustered(self) -> bool:
        """True for more than one node."""
        return len(self.nodes) > 1


@dataclass(frozen=True)
class BackboneUser:
    """A user of the backbone: name, password (bcrypt hash, or clear for tests) and
    the subjects it may publish and subscribe to (empty: nothing). ``connection_types``
    limits the protocols it may connect with (``"STANDARD"`` for NATS, ``"MQTT"``);
    empty allows all."""

    name: str
    password: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    connection_types: tuple[str, ...] = field(default=())


def mqtt_stream_replicas(node_count: int) -> int:
    """Replicas of nats-server's own MQTT streams (sessions, retained, QoS 1)."""
    return max(1, min(3, node_count))


def _q(value: str | int) -> str:
    """A value in nats-server config syntax (JSON strings and numbers parse)."""
    return json.dumps(value)


def _user_block(user: BackboneUser) -> list[str]:
    lines = [
        "    {",
        f"      user: {_q(user.name)}",
        f"      password: {_q(user.password)}",
        "      permissions: {",
        f"        publish: {{ allow: {json.dumps(list(user.publish))} }}",
        f"        subscribe: {{ allow: {json.dumps(list(user.subscribe))} }}",
        "      }",
    ]
    if user.connection_types:
        lines.append(
            f"      allowed_connection_types: {json.dumps(list(user.connection_types))}"
        )
    lines.append("    }")
    return lines


def _cluster_block(node: NodeSpec, cluster: ClusterSpec) -> list[str]:
    routes = [
        f"nats-route://{HOST}:{other.cluster_port}"
        for other in cluster.nodes
        if other.cluster_port is not None
    ]
    return [
        "cluster {",
        f"  name: {_q(CLUSTER_NAME)}",
        f"  listen: {_q(f'{HOST}:{node.cluster_port}')}",
        "  no_advertise: true",
        f"  routes: {json.dumps(routes)}",
        "}",
    ]


def render_node_config(
    node: NodeSpec, cluster: ClusterSpec, users: Sequence[BackboneUser] = ()
) -> str:
    """The nats-server config text for ``node`` of ``cluster`` with ``users``."""
    replicas = mqtt_stream_replicas(len(cluster.nodes))
    lines = [
        "# generated by cloud.backbone.config: edit the code, not this file",
        f"server_name: {_q(node.name)}",
        f"listen: {_q(f'{HOST}:{node.client_port}')}",
        f"http: {_q(f'{HOST}:{node.monitor_port}')}",
        f"max_payload: {cluster.max_payload_bytes}",
        "jetstream {",
        f"  store_dir: {_q(str(node.store_dir))}",
        f"  max_file_store: {cluster.max_file_store_bytes}",
        f"  max_memory_store: {cluster.max_memory_store_bytes}",
        "}",
        "mqtt {",
        f"  listen: {_q(f'{HOST}:{node.mqtt_port}')}",
        f"  stream_replicas: {replicas}",
        "}",
    ]
    if cluster.clustered:
        if node.cluster_port is None:
            raise ValueError(f"node {node.name} of a cluster has no cluster port")
        lines += _cluster_block(node, cluster)
    if users:
        lines.append("authorization {")
        lines.append("  users: [")
        for user in users:
            lines += _user_block(user)
        lines.append("  ]")
        lines.append("}")
    return "\n".join(lines) + "\n"
