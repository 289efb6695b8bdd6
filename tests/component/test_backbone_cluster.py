"""The 3-node backbone on real nats-server processes: it forms, stores every gateway
message R3, and keeps accepting and serving while a node is SIGKILLed; the node
catches up when it comes back. Also the full-policy of ``FUSEBOX_UP`` on one node.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud.backbone.streams import (
    MQTT_QOS1_STREAM,
    MQTT_QOS1_UP_FILTER,
    UP_STREAM,
    ensure_streams,
    stream_plans,
)
from tests.harness.nats import Backbone, MqttProbe, start_backbone
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.timeout(timeout(180))

UP_FILTER = "fusebox.v1.gw.*.up.>"
# PUBACKed messages that may still be on their way when a node is killed: the
# publisher's window plus what the dying leader had proposed but not committed
IN_FLIGHT = 100


def stream_state(
    backbone: Backbone, node: int, stream: str = UP_STREAM
) -> dict[str, Any]:
    """The state of ``stream``'s replica on ``node`` (its monitoring ``/jsz``)."""
    monitor = backbone.cluster.nodes[node].spec.monitor_url
    url = f"{monitor}/jsz?accounts=true&streams=true"
    with urllib.request.urlopen(url, timeout=timeout(2)) as response:
        jsz = json.load(response)
    for account in jsz.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if detail["name"] == stream:
                return dict(detail["state"])
    raise LookupError(f"node {node} holds no replica of {stream}")


async def add_consumer(backbone: Backbone, durable: str = "ingest") -> None:
    """A durable consumer on everything gateways send."""
    await backbone.add_consumer(durable)


async def drain(
    backbone: Backbone,
    durable: str = "ingest",
    stream: str = UP_STREAM,
    subjects: str = UP_FILTER,
) -> list[bytes]:
    """The payloads ``durable`` delivers until it has nothing left."""
    got = await backbone.drain(durable, stream=stream, subjects=subjects)
    return [payload for _, payload in got]


async def stream_leader(backbone: Backbone) -> int:
    """Index of the node leading ``FUSEBOX_UP``."""
    nc = await backbone.connect()
    try:
        info = await nc.jsm().stream_info(UP_STREAM)
    finally:
        await nc.close()
    assert info.cluster is not None and info.cluster.leader is not None
    return [n.spec.name for n in backbone.cluster.nodes].index(info.cluster.leader)


async def test_cluster_forms_and_streams_are_r3(nats_cluster: Backbone) -> None:
    nc = await nats_cluster.connect()
    try:
        for name in (UP_STREAM, "FUSEBOX_DEAD"):
            info = await nc.jsm().stream_info(name)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and info.cluster.leader
            assert [peer.current for peer in info.cluster.replicas or []] == [
                True,
                True,
            ]
    finally:
        await nc.close()
    for node in range(3):
        assert stream_state(nats_cluster, node)["messages"] == 0


async def test_mqtt_qos1_publish_lands_in_r3_stream(nats_cluster: Backbone) -> None:
    await add_consumer(nats_cluster)
    gw = await asyncio.to_thread(
        MqttProbe.connect, nats_cluster.mqtt_urls[1], "fusebox-edge-g1"
    )
    try:
        assert await asyncio.to_thread(
            gw.publish, "fusebox/v1/gw/g1/up/batch", b"batch-1"
        )
    finally:
        gw.close()
    # every node's replica holds it, not just the one the gateway talked to
    await eventually(
        lambda: all(stream_state(nats_cluster, n)["messages"] == 1 for n in range(3)),
        timeout_s=timeout(10),
        message="the batch is stored on all three replicas",
    )
    assert await drain(nats_cluster) == [b"batch-1"]


@dataclass
class Publisher:
    """A gateway publishing numbered QoS 1 batches from a thread until stopped;
    ``acked`` holds the numbers whose PUBACK came."""

    probe: MqttProbe
    acked: list[int] = field(default_factory=list)
    unacked: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    window: int = 20

    def run(self) -> None:
        """Publish windows of ``window`` messages, wait for their PUBACKs."""
        n = 0
        while not self.stop.is_set():
            infos = []
            for _ in range(self.window):
                infos.append(
                    (
                        n,
                        self.probe.publish(
                            "fusebox/v1/gw/g1/up/batch", str(n).encode(), wait=False
                        ),
                    )
                )
                n += 1
            for number, info in infos:
                info.wait_for_publish(timeout(10))
                (self.acked if info.is_published() else self.unacked).append(number)

    def rate(self, since: int, seconds: float) -> float:
        """PUBACKs per second since ``since`` acked messages."""
        return (len(self.acked) - since) / seconds


@dataclass
class KillRun:
    """What happened in :func:`kill_under_load` (counts of PUBACKed messages)."""

    acked: list[int]
    unacked: list[int]
    stored: list[int]
    killed_at: int
    accepting_again_at: int
    restarted_at: int

    @property
    def missing(self) -> list[int]:
        """PUBACKed numbers not in the stream."""
        return sorted(set(self.acked) - set(self.stored))

    @property
    def duplicates(self) -> int:
        """Messages stored more than once."""
        return len(self.stored) - len(set(self.stored))

    @property
    def duplicated(self) -> list[int]:
        """The numbers stored more than once."""
        counts = collections.Counter(self.stored)
        return sorted(n for n, count in counts.items() if count > 1)

    def around_the_kill(self, numbers: list[int]) -> bool:
        """True if all ``numbers`` were published between shortly before the kill
        (:data:`IN_FLIGHT` messages: on their way to, or proposed by, the dying
        node) and one window after the stream stored again."""
        return all(
            self.killed_at - IN_FLIGHT <= n < self.accepting_again_at + Publisher.window
            for n in numbers
        )

    def summary(self) -> str:
        """One line for the test output."""
        return (
            f"acked {len(self.acked)} (+{len(self.unacked)} without PUBACK), stored "
            f"{len(self.stored)}, missing {len(self.missing)} [{_ranges(self.missing)}]"
            f", duplicates {self.duplicates} {self.duplicated[:20]}; killed at "
            f"{self.killed_at}, accepting again at {self.accepting_again_at}, "
            f"restarted at {self.restarted_at}"
        )


async def kill_under_load(backbone: Backbone, victim: int, entry: int) -> KillRun:
    """A gateway on node ``entry`` publishes numbered batches; SIGKILL node
    ``victim`` under that load, wait until FUSEBOX_UP stores new messages on the
    survivors, restart the victim, publish on, wait until all three replicas agree,
    then read the stream."""
    await add_consumer(backbone)
    survivor = next(n for n in range(3) if n != victim)
    probe = await asyncio.to_thread(
        MqttProbe.connect, backbone.mqtt_urls[entry], "fusebox-edge-g1"
    )
    publisher = Publisher(probe)
    thread = threading.Thread(target=publisher.run, daemon=True)
    thread.start()
    try:
        await _acked_beyond(publisher, 200, "publishing under way")
        seq_at_kill = stream_state(backbone, survivor)["last_seq"]
        backbone.kill(victim)
        killed_at = len(publisher.acked)
        await eventually(
            lambda: stream_state(backbone, survivor)["last_seq"] > seq_at_kill + 100,
            timeout_s=timeout(30),
            message="FUSEBOX_UP stores new messages with one node down",
        )
        accepting_again_at = len(publisher.acked)
        await _acked_beyond(publisher, 200, "PUBACKs go on with one node down")
        await asyncio.to_thread(backbone.start, victim)
        restarted_at = len(publisher.acked)
        await _acked_beyond(publisher, 200, "publishing goes on after the restart")
    finally:
        publisher.stop.set()
        await asyncio.to_thread(thread.join, timeout(20))
        probe.close()
    # the restarted node catches up: its replica ends where the others end
    await eventually(
        lambda: len({stream_state(backbone, n)["last_seq"] for n in range(3)}) == 1,
        timeout_s=timeout(30),
        message="all three replicas at the same last sequence",
    )
    stored = await drain(backbone)
    return KillRun(
        acked=publisher.acked,
        unacked=publisher.unacked,
        stored=[int(payload) for payload in stored],
        killed_at=killed_at,
        accepting_again_at=accepting_again_at,
        restarted_at=restarted_at,
    )


async def _acked_beyond(publisher: Publisher, more: int, message: str) -> None:
    target = len(publisher.acked) + more
    await eventually(
        lambda: len(publisher.acked) >= target, timeout_s=timeout(30), message=message
    )


async def test_kill_a_follower_under_load_loses_nothing(nats_cluster: Backbone) -> None:
    """A node that neither leads FUSEBOX_UP nor holds the gateway's connection dies:
    every PUBACKed batch is in the stream, and the node catches up. If the node led
    nats-server's own $MQTT_msgs stream, the PUBACKs of the batches in flight time
    out, the gateway's client reconnects and resends them, and those (at most one
    window, published around the kill) are stored twice: MQTT QoS 1 is
    at-least-once, and ingest drops a batch it has already stored."""
    leader = await stream_leader(nats_cluster)
    victim = (leader + 1) % 3
    entry = (leader + 2) % 3
    run = await kill_under_load(nats_cluster, victim, entry)
    print(run.summary())
    assert run.missing == []
    assert len(run.duplicated) <= Publisher.window, run.summary()
    assert run.around_the_kill(run.duplicated), run.summary()


async def test_kill_the_stream_leader_under_load(nats_cluster: Backbone) -> None:
    """FUSEBOX_UP's leader dies: a new leader takes over and the stream keeps
    accepting and serving. nats-server 2.9 PUBACKs an MQTT QoS 1 message once its
    own $MQTT_msgs stream has it, so batches published while FUSEBOX_UP had no
    leader (a Raft election, seconds) may be PUBACKed yet missing from it: any such
    gap lies between the kill and the moment the stream stored again, and the edge
    resends those batches because the cloud never acked them. A durable consumer on
    $MQTT_msgs (MQTT_QOS1_UP_FILTER) misses none of them."""
    warm = await asyncio.to_thread(  # nats-server makes its MQTT streams now
        MqttProbe.connect, nats_cluster.mqtt_urls[0], "warm-up"
    )
    warm.close()
    await nats_cluster.add_consumer(
        "qos1", stream=MQTT_QOS1_STREAM, subjects=MQTT_QOS1_UP_FILTER
    )
    leader = await stream_leader(nats_cluster)
    entry = (leader + 1) % 3
    run = await kill_under_load(nats_cluster, leader, entry)
    qos1 = [
        int(payload)
        for payload in await drain(
            nats_cluster, "qos1", MQTT_QOS1_STREAM, MQTT_QOS1_UP_FILTER
        )
    ]
    qos1_missing = sorted(set(run.acked) - set(qos1))
    print(
        f"{run.summary()}; $MQTT_msgs consumer: {len(qos1)} messages, "
        f"{len(set(qos1))} distinct, missing {len(qos1_missing)}"
    )
    assert len(run.duplicated) <= Publisher.window, run.summary()
    assert run.around_the_kill(run.duplicated + run.missing), run.summary()
    assert qos1_missing == []


def _ranges(numbers: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"`` (for failure messages)."""
    parts: list[str] = []
    for number in numbers:
        if parts and int(parts[-1].split("-")[-1]) == number - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{number}"
        else:
            parts.append(str(number))
    return ", ".join(parts[:30])


async def test_full_stream_refuses_new_and_keeps_what_it_holds(tmp_path: Path) -> None:
    """The full-policy on one node with a tiny ``max_bytes``: once full, new
    batches are refused (the gateway still gets its PUBACK from nats-server's MQTT
    layer: only the cloud's ack, which never comes, tells it to resend) and none
    already stored is dropped; once the consumer has acked, batches are taken
    again."""
    backbone = start_backbone(tmp_path, 1, create_streams=False)
    try:
        up, dead = stream_plans(1)
        tiny = dataclasses.replace(up, max_bytes=4 * 1024)
        await ensure_streams(
            backbone.nats_urls[0], 1, timeout_s=timeout(30), plans=(tiny, dead)
        )
        await add_consumer(backbone)
        gw = await asyncio.to_thread(
            MqttProbe.connect, backbone.mqtt_urls[0], "fusebox-edge-g1"
        )
        try:
            for n in range(10):
                payload = f"{n:04d}".encode() * 250  # 1000 bytes
                assert await asyncio.to_thread(
                    gw.publish, "fusebox/v1/gw/g1/up/batch", payload
                )
            first = [int(p[:4]) for p in await drain(backbone)]
            assert 0 < len(first) < 10
            assert first == list(range(len(first)))  # the oldest kept, new refused
            assert await asyncio.to_thread(
                gw.publish, "fusebox/v1/gw/g1/up/batch", b"resent" * 100
            )
            assert await drain(backbone) == [b"resent" * 100]
        finally:
            gw.close()
    finally:
        print(backbone.log_tails())
        backbone.stop()


async def test_mqtt_session_moves_between_nodes(nats_cluster: Backbone) -> None:
    """A gateway's persistent session (its subscriptions) lives in the cluster: it
    reconnects to another node and receives its commands without subscribing again,
    and a retained status published through one node is kept cluster-wide."""
    client_id = "fusebox-edge-g1"
    first = await asyncio.to_thread(
        MqttProbe.connect, nats_cluster.mqtt_urls[0], client_id, clean_session=False
    )
    try:
        assert await asyncio.to_thread(first.subscribe, "fusebox/v1/gw/g1/down/#") == 1
        assert await asyncio.to_thread(
            first.publish, "fusebox/v1/gw/g1/up/status", b"online", retain=True
        )
    finally:
        first.close()
    second = await asyncio.to_thread(
        MqttProbe.connect, nats_cluster.mqtt_urls[2], client_id, clean_session=False
    )
    try:
        nc = await nats_cluster.connect(1)
        try:

            async def command_arrives() -> bool:
                await nc.publish("fusebox.v1.gw.g1.down.cmd", b"cmd")
                await nc.flush()
                await asyncio.sleep(timeout(0.2))
                return bool(second.messages)

            await eventually(
                command_arrives,
                timeout_s=timeout(10),
                message="the session's subscription works on another node",
            )
            info = await nc.jsm().stream_info("$MQTT_rmsgs")
            assert info.config.num_replicas == 3
            assert info.state.messages == 1
        finally:
            await nc.close()
    finally:
        second.close()
    assert second.messages[0] == ("fusebox/v1/gw/g1/down/cmd", b"cmd", False)
