"""A private NATS JetStream backbone per test: 1 node or a 3-node cluster on loopback.

``start_backbone(tmp_path, nodes=1, users=None)`` starts ``nodes`` nats-server
processes (free ports, config/log/store under ``tmp_path/backbone``), waits until
JetStream is ready and creates the streams ``FUSEBOX_UP`` and ``FUSEBOX_DEAD``
(``cloud.backbone.streams``). It returns a :class:`Backbone`:

* ``.nats_urls`` / ``.mqtt_urls`` - one ``nats://`` / ``mqtt://`` URL per node;
* ``.kill(i)`` (SIGKILL node i), ``.start(i)`` (start it again, same ports, waits
  until ready), ``.stop()`` (every node, cleanly), ``.set_users(users)`` (rewrite the
  configs and SIGHUP every node), ``.log_tails()``;
* ``await .connect(i=None)``: a nats-py client as the admin user (all nodes as
  servers unless ``i`` is given);
* ``await .add_consumer(durable)`` and ``await .drain(durable)``: a durable pull
  consumer on FUSEBOX_UP (or any stream), and everything it delivers until it has
  nothing left, robust to nodes dying meanwhile.

``users=None``: no authorization (any client may do anything; loopback only). With a
list of :class:`~cloud.backbone.config.BackboneUser` (see :func:`gateway` and
:func:`service` for users with known clear passwords), only they and the harness's
admin user (``ADMIN_USER``/``ADMIN_PASSWORD``) may connect.

Fixtures: ``nats_backbone`` (1 node, no auth) and ``nats_cluster`` (3 nodes, no auth),
stopped at teardown even when the test fails; their log tails are printed on failure.
Tests needing users call ``start_backbone`` themselves inside ``try/finally`` or use
the ``backbone_factory`` fixture (stops all it started).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud.backbone.accounts import (
    ADMIN_USER,
    admin_user,
    gateway_user,
    hash_password,
    service_user,
)
from cloud.backbone.cluster import BackboneCluster
from cloud.backbone.config import BackboneUser
from cloud.backbone.streams import UP_STREAM, UP_SUBJECTS, ensure_streams
from fusebox.embedded import run_coroutine_sync
from tests.harness.timing import eventually, timeout

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "Backbone",
    "MqttProbe",
    "backbone_factory",
    "gateway",
    "nats_backbone",
    "nats_cluster",
    "service",
    "start_backbone",
]

ADMIN_PASSWORD = "fusebox-test-admin"
# low bcrypt cost: tests hash many passwords and connect often
_TEST_BCRYPT_COST = 4
_ADMIN = admin_user(hash_password(ADMIN_PASSWORD, cost=_TEST_BCRYPT_COST))


def gateway(gateway_id: str, password: str | None = None) -> tuple[BackboneUser, str]:
    """A gateway user ``gw-<id>`` and its clear password (default ``pw-<id>``)."""
    clear = password or f"pw-{gateway_id}"
    return gateway_user(gateway_id, hash_password(clear, cost=_TEST_BCRYPT_COST)), clear


def service(name: str, password: str | None = None) -> tuple[BackboneUser, str]:
    """A cloud service user (``ingest``, ``scheduler``) and its clear password."""
    clear = password or f"pw-{name}"
    return service_user(name, hash_password(clear, cost=_TEST_BCRYPT_COST)), clear


@dataclass(eq=False)
class Backbone:
    """A started backbone for one test (see the module docstring)."""

    cluster: BackboneCluster
    auth: bool

    @property
    def nats_urls(self) -> list[str]:
        """One ``nats://127.0.0.1:PORT`` per node."""
        return self.cluster.nats_urls

    @property
    def mqtt_urls(self) -> list[str]:
        """One ``mqtt://127.0.0.1:PORT`` per node."""
        return self.cluster.mqtt_urls

    @property
    def mqtt_ports(self) -> list[int]:
        """The MQTT ports, one per node."""
        return [node.spec.mqtt_port for node in self.cluster.nodes]

    @property
    def node_count(self) -> int:
        """How many nodes."""
        return len(self.cluster.nodes)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``."""
        self.cluster.kill(i)

    def start(self, i: int) -> None:
        """Start node ``i`` again (same ports and store) and wait until ready."""
        self.cluster.start_node(i)

    def stop(self) -> None:
        """Stop every node cleanly."""
        self.cluster.stop(timeout_s=timeout(10))

    def set_users(self, users: Sequence[BackboneUser]) -> None:
        """Replace the users (the admin user stays) and reload every node."""
        self.cluster.set_users([*users, _ADMIN] if self.auth else list(users))

    def credentials(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` as the admin (empty without auth)."""
        return {"user": ADMIN_USER, "password": ADMIN_PASSWORD} if self.auth else {}

    async def connect(self, i: int | None = None, **kwargs: Any) -> Any:
        """A nats-py client as the admin, to node ``i`` or to all nodes."""
        import nats

        servers = self.nats_urls if i is None else [self.nats_urls[i]]
        options: dict[str, Any] = {
            "connect_timeout": timeout(5),
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.2,
            **self.credentials(),
        }
        options.update(kwargs)
        return await nats.connect(servers=servers, **options)

    def log_tails(self, n: int = 30) -> str:
        """Every node's log tail."""
        return self.cluster.log_tails(n)

    async def add_consumer(
        self,
        durable: str = "ingest",
        *,
        stream: str = UP_STREAM,
        subjects: str = UP_SUBJECTS[0],
    ) -> None:
        """A durable pull consumer (R3 in a cluster); a message fetched but not
        acked (a fetch cut short) comes again after ``timeout(2)``. Create it before
        publishing: FUSEBOX_UP keeps only what some consumer wants."""
        nc = await self.connect()
        try:
            await nc.jetstream().add_consumer(
                stream,
                durable_name=durable,
                filter_subject=subjects,
                ack_wait=timeout(2),
            )
        finally:
            await nc.close()

    async def drain(
        self,
        durable: str = "ingest",
        *,
        stream: str = UP_STREAM,
        subjects: str = UP_SUBJECTS[0],
        timeout_s: float | None = None,
    ) -> list[tuple[str, bytes]]:
        """Fetch and ack everything ``durable`` delivers until it has nothing
        pending or unacked: ``(subject, payload)`` in stream order, a redelivered
        message once. Waits up to ``timeout_s`` (default ``timeout(60)``)."""
        got: dict[int, tuple[str, bytes]] = {}
        await eventually(
            lambda: self._drain_into(got, durable, stream, subjects),
            timeout_s=timeout(60) if timeout_s is None else timeout_s,
            message=f"consumer {durable} delivered everything",
        )
        return [got[seq] for seq in sorted(got)]

    async def _drain_into(
        self,
        got: dict[int, tuple[str, bytes]],
        durable: str,
        stream: str,
        subjects: str,
    ) -> bool:
        import nats.errors

        nc = await self.connect()
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe(subjects, durable=durable, stream=stream)
            while True:
                try:
                    batch = await sub.fetch(500, timeout=timeout(1))
                except nats.errors.TimeoutError:
                    break
                for msg in batch:
                    got[msg.metadata.sequence.stream] = (msg.subject, msg.data)
                    await msg.ack()
            info = await js.consumer_info(stream, durable)
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)
        finally:
            await nc.close()


def start_backbone(
    tmp_path: Path,
    nodes: int = 1,
    *,
    users: Sequence[BackboneUser] | None = None,
    create_streams: bool = True,
) -> Backbone:
    """Start a backbone of ``nodes`` nodes under ``tmp_path/backbone`` (see module)."""
    auth = users is not None
    all_users = [*(users or ()), _ADMIN] if auth else []
    cluster = BackboneCluster.create(
        tmp_path / "backbone",
        nodes=nodes,
        users=all_users,
        start_timeout_s=timeout(20),
    )
    cluster.start()
    backbone = Backbone(cluster, auth)
    if create_streams:
        try:
            run_coroutine_sync(
                lambda: ensure_streams(
                    cluster.nats_urls[0],
                    nodes,
                    timeout_s=timeout(30),
                    **backbone.credentials(),
                )
            )
        except BaseException:
            cluster.kill_all()
            raise
    return backbone


class BackboneFactory:
    """Starts backbones for one test and stops them all at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Backbone] = []

    def __call__(
        self,
        nodes: int = 1,
        *,
        users: Sequence[BackboneUser] | None = None,
        create_streams: bool = True,
    ) -> Backbone:
        """``start_backbone`` in a fresh sub-dir of the test's tmp dir."""
        where = self.tmp_path / f"bb{len(self.started)}"
        backbone = start_backbone(
            where, nodes, users=users, create_streams=create_streams
        )
        self.started.append(backbone)
        return backbone

    def close(self) -> None:
        """Stop every backbone, printing its log tails (pytest shows captured
        output only for a failed test)."""
        for backbone in self.started:
            print(f"backbone logs:\n{backbone.log_tails()}")
            backbone.stop()


@pytest.fixture
def backbone_factory(tmp_path: Path) -> Iterator[BackboneFactory]:
    """``backbone_factory(nodes=1, users=None)`` -> started :class:`Backbone`."""
    factory = BackboneFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def nats_backbone(backbone_factory: BackboneFactory) -> Backbone:
    """One started nats-server node (JetStream, MQTT, streams, no auth)."""
    return backbone_factory(1)


@pytest.fixture
def nats_cluster(backbone_factory: BackboneFactory) -> Backbone:
    """A started 3-node nats-server cluster (JetStream R3, MQTT, streams, no auth)."""
    return backbone_factory(3)


class MqttProbe:
    """A paho MQTT 3.1.1 client on a background thread, for backbone tests.

    ``MqttProbe.connect(url, client_id, user, password)`` -> probe whose ``.result``
    is the CONNACK reason (``"Success"``, ``"Not authorized"``, ...). Then
    ``publish(topic, payload, retain=False)`` (QoS 1; True when the PUBACK came),
    ``subscribe(topic_filter)`` (the granted QoS, 128 = refused), ``.messages``
    (``(topic, payload, retain)`` received), ``close()`` (DISCONNECT) and ``drop()``
    (close the socket without DISCONNECT: the broker publishes the last will).
    Blocking calls: wrap in ``asyncio.to_thread`` when a test's loop must keep going.
    """

    def __init__(self, client: Any) -> None:
        import threading

        self.client = client
        self.result: str | None = None
        self.granted: list[int] = []
        self.messages: list[tuple[str, bytes, bool]] = []
        self._connected = threading.Event()
        self._subscribed = threading.Event()

    @classmethod
    def connect(
        cls,
        url: str,
        client_id: str,
        user: str | None = None,
        password: str | None = None,
        *,
        clean_session: bool = True,
        will: tuple[str, bytes] | None = None,
        max_inflight: int = 20,
    ) -> MqttProbe:
        """Connect (waits for the CONNACK up to ``timeout(10)``)."""
        import urllib.parse

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=clean_session,
        )
        probe = cls(client)
        if user is not None:
            client.username_pw_set(user, password)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.max_inflight_messages_set(max_inflight)
        client.on_connect = probe._on_connect
        client.on_subscribe = probe._on_subscribe
        client.on_message = probe._on_message
        parts = urllib.parse.urlsplit(url)
        client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        client.loop_start()
        if not probe._connected.wait(timeout(10)):
            probe.close()
            raise AssertionError(f"no CONNACK from {url} within {timeout(10)} s")
        return probe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.result = str(reason)
        self._connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: Any, _p: Any) -> None:
        self.granted = [int(getattr(code, "value", code)) for code in codes]
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        self.messages.append((message.topic, bytes(message.payload), message.retain))

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, wait: bool = True
    ) -> Any:
        """QoS 1 publish; with ``wait``: True once PUBACKed (False after
        ``timeout(10)``), else paho's ``MQTTMessageInfo``."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if not wait:
            return info
        info.wait_for_publish(timeout(10))
        return info.is_published()

    def subscribe(self, topic_filter: str) -> int:
        """QoS 1 subscribe; the granted QoS (128: refused)."""
        self._subscribed.clear()
        self.client.subscribe(topic_filter, qos=1)
        if not self._subscribed.wait(timeout(10)):
            raise AssertionError(f"no SUBACK for {topic_filter!r}")
        return self.granted[0]

    def close(self) -> None:
        """DISCONNECT (no will) and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """Stop the network thread and close the socket without DISCONNECT."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
