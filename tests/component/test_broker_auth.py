"""cloud.broker_auth against a real Mosquitto with the dynamic security plugin.

Each test starts its own broker on a free port with anonymous access off, issues
accounts through the plugin and then proves with real MQTT clients what a gateway and
the cloud account may and may not do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.broker_auth import (
    BrokerAdminAuthError,
    BrokerAuthError,
    BrokerAuthSettings,
    BrokerUnreachableError,
    DynsecBrokerAuth,
    find_dynsec_plugin,
    issue_gateway_credentials,
    write_dynsec_config,
)
from cloud.scheduler import RESULT_FILTER, STATUS_FILTER
from fusebox.embedded import find_mosquitto, free_tcp_port, wait_for_port
from protocols import contract
from protocols.lease import down_schedule
from tests.harness.mosquitto import MosquittoServer, dynsec_server
from tests.harness.procs import REPO_ROOT
from tests.harness.timing import timeout

ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-for-tests-only"
NOT_AUTHORIZED = 0x87
SAMPLE_CONF = REPO_ROOT / "deploy" / "mosquitto" / "mosquitto-dynsec.conf"


def topic(gw: str, leaf: str) -> str:
    return f"fusebox/v1/gw/{gw}/{leaf}"


def client_id(username: str | None) -> str:
    """The id to connect with: a gateway account's bound id (any other is refused,
    tests/component/test_broker_client_ids.py), else a random one."""
    if username and username.startswith("gw-"):
        return "fusebox-edge-" + username[3:]
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    server = dynsec_server(tmp_path / "broker", ADMIN, ADMIN_PASSWORD).start()
    try:
        yield server
    finally:
        server.stop(timeout_s=timeout(5))


def admin_url(broker: MosquittoServer, password: str = ADMIN_PASSWORD) -> str:
    return f"mqtt://{ADMIN}:{password}@127.0.0.1:{broker.mqtt_port}"


@pytest.fixture
def auth(broker: MosquittoServer) -> DynsecBrokerAuth:
    return DynsecBrokerAuth(admin_url(broker), timeout_s=timeout(5))


@contextlib.asynccontextmanager
async def connect(
    broker: MosquittoServer,
    username: str | None,
    password: str | None,
    *,
    v5: bool = True,
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.mqtt_port,
        username=username,
        password=password,
        identifier=client_id(username),
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        timeout=timeout(5),
    ) as client:
        yield client


async def next_message(client: aiomqtt.Client, within_s: float) -> aiomqtt.Message:
    async def first() -> aiomqtt.Message:
        async for message in client.messages:
            return message
        raise AssertionError("the connection closed")

    return await asyncio.wait_for(first(), within_s)


async def received(client: aiomqtt.Client, quiet_s: float) -> list[tuple[str, bytes]]:
    """Every message that arrives until none has come for ``quiet_s``."""
    got: list[tuple[str, bytes]] = []
    with contextlib.suppress(TimeoutError):
        while True:
            m = await next_message(client, quiet_s)
            assert isinstance(m.payload, bytes)
            got.append((str(m.topic), m.payload))
    return got


def codes(granted: Any) -> list[int]:
    """SUBACK reason codes as ints (1 = granted QoS 1, >= 0x80 refused)."""
    return [int(getattr(c, "value", c)) for c in granted]


def puback_code(broker: MosquittoServer, user: str, password: str, to: str) -> int:
    """Publish QoS 1 with MQTT v5 (paho) and return the PUBACK reason code.

    Below 0x80 is success (0x10 "no matching subscribers" included).
    """
    done = threading.Event()
    result: dict[str, Any] = {}
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id(user), protocol=paho.MQTTv5
    )
    client.username_pw_set(user, password)

    def on_publish(
        _c: Any, _u: Any, _mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        result["rc"] = rc.value
        done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.mqtt_port)
    client.loop_start()
    try:
        client.publish(to, b"x", qos=1)
        assert done.wait(timeout(5)), "no PUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return int(result["rc"])


# --------------------------------------------------------------------------- allowed


async def test_gateway_and_cloud_exchange_on_their_topics(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw_a = await auth.issue_gateway_credentials("gw-a")
    gw_b = await auth.issue_gateway_credentials("gw.b_2")
    cloud = await auth.issue_cloud_credentials()
    assert gw_a[0] == "gw-gw-a" and cloud[0] == "fusebox-cloud"
    for _, password in (gw_a, gw_b, cloud):
        assert len(password) >= 24
    assert gw_a[1] != gw_b[1]

    async with (
        connect(broker, *cloud) as ingest,
        connect(broker, *cloud) as watcher,
        connect(broker, *gw_a) as a,
        connect(broker, *gw_b, v5=False) as b,
    ):
        # The cloud reads every gateway's up topics, plainly or as a $share group.
        shared = await ingest.subscribe("$share/ingest/fusebox/v1/gw/+/up/batch", qos=1)
        plain = await watcher.subscribe("fusebox/v1/gw/+/up/#", qos=1)
        assert codes(shared) == codes(plain) == [1], (shared, plain)
        assert codes(await a.subscribe(topic("gw-a", "down/#"), qos=1)) == [1]
        assert codes(await b.subscribe(topic("gw.b_2", "down/#"), qos=1)) == [1]

        await a.publish(topic("gw-a", "up/batch"), b"batch-a", qos=1)
        await b.publish(topic("gw.b_2", "up/status"), b"online", qos=1, retain=True)
        await b.publish(topic("gw.b_2", "up/batch"), b"batch-b", qos=1)
        shared_got = await received(ingest, timeout(1))
        assert sorted(shared_got) == [
            (topic("gw-a", "up/batch"), b"batch-a"),
            (topic("gw.b_2", "up/batch"), b"batch-b"),
        ]
        assert len(await received(watcher, timeout(1))) == 3

        # ... and writes every gateway's down topics; each gets only its own.
        await ingest.publish(topic("gw-a", "down/ack"), b"ack-a", qos=1)
        await ingest.publish(topic("gw.b_2", "down/ack"), b"ack-b", qos=1)
        assert await received(a, timeout(1)) == [(topic("gw-a", "down/ack"), b"ack-a")]
        assert await received(b, timeout(1)) == [
            (topic("gw.b_2", "down/ack"), b"ack-b")
        ]

    assert puback_code(broker, *gw_a, topic("gw-a", "up/batch")) < 0x80
    assert puback_code(broker, *cloud, topic("gw-a", "down/ack")) < 0x80


async def test_the_services_real_topics_are_allowed(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw = await auth.issue_gateway_credentials("gw-a")
    cloud = await auth.issue_cloud_credentials()
    filters = [
        *contract.ingest_filters(shared=True),
        *contract.ingest_filters(shared=False),
        STATUS_FILTER,
        RESULT_FILTER,
    ]
    async with connect(broker, *cloud) as services:
        for f in filters:
            assert codes(await services.subscribe(f, qos=1)) == [1], f
        await services.publish(down_schedule("gw-a"), b"lease", qos=1, retain=True)
    # The edge's uplink: a last will on its own up/status, its down/# subscription.
    will = aiomqtt.Will(contract.up_status("gw-a"), b"offline", qos=1, retain=True)
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.mqtt_port,
        username=gw[0],
        password=gw[1],
        identifier=client_id(gw[0]),
        will=will,
    ) as edge:
        assert codes(await edge.subscribe(contract.down_filter("gw-a"), qos=1)) == [1]
        message = await next_message(edge, timeout(5))
        assert (str(message.topic), message.payload) == (
            down_schedule("gw-a"),
            b"lease",
        )


def _mqtt_str(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def crash_with_will(
    broker: MosquittoServer, user: str, password: str, will_topic: str
) -> None:
    """Connect over a raw socket (MQTT 3.1.1, QoS 1 last will) and drop the TCP
    connection without DISCONNECT, so that the broker publishes the will."""
    body = (
        _mqtt_str(b"MQTT")
        + bytes([4, 0x80 | 0x40 | 0x08 | 0x04 | 0x02])  # user, pw, will QoS 1, clean
        + (60).to_bytes(2, "big")
        + _mqtt_str(client_id(user).encode())
        + _mqtt_str(will_topic.encode())
        + _mqtt_str(b"offline")
        + _mqtt_str(user.encode())
        + _mqtt_str(password.encode())
    )
    assert len(body) < 128
    with socket.create_connection(("127.0.0.1", broker.mqtt_port), timeout(5)) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = sock.recv(4)
        assert connack[:2] == b"\x20\x02" and connack[3] == 0, connack
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")


async def test_a_last_will_on_another_gateways_topic_is_not_delivered(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw = await auth.issue_gateway_credentials("gw-a")
    cloud = await auth.issue_cloud_credentials()
    async with connect(broker, *cloud) as ingest:
        await ingest.subscribe("fusebox/v1/gw/+/up/#", qos=1)
        await asyncio.to_thread(
            crash_with_will, broker, *gw, contract.up_status("gw-b")
        )
        await asyncio.to_thread(
            crash_with_will, broker, *gw, contract.up_status("gw-a")
        )
        assert await received(ingest, timeout(1)) == [
            (contract.up_status("gw-a"), b"offline")
        ]


async def test_concurrent_issues_all_work(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    ids = [f"gw-{i}" for i in range(12)]
    issued = await asyncio.gather(*(auth.issue_gateway_credentials(g) for g in ids))
    assert await auth.list_gateway_credentials() == sorted(ids)
    for g, (user, password) in zip(ids, issued, strict=True):
        assert puback_code(broker, user, password, topic(g, "up/batch")) < 0x80


# --------------------------------------------------------------------------- refused


async def test_gateway_publishing_as_another_gateway_is_refused_v5(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw_a = await auth.issue_gateway_credentials("gw-a")
    await auth.issue_gateway_credentials("gw-b")
    for leaf in ("up/batch", "up/status", "down/ack"):
        assert puback_code(broker, *gw_a, topic("gw-b", leaf)) == NOT_AUTHORIZED
    # Its own down topics (faking the cloud's acks) and anything else are refused too.
    for to in (topic("gw-a", "down/ack"), "fusebox/v1/other", "meters/x"):
        assert puback_code(broker, *gw_a, to) == NOT_AUTHORIZED
    # The cloud account cannot fake gateway data either.
    cloud = await auth.issue_cloud_credentials()
    assert puback_code(broker, *cloud, topic("gw-b", "up/batch")) == NOT_AUTHORIZED


async def test_gateway_publishing_as_another_gateway_is_dropped_v311(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw_a = await auth.issue_gateway_credentials("gw-a")
    gw_b = await auth.issue_gateway_credentials("gw-b")
    cloud = await auth.issue_cloud_credentials()
    async with (
        connect(broker, *cloud) as ingest,
        connect(broker, *gw_b) as b,
        connect(broker, *gw_a, v5=False) as a,
    ):
        await ingest.subscribe("fusebox/v1/gw/+/up/#", qos=1)
        await b.subscribe(topic("gw-b", "down/#"), qos=1)
        await a.publish(topic("gw-b", "up/batch"), b"forged", qos=1)
        await a.publish(topic("gw-b", "down/ack"), b"forged", qos=1)
        # Sent after the forgeries on the same connection: once it has arrived, the
        # forgeries would have too.
        await a.publish(topic("gw-a", "up/batch"), b"marker", qos=1)
        assert await received(ingest, timeout(1)) == [
            (topic("gw-a", "up/batch"), b"marker")
        ]
        assert await received(b, timeout(0.5)) == []


async def test_gateway_cannot_listen_to_another_gateway(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw_a = await auth.issue_gateway_credentials("gw-a")
    cloud = await auth.issue_cloud_credentials()
    async with connect(broker, *cloud) as ingest, connect(broker, *gw_a) as a:
        for f in (
            topic("gw-b", "down/#"),
            topic("gw-b", "down/ack"),
            topic("gw-b", "up/#"),
            "fusebox/v1/gw/+/down/#",
            "fusebox/#",
            "#",
        ):
            assert codes(await a.subscribe(f, qos=1)) == [NOT_AUTHORIZED], f
        await a.subscribe(topic("gw-a", "down/#"), qos=1)
        await ingest.publish(topic("gw-b", "down/ack"), b"for-b", qos=1)
        await ingest.publish(topic("gw-a", "down/ack"), b"marker", qos=1)
        assert await received(a, timeout(1)) == [(topic("gw-a", "down/ack"), b"marker")]

    async with connect(broker, *gw_a, v5=False) as a311:
        granted = await a311.subscribe(topic("gw-b", "down/#"), qos=1)
        assert codes(granted) == [0x80]  # v3.1.1 SUBACK "failure"


async def test_wrong_or_missing_credentials_are_refused_at_connect(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    user, password = await auth.issue_gateway_credentials("gw-a")
    for creds in ((user, password + "x"), ("gw-nobody", password), (None, None)):
        for v5 in (True, False):
            with pytest.raises(MqttConnectError):
                async with connect(broker, *creds, v5=v5):
                    pass
    async with connect(broker, user, password):
        pass


async def test_revoked_gateway_is_cut_off(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw_a = await auth.issue_gateway_credentials("gw-a")
    await auth.issue_gateway_credentials("gw-b")
    assert await auth.list_gateway_credentials() == ["gw-a", "gw-b"]

    async with connect(broker, *gw_a) as a:
        await a.subscribe(topic("gw-a", "down/#"), qos=1)
        assert await auth.revoke_gateway_credentials("gw-a") is True
        # The live connection is dropped at once.
        with pytest.raises(aiomqtt.MqttError):
            await next_message(a, timeout(5))
    with pytest.raises(MqttConnectError):
        async with connect(broker, *gw_a):
            pass
    assert await auth.list_gateway_credentials() == ["gw-b"]
    assert await auth.revoke_gateway_credentials("gw-a") is False


async def test_reissuing_rotates_the_password(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    old = await auth.issue_gateway_credentials("gw-a")
    new = await auth.issue_gateway_credentials("gw-a")
    assert old[0] == new[0] and old[1] != new[1]
    with pytest.raises(MqttConnectError):
        async with connect(broker, *old):
            pass
    assert puback_code(broker, *new, topic("gw-a", "up/batch")) < 0x80
    assert puback_code(broker, *new, topic("gw-b", "up/batch")) == NOT_AUTHORIZED
    assert await auth.list_gateway_credentials() == ["gw-a"]


async def test_accounts_survive_a_broker_restart(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw_a = await auth.issue_gateway_credentials("gw-a")
    broker.restart()
    assert puback_code(broker, *gw_a, topic("gw-a", "up/batch")) < 0x80
    assert puback_code(broker, *gw_a, topic("gw-b", "up/batch")) == NOT_AUTHORIZED


async def test_passwords_are_never_logged(
    broker: MosquittoServer, auth: DynsecBrokerAuth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, password = await auth.issue_gateway_credentials("gw-a")
    _, cloud_password = await auth.issue_cloud_credentials()
    await auth.revoke_gateway_credentials("gw-a")
    assert "gw-a" in caplog.text
    assert password not in caplog.text and cloud_password not in caplog.text
    assert ADMIN_PASSWORD not in caplog.text
    assert password not in broker.log_tail(1000)


# --------------------------------------------------------------------------- errors


async def test_settings_and_module_functions(
    broker: MosquittoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FUSEBOX_BROKER_ADMIN_URL", raising=False)
    with pytest.raises(BrokerAuthError, match="FUSEBOX_BROKER_ADMIN_URL is not set"):
        await issue_gateway_credentials("gw-a")
    monkeypatch.setenv("FUSEBOX_BROKER_ADMIN_URL", admin_url(broker))
    user, password = await issue_gateway_credentials("gw-a")
    assert puback_code(broker, user, password, topic("gw-a", "up/batch")) < 0x80
    settings = BrokerAuthSettings(admin_url=admin_url(broker), cloud_username="ingest")
    assert (await DynsecBrokerAuth.from_settings(settings).issue_cloud_credentials())[
        0
    ] == "ingest"
    await DynsecBrokerAuth.from_settings(settings).check()


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "gw a", "-gw", "gw\n", "x" * 65])
async def test_bad_gateway_ids_are_refused_before_the_broker(
    bad: str, auth: DynsecBrokerAuth
) -> None:
    with pytest.raises(ValueError, match="bad gateway id"):
        await auth.issue_gateway_credentials(bad)


async def test_unreachable_broker_says_so() -> None:
    port = free_tcp_port()
    auth = DynsecBrokerAuth(f"mqtt://admin:pw@127.0.0.1:{port}", timeout_s=timeout(2))
    with pytest.raises(BrokerUnreachableError, match="cannot reach") as info:
        await auth.issue_gateway_credentials("gw-a")
    assert "pw@" not in str(info.value)  # the admin password is masked


async def test_wrong_admin_password_says_so(broker: MosquittoServer) -> None:
    auth = DynsecBrokerAuth(admin_url(broker, "wrong"), timeout_s=timeout(2))
    with pytest.raises(BrokerAdminAuthError, match="refused the admin login") as info:
        await auth.list_gateway_credentials()
    assert "wrong" not in str(info.value)


async def test_account_without_admin_role_says_so(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    user, password = await auth.issue_gateway_credentials("gw-a")
    not_admin = DynsecBrokerAuth(
        f"mqtt://{user}:{password}@127.0.0.1:{broker.mqtt_port}", timeout_s=timeout(2)
    )
    with pytest.raises(BrokerAdminAuthError, match="admin"):
        await not_admin.issue_gateway_credentials("gw-b")


async def test_broker_without_the_plugin_says_so(mosquitto: MosquittoServer) -> None:
    auth = DynsecBrokerAuth(
        f"mqtt://admin:pw@127.0.0.1:{mosquitto.mqtt_port}", timeout_s=timeout(1)
    )
    with pytest.raises(BrokerAdminAuthError, match="plugin loaded"):
        await auth.issue_gateway_credentials("gw-a")


def test_admin_url_without_password_is_refused() -> None:
    with pytest.raises(BrokerAuthError, match="no user and password"):
        DynsecBrokerAuth("mqtt://127.0.0.1:1883")
    with pytest.raises(BrokerAuthError, match="scheme"):
        DynsecBrokerAuth("http://admin:pw@127.0.0.1:1883")


# --------------------------------------------------------------------------- sample


async def test_broker_is_checked_for_a_confining_default_acl(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    await auth.check()
    loosen = {
        "command": "setDefaultACLAccess",
        "acls": [{"acltype": "publishClientSend", "allow": True}],
    }
    await auth._run([loosen])
    with pytest.raises(BrokerAuthError, match="publishClientSend"):
        await auth.check()


def test_the_sample_config_works_with_tls(tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto-dynsec.conf, with its paths and ports moved into a
    tmp dir: the admin and a gateway work over TLS, anonymous clients do not."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    plugin, binary = find_dynsec_plugin(), find_mosquitto()
    if plugin is None or binary is None:
        pytest.skip("mosquitto or its dynamic security plugin is not installed")
    (tmp_path / "data").mkdir()
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(certs / "server.key"), "-out", str(certs / "server.crt")),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    tls_port, plain_port = free_tcp_port(), free_tcp_port()
    conf = SAMPLE_CONF.read_text()
    for old, new in (
        ("/mosquitto/data/", f"{tmp_path}/data/"),
        ("/mosquitto/certs/", f"{certs}/"),
        ("plugin /usr/lib/mosquitto_dynamic_security.so", f"plugin {plugin}"),
        ("listener 8883", f"listener {tls_port} 127.0.0.1"),
        ("listener 1883 127.0.0.1", f"listener {plain_port} 127.0.0.1"),
        ("log_dest stdout", f"log_dest file {tmp_path}/mosquitto.log"),
    ):
        assert old in conf, old
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        conf += "user root\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    write_dynsec_config(
        tmp_path / "data" / "dynamic-security.json", ADMIN, ADMIN_PASSWORD
    )
    process = subprocess.Popen(
        [binary, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for port in (tls_port, plain_port):
            assert wait_for_port("127.0.0.1", port, timeout_s=timeout(10)), (
                tmp_path / "mosquitto.log"
            ).read_text()
        asyncio.run(_use_sample_broker(tls_port, certs / "server.crt"))
    finally:
        process.terminate()
        process.wait(timeout(10))


async def _use_sample_broker(tls_port: int, ca: Path) -> None:
    url = f"mqtts://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{tls_port}"
    without_ca = DynsecBrokerAuth(url, timeout_s=timeout(2))
    with pytest.raises(BrokerUnreachableError, match="FUSEBOX_BROKER_CA_FILE"):
        await without_ca.list_gateway_credentials()
    auth = DynsecBrokerAuth(url, timeout_s=timeout(5), ca_file=ca)
    user, password = await auth.issue_gateway_credentials("gw-a")
    tls = aiomqtt.TLSParameters(ca_certs=str(ca))
    async with aiomqtt.Client(
        "127.0.0.1",
        tls_port,
        username=user,
        password=password,
        identifier=client_id(user),
        tls_params=tls,
    ) as gw:
        await gw.publish(topic("gw-a", "up/batch"), b"x", qos=1)
    with pytest.raises(MqttConnectError):
        async with aiomqtt.Client("127.0.0.1", tls_port, tls_params=tls):
            pass


async def test_ingest_presence_is_the_clouds_to_write_and_every_gateways_to_read(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw = await auth.issue_gateway_credentials("gw-a")
    cloud = await auth.issue_cloud_credentials()
    presence = contract.ingest_presence("ingest-1")
    # a gateway may not forge a worker's coming or going (it would make every
    # edge resend at once)
    assert puback_code(broker, *gw, presence) == NOT_AUTHORIZED
    async with connect(broker, *gw) as edge:
        granted = await edge.subscribe(contract.INGEST_PRESENCE_FILTER, qos=1)
        assert codes(granted) == [1]
        # the ingest worker's will clears its presence when it dies
        will = aiomqtt.Will(presence, b"", qos=1, retain=True)
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.mqtt_port,
            username=cloud[0],
            password=cloud[1],
            will=will,
        ) as worker:
            await worker.publish(presence, b"online", qos=1, retain=True)
        message = await next_message(edge, timeout(5))
        assert (str(message.topic), message.payload) == (presence, b"online")
