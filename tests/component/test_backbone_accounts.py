"""Per-gateway accounts on a real nats-server, tried by crossing them over MQTT.

The backbone's equivalent of test_broker_auth.py: gateway A may publish only under its
own ``up`` and receive only its own ``down``; a wrong password is refused; a user
added at runtime works after a config reload, without restarting any node; retained
status and the last will work under these permissions.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from cloud.backbone.streams import UP_STREAM
from tests.harness.nats import Backbone, MqttProbe, gateway, service, start_backbone
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.timeout(timeout(120))

UP = "fusebox/v1/gw/{}/up/{}"
DOWN = "fusebox/v1/gw/{}/down/{}"


async def make_consumer(backbone: Backbone, durable: str = "probe") -> None:
    """A durable pull consumer on everything gateways send."""
    await backbone.add_consumer(durable)


async def drain(backbone: Backbone, durable: str = "probe") -> list[tuple[str, bytes]]:
    """Everything the durable consumer delivers until it has nothing left."""
    return await backbone.drain(durable, timeout_s=timeout(10))


@pytest.fixture
def secured(tmp_path: Path) -> object:
    """One node with gateways a and b and the ingest service."""
    a, _ = gateway("a")
    b, _ = gateway("b")
    ingest, _ = service("ingest")
    backbone = start_backbone(tmp_path, 1, users=[a, b, ingest])
    try:
        yield backbone
    finally:
        print(backbone.log_tails())
        backbone.stop()


def probe(backbone: Backbone, gw: str, node: int = 0, **kwargs: object) -> MqttProbe:
    """MQTT client of gateway ``gw`` (its bound client id and right password)."""
    return MqttProbe.connect(
        backbone.mqtt_urls[node],
        f"fusebox-edge-{gw}",
        f"gw-{gw}",
        f"pw-{gw}",
        **kwargs,  # type: ignore[arg-type]
    )


async def test_gateway_cannot_publish_to_another_gateways_up(secured: Backbone) -> None:
    await make_consumer(secured)
    a = await asyncio.to_thread(probe, secured, "a")
    try:
        # nats-server 2.9 acks a refused QoS 1 publish too: the proof is the stream
        assert await asyncio.to_thread(a.publish, UP.format("b", "batch"), b"forged")
        assert await asyncio.to_thread(a.publish, UP.format("a", "batch"), b"own")
    finally:
        a.close()
    assert await drain(secured) == [("fusebox.v1.gw.a.up.batch", b"own")]


async def test_gateway_receives_only_its_own_down(secured: Backbone) -> None:
    a = await asyncio.to_thread(probe, secured, "a")
    b = await asyncio.to_thread(probe, secured, "b")
    try:
        assert await asyncio.to_thread(a.subscribe, DOWN.format("b", "#")) == 128
        assert await asyncio.to_thread(a.subscribe, "fusebox/v1/gw/+/down/#") == 128
        assert await asyncio.to_thread(a.subscribe, "#") == 128
        assert await asyncio.to_thread(a.subscribe, "$MQTT/sub/#") == 128
        assert await asyncio.to_thread(a.subscribe, DOWN.format("a", "#")) == 1
        assert await asyncio.to_thread(b.subscribe, DOWN.format("b", "#")) == 1
        # the cloud side writes both gateways' down subjects over NATS
        nc = await secured.connect()
        try:
            await nc.publish("fusebox.v1.gw.b.down.cmd", b"for-b")
            await nc.publish("fusebox.v1.gw.a.down.cmd", b"for-a")
            await nc.flush()
        finally:
            await nc.close()
        await eventually(
            lambda: a.messages and b.messages,
            timeout_s=timeout(10),
            message="each gateway got its own command",
        )
        await asyncio.sleep(timeout(0.5))  # room for a wrong delivery to show up
        assert a.messages == [(DOWN.format("a", "cmd"), b"for-a", False)]
        assert b.messages == [(DOWN.format("b", "cmd"), b"for-b", False)]
    finally:
        a.close()
        b.close()


async def test_wrong_password_and_unknown_user_are_refused(secured: Backbone) -> None:
    url = secured.mqtt_urls[0]
    wrong = await asyncio.to_thread(
        MqttProbe.connect, url, "fusebox-edge-a", "gw-a", "pw-b"
    )
    nobody = await asyncio.to_thread(MqttProbe.connect, url, "x", "gw-zz", "pw-zz")
    anonymous = await asyncio.to_thread(MqttProbe.connect, url, "anon")
    for refused in (wrong, nobody, anonymous):
        refused.close()
        assert refused.result == "Not authorized"


async def test_gateway_user_cannot_use_the_nats_protocol(secured: Backbone) -> None:
    import nats
    import nats.errors

    with pytest.raises(nats.errors.Error):
        await nats.connect(
            secured.nats_urls[0],
            user="gw-a",
            password="pw-a",
            allow_reconnect=False,
            connect_timeout=timeout(5),
        )


async def test_service_reads_up_and_writes_down(secured: Backbone) -> None:
    import nats

    await make_consumer(secured, "ingest")
    a = await asyncio.to_thread(probe, secured, "a")
    try:
        assert await asyncio.to_thread(a.subscribe, DOWN.format("a", "#")) == 1
        assert await asyncio.to_thread(a.publish, UP.format("a", "batch"), b"r1")
        nc = await nats.connect(
            secured.nats_urls[0], user="ingest", password="pw-ingest"
        )
        try:
            sub = await nc.jetstream().pull_subscribe(
                "fusebox.v1.gw.*.up.>", durable="ingest", stream=UP_STREAM
            )
            (msg,) = await sub.fetch(1, timeout=timeout(5))
            assert (msg.subject, msg.data) == ("fusebox.v1.gw.a.up.batch", b"r1")
            await msg.ack()
            await nc.publish("fusebox.v1.gw.a.down.ack", b"ok")
            await nc.flush()
        finally:
            await nc.close()
        await eventually(
            lambda: a.messages, timeout_s=timeout(10), message="a got ingest's ack"
        )
        assert a.messages == [(DOWN.format("a", "ack"), b"ok", False)]
    finally:
        a.close()


async def test_retained_status_and_last_will(secured: Backbone) -> None:
    await make_consumer(secured)
    a = await asyncio.to_thread(
        probe, secured, "a", will=(UP.format("a", "status"), b"offline")
    )
    assert await asyncio.to_thread(
        a.publish, UP.format("a", "status"), b"online", retain=True
    )
    a.drop()  # no DISCONNECT: the server publishes the will
    got: list[tuple[str, bytes]] = []

    async def status_and_will() -> bool:
        got.extend(await drain(secured))
        return len(got) >= 2

    await eventually(
        status_and_will, timeout_s=timeout(10), message="status and will stored"
    )
    assert [payload for _, payload in got] == [b"online", b"offline"]
    nc = await secured.connect()
    try:
        # nats-server keeps retained messages as JSON in its stream $MQTT_rmsgs
        info = await nc.jsm().stream_info("$MQTT_rmsgs")
        assert info.state.messages == 1  # the will replaced the retained status
        last = await nc.jsm().get_last_msg("$MQTT_rmsgs", "$MQTT.rmsgs")
        retained = json.loads(last.data or b"{}")
        assert retained["topic"] == UP.format("a", "status")
        assert base64.b64decode(retained["msg"]) == b"offline"
    finally:
        await nc.close()


async def test_user_added_at_runtime_works_after_reload_on_every_node(
    tmp_path: Path,
) -> None:
    a, _ = gateway("a")
    backbone = start_backbone(tmp_path, 3, users=[a])
    try:
        pids = [node.pid for node in backbone.cluster.nodes]
        before = await asyncio.to_thread(probe, backbone, "c")
        before.close()
        assert before.result == "Not authorized"
        c, _ = gateway("c")
        backbone.set_users([a, c])

        async def c_connects_everywhere() -> bool:
            results = []
            for node in range(backbone.node_count):
                client = await asyncio.to_thread(probe, backbone, "c", node)
                client.close()
                results.append(client.result)
            return results == ["Success"] * backbone.node_count

        await eventually(
            c_connects_everywhere,
            timeout_s=timeout(10),
            message="the new gateway user is accepted by every node",
        )
        assert [node.pid for node in backbone.cluster.nodes] == pids  # no restart
    finally:
        print(backbone.log_tails())
        backbone.stop()
