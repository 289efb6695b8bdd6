"""Client-id takeover on the cloud broker (issue 10), against a real Mosquitto with
the dynamic security plugin.

MQTT lets a connection take over the session of an id already connected: without
a rule, gateway A's account could connect as ``fusebox-edge-B`` (or as an ingest
worker) and kick B off, forever with auto-reconnect. Each gateway account is bound
to ``fusebox-edge-<its id>`` (``cloud.broker_auth``); these tests make the attack
with real clients and show the victim stays connected, old accounts are migrated,
and an edge refused for its client id says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError

from cloud.broker_auth import (
    CLOUD_CLIENT_PREFIXES,
    BrokerAuthError,
    DynsecBrokerAuth,
    find_dynsec_plugin,
    gateway_acls,
    gateway_client_id,
    gateway_role,
    gateway_username,
    new_password,
    write_dynsec_config,
)
from cloud.ingest import IngestWorker
from cloud.scheduler import Scheduler
from edge.outbox import Outbox
from edge.uplink import Uplink, UplinkConfig
from protocols import contract
from protocols.backoff import Backoff
from protocols.urls import parse_mqtt_url
from tests.harness.mosquitto import MosquittoServer, dynsec_server
from tests.harness.timing import eventually, timeout

ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-for-tests-only"
# CONNACK "not authorised": 5 in MQTT 3.1.1, 0x87 in v5; paho reports both as the
# v5 reason code
NOT_AUTHORISED = 0x87


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    server = dynsec_server(tmp_path / "broker", ADMIN, ADMIN_PASSWORD).start()
    try:
        yield server
    finally:
        server.stop(timeout_s=timeout(5))


@pytest.fixture
def auth(broker: MosquittoServer) -> DynsecBrokerAuth:
    return DynsecBrokerAuth(
        f"mqtt://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{broker.mqtt_port}",
        timeout_s=timeout(5),
    )


@contextlib.asynccontextmanager
async def connect(
    broker: MosquittoServer,
    creds: tuple[str, str],
    client_id: str,
    *,
    v5: bool = False,
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.mqtt_port,
        username=creds[0],
        password=creds[1],
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        timeout=timeout(5),
    ) as client:
        yield client


async def refused_code(
    broker: MosquittoServer, creds: tuple[str, str], client_id: str, *, v5: bool
) -> int:
    """The CONNACK code of a connect that must be refused."""
    with pytest.raises(MqttConnectError) as info:
        async with connect(broker, creds, client_id, v5=v5):
            pass
    rc = info.value.rc
    return int(getattr(rc, "value", rc))  # type: ignore[arg-type]


async def messages(client: aiomqtt.Client, quiet_s: float) -> list[tuple[str, bytes]]:
    """What arrives until nothing has for ``quiet_s``; raises if the link dropped."""
    got: list[tuple[str, bytes]] = []

    async def one() -> None:
        async for m in client.messages:
            assert isinstance(m.payload, bytes)
            got.append((str(m.topic), m.payload))
            return
        raise AssertionError("the connection closed")

    with contextlib.suppress(TimeoutError):
        while True:
            await asyncio.wait_for(one(), quiet_s)
    return got


# --------------------------------------------------------------------------- attack


async def test_a_gateway_cannot_take_over_another_gateways_or_a_cloud_id(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw_a = await auth.issue_gateway_credentials("gw-a")
    gw_b = await auth.issue_gateway_credentials("gw-b")
    cloud = await auth.issue_cloud_credentials()
    ingest_id = "fusebox-ingest-0badcafe"
    victims = [
        gateway_client_id("gw-b"),
        ingest_id,
        "fusebox-scheduler-12345678",
        "fusebox-broker-admin-0123456789ab",
    ]
    assert {v.rsplit("-", 1)[0] + "-" for v in victims[1:]} == set(
        CLOUD_CLIENT_PREFIXES
    )
    async with (
        connect(broker, gw_b, gateway_client_id("gw-b")) as b,
        connect(broker, cloud, ingest_id, v5=True) as ingest,
    ):
        await b.subscribe(contract.down_filter("gw-b"), qos=1)
        await ingest.subscribe(f"{contract.TOPIC_ROOT}/+/up/#", qos=1)
        # A tries every victim's id, as a reconnecting client would, both versions
        for _attempt in range(5):
            for victim in victims:
                assert (
                    await refused_code(broker, gw_a, victim, v5=False) == NOT_AUTHORISED
                ), victim
                assert (
                    await refused_code(broker, gw_a, victim, v5=True) == NOT_AUTHORISED
                ), victim
        # B and the ingest worker were never disconnected: both still receive
        await ingest.publish(contract.down_ack("gw-b"), b"for-b", qos=1)
        assert await messages(b, timeout(1)) == [(contract.down_ack("gw-b"), b"for-b")]
        await b.publish(contract.up_batch("gw-b"), b"from-b", qos=1)
        # A with its own id works (and does not disturb anyone either)
        async with connect(broker, gw_a, gateway_client_id("gw-a")) as a:
            await a.publish(contract.up_batch("gw-a"), b"from-a", qos=1)
        assert await messages(ingest, timeout(1)) == [
            (contract.up_batch("gw-b"), b"from-b"),
            (contract.up_batch("gw-a"), b"from-a"),
        ]
    log = broker.log_tail(400)
    assert log.count("not authorised") >= 5 * len(victims) * 2
    # no connection of B or the worker was taken over ("already connected")
    assert "already connected" not in log


async def test_a_gateway_may_not_use_any_other_id_not_even_a_random_one(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    gw_a = await auth.issue_gateway_credentials("gw-a")
    for other in ("gw-a", "fusebox-edge-gw-a-2", "fusebox-edge-", "x", "auto-1234"):
        code = await refused_code(broker, gw_a, other, v5=False)
        assert code == NOT_AUTHORISED, other
    async with connect(broker, gw_a, "fusebox-edge-gw-a"):
        pass


async def test_rotation_keeps_the_binding(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    await auth.issue_gateway_credentials("gw-a")
    new = await auth.issue_gateway_credentials("gw-a")
    reply = (await auth._run([{"command": "getClient", "username": "gw-gw-a"}]))[0]
    assert reply["data"]["client"]["clientid"] == "fusebox-edge-gw-a"
    code = await refused_code(broker, new, "fusebox-edge-gw-b", v5=True)
    assert code == NOT_AUTHORISED
    async with connect(broker, new, "fusebox-edge-gw-a"):
        pass
    assert await auth.bind_gateway_client_ids() == []  # nothing to migrate


# --------------------------------------------------------------------------- migration


async def _old_style_account(auth: DynsecBrokerAuth, gw: str) -> tuple[str, str]:
    """An account as issued before client ids were bound (no ``clientid``)."""
    password = new_password()
    replies = await auth._run(
        [
            {
                "command": "createRole",
                "rolename": gateway_role(gw),
                "acls": gateway_acls(gw),
            },
            {
                "command": "createClient",
                "username": gateway_username(gw),
                "password": password,
                "roles": [{"rolename": gateway_role(gw), "priority": 0}],
            },
        ]
    )
    assert not any(r.get("error") for r in replies), replies
    return gateway_username(gw), password


async def test_check_binds_accounts_issued_before_the_binding(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    old_a = await _old_style_account(auth, "gw-a")
    old_c = await _old_style_account(auth, "gw-c")
    new_b = await auth.issue_gateway_credentials("gw-b")
    # unmigrated, A can still take B's id over: the hole this closes
    async with connect(broker, new_b, "fusebox-edge-gw-b") as b:
        await b.subscribe(contract.down_filter("gw-b"), qos=1)
        async with connect(broker, old_a, "fusebox-edge-gw-b"):
            with pytest.raises(aiomqtt.MqttError):
                await messages(b, timeout(2))  # B was kicked off
    # a gateway connected under its own id is disconnected once by the migration
    async with connect(broker, old_c, "fusebox-edge-gw-c") as c:
        await c.subscribe(contract.down_filter("gw-c"), qos=1)
        assert await auth.check() == ["gw-a", "gw-c"]
        with pytest.raises(aiomqtt.MqttError):
            await messages(c, timeout(2))
    async with connect(broker, old_c, "fusebox-edge-gw-c"):
        pass  # and comes back under its bound id, same password
    assert (
        await refused_code(broker, old_a, "fusebox-edge-gw-b", v5=False)
        == NOT_AUTHORISED
    )
    assert await auth.check() == []  # idempotent
    assert await auth.list_gateway_credentials() == ["gw-a", "gw-b", "gw-c"]


async def test_migration_of_many_accounts_goes_in_chunks(
    broker: MosquittoServer, auth: DynsecBrokerAuth
) -> None:
    ids = [f"gw-{i:04d}" for i in range(1100)]
    for start in range(0, len(ids), 100):
        replies = await auth._run(
            [
                {
                    "command": "createClient",
                    "username": gateway_username(gw),
                    "password": "pw",
                }
                for gw in ids[start : start + 100]
            ]
        )
        assert not any(r.get("error") for r in replies)
    assert await auth.bind_gateway_client_ids() == ids
    accounts = await auth._gateway_accounts()
    assert all(accounts[gw] == gateway_client_id(gw) for gw in ids)


async def test_check_refuses_a_broker_open_to_anonymous_clients(
    tmp_path: Path,
) -> None:
    plugin = find_dynsec_plugin()
    if plugin is None:
        pytest.skip("mosquitto_dynamic_security.so is not installed")
    config = write_dynsec_config(tmp_path / "dynsec.json", ADMIN, ADMIN_PASSWORD)
    server = MosquittoServer(
        tmp_path / "open",
        extra_conf=[
            "allow_anonymous true",
            f"plugin {plugin}",
            f"plugin_opt_config_file {config}",
        ],
    ).start()
    try:
        open_auth = DynsecBrokerAuth(
            f"mqtt://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{server.mqtt_port}",
            timeout_s=timeout(5),
        )
        with pytest.raises(BrokerAuthError, match="accepts anonymous clients"):
            await open_auth.check()
    finally:
        server.stop(timeout_s=timeout(5))


async def test_check_passes_on_a_closed_broker(auth: DynsecBrokerAuth) -> None:
    assert await auth.check() == []


# --------------------------------------------------------------------------- services


@pytest.mark.parametrize("bad", ["fusebox-edge-gw-a", "fusebox-edge-"])
def test_cloud_services_refuse_a_gateways_client_id(bad: str) -> None:
    target = parse_mqtt_url("mqtt://127.0.0.1:1")
    with pytest.raises(ValueError, match="belong to gateways"):
        IngestWorker(dsn="postgresql://x", mqtt=target, shared=False, client_id=bad)
    with pytest.raises(ValueError, match="belong to gateways"):
        Scheduler(dsn="postgresql://x", mqtt=target, client_id=bad)


async def test_an_edge_refused_for_its_client_id_says_what_to_do(
    tmp_path: Path,
    broker: MosquittoServer,
    auth: DynsecBrokerAuth,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user, password = await auth.issue_gateway_credentials("gw-a")
    target = parse_mqtt_url(f"mqtt://{user}:{password}@127.0.0.1:{broker.mqtt_port}")
    outbox = Outbox.open(tmp_path / "o.db", cap_bytes=0)
    await outbox.start()
    caplog.set_level(logging.WARNING, logger="fusebox")
    try:
        config = UplinkConfig(
            gateway_id="gw-a",
            target=target,
            client_id="gw-a-custom",
            reconnect=Backoff(0.05, 0.1),
        )
        uplink = Uplink(outbox, config, rng=random.Random(1))
        task = asyncio.create_task(uplink.run())
        await eventually(
            lambda: uplink.metrics.reconnects >= 5,
            timeout_s=timeout(10),
            message="the edge kept retrying",
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await outbox.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]  # not a flood
    text = errors[0].getMessage()
    assert "refused the login" in text and "'gw-a-custom'" in text
    assert "remove cloud.client_id" in text and "broker_credentials" in text
    assert password not in caplog.text
